"""Connection strings: parse once, keep the secret out of every message and repr.

libpq can echo a password (a bad percent escape in it yields ``invalid percent-encoded
token: "<password...>"``), ``pool.conninfo`` holds it in clear, and so does the
``pgconn`` attached to psycopg errors. So the URL is parsed here up front; the result
carries a display form with the password as ``***``, the ``host:port/dbname`` that error
messages name, and the secret strings that ``redact`` removes from any text we emit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from sayiir.errors import BackendError

__all__ = ["Target", "parse_target", "redact"]

_URL = re.compile(r"^(?P<scheme>postgres(?:ql)?)://(?P<netloc>[^/?#]*)(?P<rest>.*)$", re.DOTALL)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")
_QUOTED = re.compile(r'"[^"]*"')
_URL_USERINFO = re.compile(r"(postgres(?:ql)?://[^:/?#@\s]*:)[^@\s]*@")
_KV_ANY_PASSWORD = re.compile(r"(password\s*=\s*)\S+")


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed connection string.

    ``conninfo`` is what libpq receives and must never be printed; ``display`` and
    ``where`` are safe to show.
    """

    conninfo: str = field(repr=False)
    display: str
    where: str
    params: dict[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with each secret, URL password and ``password=`` value replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    text = _URL_USERINFO.sub(r"\1***@", text)
    return _KV_ANY_PASSWORD.sub(r"\1***", text)


def _secrets_of(url: str) -> tuple[list[str], str]:
    """Candidate secret substrings of ``url`` and its display form, found by text alone.

    This runs before libpq sees the string, so even a URL libpq rejects can be scrubbed
    from libpq's error message.
    """
    secrets: list[str] = []
    display = url
    match = _URL.match(url)
    if match:
        netloc = match["netloc"]
        if "@" in netloc:
            userinfo = netloc.rsplit("@", 1)[0]
            if ":" in userinfo:
                password = userinfo.split(":", 1)[1]
                # libpq splits at the first '@'; the user may have meant the last one.
                secrets += [password, password.split("@", 1)[0]]
                user = userinfo.split(":", 1)[0]
                display = f"{match['scheme']}://{user}:***@{netloc.rsplit('@', 1)[1]}"
                display += match["rest"]
        for m in _QUERY_PASSWORD.finditer(url):
            secrets.append(m.group(2))
        display = _QUERY_PASSWORD.sub(r"\1***", display)
    else:
        for m in _KV_PASSWORD.finditer(url):
            secrets.append(m.group(2).strip("'"))
            secrets.append(m.group(2))
        display = _KV_PASSWORD.sub(r"\1***", url)
    secrets += [unquote(s) for s in secrets]
    return [s for s in secrets if s], display


def parse_target(url: str) -> Target:
    """Validate ``url`` with libpq's own parser; raise ``BackendError`` without the secret.

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
    match = _URL.match(url)
    if match and match["netloc"].count("@") > 1:
        raise BackendError(
            f"invalid PostgreSQL URL {display!r}: more than one '@' before the host; "
            "percent-encode '@' in the user name or password as %40"
        )
    problem: str | None = None
    try:
        raw = conninfo_to_dict(url)
    except ProgrammingError as exc:
        problem = str(exc).strip()
    if problem is not None:
        # Raised outside the except block: the libpq error (which may quote the password)
        # must not survive as __context__.
        if secrets or "password" in url:
            problem = _QUOTED.sub('"***"', problem)
        problem = redact(problem, tuple(secrets))
        # A key=value string libpq cannot parse may split a password anywhere: not shown.
        shown = repr(display) if match else "(not shown)"
        raise BackendError(f"invalid PostgreSQL connection string {shown}: {problem}")
    params = {k: str(v) for k, v in raw.items() if v is not None and k != "password"}
    if raw.get("password"):
        secrets.append(str(raw["password"]))
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or "(default database)"
    return Target(
        conninfo=url,
        display=display,
        where=f"{host}:{port}/{dbname}",
        params=params,
        secrets=tuple(dict.fromkeys(secrets)),
    )
