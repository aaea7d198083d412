"""psycopg errors -> ``BackendError``, at the boundary, with the password redacted.

Two questions are answered here: is an error worth retrying (the database went away, or
is restarting), and what do we tell the user. The translated error never chains the
psycopg one (its ``pgconn`` holds the conninfo, and libpq text can quote the password):
callers raise the returned ``BackendError`` outside their ``except`` block.
"""

from __future__ import annotations

import re

import psycopg
import psycopg_pool

from sayiir.backends.postgres._conninfo import Target
from sayiir.errors import BackendError

__all__ = ["describe", "is_transient", "translate"]

# SQLSTATEs after which the same statement may succeed: connection exceptions (class 08),
# operator intervention (admin/crash shutdown, cannot connect now), too many connections,
# serialization failure and deadlock (the statement was rolled back as a whole), and a
# read-only transaction (we reached a standby during a failover).
_TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01", "25006"})

# Connection errors without a SQLSTATE that retrying will not fix.
_PERMANENT = re.compile(
    r"password authentication failed|authentication failed|does not exist|pg_hba\.conf|"
    r"SSL|ssl|certificate|invalid|Name or service not known|nodename nor servname|"
    r"No address associated|permission denied|GSSAPI|not supported|no password supplied",
)


def is_transient(exc: BaseException) -> bool:
    """True for errors of a database that is unreachable, restarting or overloaded."""
    if isinstance(exc, psycopg_pool.PoolClosed):
        return False
    if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests)):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state:
        return state.startswith("08") or state in _TRANSIENT_STATES
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return not _PERMANENT.search(str(exc))
    return False


def describe(exc: BaseException, target: Target) -> str:
    """The cause, one line per libpq line, without the secret."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, psycopg_pool.PoolTimeout):
        text = f"no connection available from the pool ({text})"
    state = getattr(exc, "sqlstate", None)
    if state:
        text = f"{text} [SQLSTATE {state}]"
    text = re.sub(r"\s*\n\s*", "; ", text)
    if "server does not support SSL" in text:
        text += " (the URL asks for TLS with sslmode; enable ssl on the server or change sslmode)"
    return target.redact(text)


def translate(exc: BaseException, target: Target, doing: str) -> BackendError:
    """A ``BackendError`` naming the server and the cause (never the password)."""
    cause = describe(exc, target)
    if isinstance(exc, psycopg.OperationalError) and not exc.sqlstate:
        return BackendError(f"cannot connect to PostgreSQL at {target.where}: {cause}")
    return BackendError(f"PostgreSQL error at {target.where} during {doing}: {cause}")
