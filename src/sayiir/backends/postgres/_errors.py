"""psycopg errors -> ``BackendError``, at the boundary, with the password redacted.

Two questions are answered here: is an error worth retrying (the database went away, or
is restarting), and what do we tell the user. The translated error never chains the
psycopg one (its ``pgconn`` holds the conninfo, and libpq text can quote the password):
callers raise the returned ``BackendError`` outside their ``except`` block.

Retrying is decided by cause, never by words that may appear in any message (a TLS
connection cut by a server restart reads "SSL error: unexpected eof while reading" or
"SSL SYSCALL error: EOF detected", and must be retried like any other lost connection):

1. the SQLSTATE, when the server sent one;
2. the state of the connection: one that was established and is now broken or closed
   (``mark_lost``, called by the executors) was cut under us, so a new one may work;
3. otherwise (a connection attempt that failed: libpq gives no SQLSTATE then, and psycopg
   attaches the attempt's ``pgconn``), what the attempt learnt: the server asked for a
   password nobody supplied, or the server answered with a refusal that waiting cannot
   change, or the client's own TLS/host settings cannot work. Anything else (refused,
   timed out, reset, closed during the TLS handshake, "starting up", "too many clients")
   is a server that is away or busy, and is retried within ``retry_timeout_secs``.
"""

from __future__ import annotations

import re

import psycopg
import psycopg_pool

from sayiir.backends.postgres._conninfo import Target
from sayiir.errors import BackendError

__all__ = ["describe", "is_transient", "mark_lost", "translate"]

# SQLSTATEs after which the same statement may succeed: class 08 (connection exception),
# class 53 (insufficient resources: too many connections, out of memory, disk full),
# operator intervention (admin shutdown, crash shutdown, cannot connect now), a
# serialization failure or deadlock (the statement was rolled back as a whole), and a
# read-only transaction (we reached a standby during a failover).
_TRANSIENT_CLASSES = frozenset({"08", "53"})
_TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01", "25006"})
# Never retried, even on a connection that is gone: the role may not log in (class 28,
# invalid authorization) or the database does not exist.
_PERMANENT_CLASSES = frozenset({"28"})
_PERMANENT_STATES = frozenset({"3D000"})

_LOST = "_sayiir_connection_lost"

# A failed connection attempt carries libpq's text only. The server's answer follows
# "FATAL:"; these answers mean "not now" (57P03 cannot_connect_now, 53300
# too_many_connections, a shutdown or crash under way, an authentication timeout of an
# overloaded server); every other refusal (authentication failed, no pg_hba.conf entry,
# unknown role or database, no CONNECT privilege, bad startup option) is final.
_SERVER_REFUSAL = re.compile(r"\bFATAL:\s+(?P<answer>.*)", re.DOTALL)
_SERVER_BUSY = re.compile(
    r"^(the database system is |sorry, too many clients|too many connections|"
    r"remaining connection slots are reserved|terminating connection|"
    r"canceling authentication due to timeout|out of memory|could not fork)",
)
# Client-side settings no retry can fix, in a failed attempt that got no server answer.
_CLIENT_SETTING = re.compile(
    r"^connection is bad:|"  # libpq refused the options before connecting
    r"server does not support SSL|certificate verify failed|does not match host name|"
    r"root certificate file|certificate file|private key file|could not load|"
    r"GSSAPI encryption required|gssencmode value|channel binding|"
    r"authentication method requirement|no password supplied|"
    r"alert (?:unknown ca|bad certificate|certificate required|handshake failure|"
    r"protocol version|access denied)|"
    r"Name or service not known|nodename nor servname|No address associated",
    re.MULTILINE,
)


def mark_lost(exc: BaseException, closed: bool) -> None:
    """Record that ``exc`` left its (established) connection closed or broken.

    The executors call this as the error passes, since psycopg's error does not say
    which connection raised it; ``is_transient`` reads it.
    """
    if closed and isinstance(exc, psycopg.Error):
        setattr(exc, _LOST, True)


def _state_is_transient(state: str, lost: bool) -> bool:
    if state[:2] in _PERMANENT_CLASSES or state in _PERMANENT_STATES:
        return False
    if state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES:
        return True
    # Any other error that ended our session (idle timeouts, a FATAL of the backend): a
    # new connection may work. One that left the connection usable is the statement's.
    return lost


def _answer_is_transient(exc: psycopg.Error) -> bool:
    """A connection that failed without a SQLSTATE: what did the attempt learn?"""
    pgconn = exc.pgconn  # set by psycopg on a failed connection attempt
    if pgconn is not None and getattr(pgconn, "needs_password", False):
        return False
    text = str(exc)
    refusal = _SERVER_REFUSAL.search(text)
    if refusal is not None:
        return _SERVER_BUSY.match(refusal["answer"]) is not None
    return _CLIENT_SETTING.search(text) is None


def is_transient(exc: BaseException) -> bool:
    """True for errors of a database that is unreachable, restarting or overloaded."""
    if isinstance(exc, psycopg_pool.PoolClosed):
        return False
    if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests)):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    lost = bool(getattr(exc, _LOST, False))
    if exc.sqlstate:
        return _state_is_transient(exc.sqlstate, lost)
    if lost or isinstance(exc, psycopg.errors.ConnectionTimeout):
        return True
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return _answer_is_transient(exc)
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
