"""Connection strings: parse once, keep the secret out of every message and repr.

libpq can echo a password (a bad percent escape in it yields ``invalid percent-encoded
token: "<password...>"``; a string it does not take for a URL, such as
``POSTGRESQL://app:pw@db``, comes back whole in ``missing "=" after ...``),
``pool.conninfo`` holds it in clear, and so does the ``pgconn`` attached to psycopg
errors. So the string is checked here up front, before libpq sees it; the result carries
a display form with every secret as ``***``, the ``host:port/dbname`` that error messages
name, and the secret strings that ``redact`` removes from any text we emit.

A secret is the password of any ``scheme:[//]user:secret@`` form, whatever the scheme
(``postgresql+psycopg://``, a misspelt one, a single slash), and the value of any
parameter whose name contains ``password`` (``password``, ``sslpassword``), in a query
string or in a ``key=value`` string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from sayiir.errors import BackendError

__all__ = ["Target", "parse_target", "redact"]

# Anything shaped like a URL: a scheme, a colon, then whatever libpq would make of it.
_URL_LIKE = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*):(?P<slashes>/*)(?P<netloc>[^/?#]*)(?P<rest>.*)$",
    re.DOTALL,
)
_LIBPQ_SCHEMES = ("postgresql", "postgres")
# scheme:[//]user:SECRET@ in any text; the secret runs to the last '@' of the authority
# (an unencoded '@' in a password), never across white space.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*:/*[^\s:/?#@'\"]*:)"
    r"(?P<secret>[^\s@]*(?:@[^\s@/?#]*(?=@))*)@"
)
# *password*=SECRET, in a query string (up to '&') or a key=value string (quoted or not).
_PASSWORD_PARAM = re.compile(
    r"(?P<head>\b\w*password\w*\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'?|[^\s&#]*)",
    re.IGNORECASE,
)
_QUOTED = re.compile(r'"[^"]*"')
_LEARNED_MAX = 8

# Option values libpq checks only when it connects; checked here so that a malformed
# string fails at construction (the names are libpq's; the values are not secret).
_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": (
        "any", "read-write", "read-only", "primary", "standby", "prefer-standby",
    ),
    "load_balance_hosts": ("disable", "random"),
}  # fmt: skip
_INTEGERS = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed connection string.

    ``conninfo`` is what libpq receives and must never be printed; ``display`` and
    ``where`` are safe to show. ``learn`` adds a secret found later (a password returned
    by the password function) to those ``redact`` removes.
    """

    conninfo: str = field(repr=False)
    display: str
    where: str
    params: dict[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    has_password: bool = False  # the string itself carries a password
    # One slot holding a tuple, swapped whole: pool threads learn while others redact.
    learned: list[tuple[str, ...]] = field(default_factory=lambda: [()], repr=False,
                                           compare=False)  # fmt: skip

    def learn(self, secret: str) -> None:
        known = self.learned[0]
        if secret and secret not in known:
            self.learned[0] = (*known, secret)[-_LEARNED_MAX:]

    def redact(self, text: str) -> str:
        return redact(text, (*self.secrets, *self.learned[0]))


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with each secret, URL password and ``*password*=`` value replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    return _PASSWORD_PARAM.sub(r"\g<head>***", text)


def _secrets_of(url: str) -> tuple[list[str], str]:
    """Candidate secret substrings of ``url`` and its display form, found by text alone.

    This runs before libpq sees the string, so even a string libpq rejects can be
    scrubbed from libpq's error message.
    """
    found: list[str] = []
    for m in _URL_PASSWORD.finditer(url):
        # libpq splits at the first '@'; the user may have meant the last one.
        found += [m["secret"], m["secret"].split("@", 1)[0]]
    for m in _PASSWORD_PARAM.finditer(url):
        found += [m["secret"], m["secret"].strip("'")]
    found += [unquote(s) for s in found]
    return [s for s in found if s], redact(url)


def _scheme_problem(scheme: str, slashes: str) -> str | None:
    """Why ``scheme:slashes`` does not start a libpq URL, or ``None`` when it does."""
    if scheme in _LIBPQ_SCHEMES and slashes == "//":
        return None
    lowered = scheme.lower()
    if lowered.startswith("postgres") and "+" in lowered:
        return (
            f"{scheme!r} is SQLAlchemy's form; sayiir takes a libpq URL: drop the driver "
            f"suffix ({lowered.split('+', 1)[0]}://...)"
        )
    if lowered in _LIBPQ_SCHEMES and slashes == "//":
        return f"write the scheme in lower case ({lowered}://...)"
    if lowered in _LIBPQ_SCHEMES:
        return f"the scheme must be followed by two slashes ({lowered}://...)"
    return f"unknown scheme {scheme!r}: a PostgreSQL URL starts with postgresql:// or postgres://"


def _option_problem(params: dict[str, str]) -> str | None:
    for name, allowed in _CHOICES.items():
        value = params.get(name)
        if value is not None and value not in allowed:
            return f"{name} must be one of {', '.join(allowed)}, not {value!r}"
    for name in _INTEGERS:
        value = params.get(name)
        if value is not None and not re.fullmatch(r"\s*-?\d+\s*", value):
            return f"{name} must be an integer, not {value!r}"
    for port in params.get("port", "").split(","):
        if port.strip() and not (port.strip().isdigit() and 0 < int(port) < 65536):
            return f"port must be a number from 1 to 65535, not {port!r}"
    return None


def parse_target(url: str) -> Target:
    """Validate ``url`` (libpq's own parser, then option values); raise ``BackendError``
    without the secret. Never connects.

    >>> parse_target("postgresql://app:s3cret@db.example.com:5432/sayiir").display
    'postgresql://app:***@db.example.com:5432/sayiir'
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PostgresBackend needs psycopg 3 and psycopg_pool: pip install 'sayiir[postgres]'"
        ) from exc

    secrets, display = _secrets_of(url)
    match = _URL_LIKE.match(url)
    if match:
        problem = _scheme_problem(match["scheme"], match["slashes"])
        if problem is not None:
            raise BackendError(f"invalid PostgreSQL URL {display!r}: {problem}")
        if match["netloc"].count("@") > 1:
            raise BackendError(
                f"invalid PostgreSQL URL {display!r}: more than one '@' before the host; "
                "percent-encode '@' in the user name or password as %40"
            )
    failure: str | None = None
    try:
        raw = conninfo_to_dict(url)
    except ProgrammingError as exc:
        failure = str(exc).strip()
    if failure is not None:
        # Raised outside the except block: the libpq error (which may quote the password)
        # must not survive as __context__.
        if secrets or "password" in url.lower():
            failure = _QUOTED.sub('"***"', failure)
        failure = redact(failure, tuple(secrets))
        # A key=value string libpq cannot parse may split a password anywhere: not shown.
        shown = repr(display) if match else "(not shown)"
        raise BackendError(f"invalid PostgreSQL connection string {shown}: {failure}")
    params = {k: str(v) for k, v in raw.items() if v is not None and "password" not in k}
    secrets += [str(v) for k, v in raw.items() if v and "password" in k]
    problem = _option_problem(params)
    if problem is not None:
        raise BackendError(f"invalid PostgreSQL connection string {display!r}: {problem}")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "(default database)"
    return Target(
        conninfo=url,
        display=display,
        where=f"{host}:{port}/{dbname}",
        params=params,
        secrets=tuple(dict.fromkeys(secrets)),
        has_password=bool(raw.get("password")),
    )
