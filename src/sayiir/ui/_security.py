"""Who may act, and proof that an action comes from the console's own page.

Secure by default: without an operator token (``SAYIIR_UI_TOKEN``) or an ``auth`` hook the
console is read-only, every action refused. With a token, an operator signs in once by
typing it; the browser then holds an HttpOnly, SameSite=Strict cookie with an HMAC of the
token (never the token), or a script sends ``Authorization: Bearer <token>``. With a hook
(``auth(request) -> actor name | None``), the host application's own login decides.

Every action (POST) also needs a CSRF token: a signed double-submit value, kept in a cookie
and repeated in the form or the ``X-CSRF-Token`` header of htmx requests; a cross-site page
can neither read the cookie nor forge the signature (it is keyed by a per-process secret).

>>> guard = Guard(token="s3cret", auth=None, secret=b"k" * 32)
>>> guard.check_csrf(guard.new_csrf(), guard.new_csrf())
False
>>> value = guard.new_csrf()
>>> guard.check_csrf(value, value)
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "CSRF_HEADER", "OPERATOR_COOKIE", "AuthHook", "Guard"]

OPERATOR_COOKIE = "sayiir_operator"
CSRF_COOKIE = "sayiir_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

# The host application's auth: the operator's name (recorded in the audit), or None when
# the request may only read. May be async.
AuthHook = Callable[[Any], "str | Awaitable[str | None] | None"]


@dataclass(frozen=True)
class Guard:
    """Decides who the operator of a request is, and checks CSRF tokens."""

    token: str | None
    auth: AuthHook | None
    secret: bytes

    @property
    def can_sign_in(self) -> bool:
        """Whether the console has a token-based sign-in page (no hook configured)."""
        return self.token is not None and self.auth is None

    @property
    def writable(self) -> bool:
        """Whether any request could ever act (a token or a hook is configured)."""
        return self.token is not None or self.auth is not None

    def cookie_value(self) -> str:
        """What the operator cookie holds: an HMAC of the token, never the token itself."""
        assert self.token is not None
        return hmac.new(self.secret, self.token.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, candidate: str) -> bool:
        if self.token is None:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def bearer(self, request: Any) -> bool:
        """The request carries the token in its ``Authorization`` header: a script, not a
        browser (browsers never add that header by themselves, so no CSRF check is needed)."""
        header = request.headers.get("authorization", "")
        return header.lower().startswith("bearer ") and self.token_matches(header[7:].strip())

    async def operator(self, request: Any) -> str | None:
        """The name of the operator behind ``request``, or ``None`` (read-only)."""
        if self.auth is not None:
            actor = self.auth(request)
            if isinstance(actor, Awaitable):
                actor = await actor
            return actor if isinstance(actor, str) and actor else None
        if self.token is None:
            return None
        if self.bearer(request):
            return "token"
        cookie = request.cookies.get(OPERATOR_COOKIE, "")
        if cookie and hmac.compare_digest(cookie, self.cookie_value()):
            return "token"
        return None

    def new_csrf(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def valid_csrf(self, value: str) -> bool:
        nonce, _, signature = value.partition(".")
        return bool(nonce) and hmac.compare_digest(signature, self._sign(nonce))

    def check_csrf(self, cookie: str, submitted: str) -> bool:
        """The cookie and the submitted value are the same, correctly signed token."""
        return (
            bool(cookie) and hmac.compare_digest(cookie, submitted) and self.valid_csrf(submitted)
        )

    def _sign(self, nonce: str) -> str:
        return hmac.new(self.secret, b"csrf:" + nonce.encode(), hashlib.sha256).hexdigest()[:32]
