"""Who may act: the operator token, the host's auth hook, and CSRF tokens."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from sayiir.ui._security import OPERATOR_COOKIE, Guard


def _request(headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None) -> Any:
    return SimpleNamespace(headers=headers or {}, cookies=cookies or {})


def _operator(guard: Guard, request: Any) -> str | None:
    return asyncio.run(guard.operator(request))


def test_no_token_and_no_hook_is_read_only() -> None:
    guard = Guard(token=None, auth=None, secret=b"k" * 32)
    assert not guard.writable
    assert _operator(guard, _request({"authorization": "Bearer anything"})) is None


def test_the_token_works_as_a_bearer_header_or_as_the_signed_cookie() -> None:
    guard = Guard(token="operator-token-1", auth=None, secret=b"k" * 32)
    assert _operator(guard, _request({"authorization": "Bearer operator-token-1"})) == "token"
    assert _operator(guard, _request({"authorization": "Bearer operator-token-2"})) is None
    cookie = guard.cookie_value()
    assert "operator-token-1" not in cookie  # the cookie never holds the token
    assert _operator(guard, _request(cookies={OPERATOR_COOKIE: cookie})) == "token"
    assert _operator(guard, _request(cookies={OPERATOR_COOKIE: cookie[:-1] + "0"})) is None
    other = Guard(token="operator-token-1", auth=None, secret=b"j" * 32)
    assert _operator(other, _request(cookies={OPERATOR_COOKIE: cookie})) is None


def test_a_hook_names_the_operator_sync_or_async() -> None:
    def sync_hook(request: Any) -> str | None:
        headers: dict[str, str] = request.headers
        return headers.get("x-user")

    async def async_hook(request: Any) -> str | None:
        return sync_hook(request)

    for hook in (sync_hook, async_hook):
        guard = Guard(token=None, auth=hook, secret=b"k" * 32)
        assert guard.writable and not guard.can_sign_in
        assert _operator(guard, _request({"x-user": "alice"})) == "alice"
        assert _operator(guard, _request()) is None


def test_csrf_tokens_must_match_the_cookie_and_carry_our_signature() -> None:
    guard = Guard(token=None, auth=None, secret=b"k" * 32)
    value = guard.new_csrf()
    assert guard.check_csrf(value, value)
    assert not guard.check_csrf(value, guard.new_csrf())
    assert not guard.check_csrf("", "")
    forged = "nonce.0123456789abcdef0123456789abcdef"
    assert not guard.check_csrf(forged, forged)
    other = Guard(token=None, auth=None, secret=b"j" * 32)
    assert not other.check_csrf(value, value)
