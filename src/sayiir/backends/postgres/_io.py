"""The two executors of ``_ops`` generators, and the retry policy around them.

``execute`` runs an operation on a ``psycopg.Connection``, ``aexecute`` on a
``psycopg.AsyncConnection``; they differ only by ``await``. ``Retry`` decides, after a
failure, whether to wait and try again (the database went away) or to give up with a
``BackendError`` that names the server and never the password.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.pq import ExecStatus, Format, TransactionStatus
from psycopg.rows import tuple_row

from sayiir.backends.postgres._conninfo import Target
from sayiir.backends.postgres._errors import describe, is_transient, mark_lost, translate
from sayiir.backends.postgres._ops import Composed, Op, Q, Request, Rows
from sayiir.backends.postgres._sql import Compiled
from sayiir.errors import BackendError

__all__ = [
    "DRIVER",
    "Driver",
    "Retry",
    "aexecute",
    "agroup",
    "execute",
    "raise_parse_cache_limit",
]

T = TypeVar("T")
logger = logging.getLogger("sayiir.backends.postgres")

# psycopg parses a query's placeholders once and caches the result, but only for queries
# up to 4 KB. Our writes are longer, and parsing them again on every call cost about 0.3 ms
# of CPU per step (measured). ``raise_parse_cache_limit`` raises that limit (a backend does
# so on first use unless made with ``raise_parse_cache_limit=False``): the cache stays an
# LRU of bounded size, and our queries are a fixed, small set.
PARSE_CACHE_LIMIT = 1 << 16


def raise_parse_cache_limit() -> bool:
    """Let psycopg cache the parsing of queries up to ``PARSE_CACHE_LIMIT`` bytes long, in
    this whole process. Returns whether the limit is that high now (False: this psycopg
    has no such setting, and nothing was changed)."""
    queries: Any = getattr(psycopg, "_queries", None)
    limit = getattr(queries, "MAX_CACHED_STATEMENT_LENGTH", None)
    if not isinstance(limit, int):
        return False
    if limit < PARSE_CACHE_LIMIT:
        queries.MAX_CACHED_STATEMENT_LENGTH = PARSE_CACHE_LIMIT
    return True


# Raised by concurrent migrators of different prefixes creating the same schema: the
# loser re-runs and finds the object there.
_MIGRATION_CLASH = frozenset({"23505", "42P06", "42P07", "42710"})
_IN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)
_TUPLES_OK = ExecStatus.TUPLES_OK
_BINARY = Format.BINARY
_TEXT = Format.TEXT


def _statement(compiled: Compiled, req: Request) -> tuple[bytes, dict[str, Any] | None, bool]:
    if isinstance(req, Q):
        return compiled.queries[req.name], req.params, req.prepare
    if isinstance(req, Composed):
        return req.text.encode(), req.params, False
    return compiled.scripts[req.version], None, False


def execute(conn: psycopg.Connection[Any], compiled: Compiled, op: Op[T]) -> T:
    """Run ``op`` on ``conn``, switched to autocommit for the duration, through the
    connection's own tuple-row cursor (``_cursor``)."""
    restore = not conn.autocommit
    if restore:
        conn.autocommit = True
    cur = _cursor(conn)
    try:
        req = next(op)
        while True:
            query, params, prepare = _statement(compiled, req)
            cur.format = _BINARY if prepare else _TEXT
            cur.execute(query, params, prepare=prepare)
            req = op.send(cur.fetchall() if _has_rows(cur) else [])
    except StopIteration as stop:
        return _returned(op, stop)
    except BaseException as exc:
        if _must_roll_back(exc, conn):
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        raise
    finally:
        op.close()
        if restore and not conn.closed:
            conn.autocommit = False


async def aexecute(
    conn: psycopg.AsyncConnection[Any],
    compiled: Compiled,
    op: Op[T],
    first: Request | None = None,
) -> T:
    """``execute`` for asyncio. ``first``: ``op`` was started elsewhere (``_group``) and
    asks for this request next."""
    async with _Autocommit(conn):
        cur = _acursor(conn)
        try:
            req = next(op) if first is None else first
            while True:
                query, params, prepare = _statement(compiled, req)
                cur.format = _BINARY if prepare else _TEXT
                await cur.execute(query, params, prepare=prepare)
                req = op.send(await cur.fetchall() if _has_rows(cur) else [])
        except StopIteration as stop:
            return _returned(op, stop)
        finally:
            op.close()


async def agroup(
    conn: psycopg.AsyncConnection[Any], compiled: Compiled, requests: Sequence[Q]
) -> list[Rows]:
    """Run ``requests`` (prepared statements, each the first of a write of ``_group``) in
    one transaction and one pipeline: ``BEGIN``, each of them, ``COMMIT``, one round trip
    and one WAL flush for all. Returns the rows of each.

    On any failure the transaction is rolled back when it is still open, and the error is
    raised: nothing of the group committed, unless the connection broke at the ``COMMIT``
    (then it is unknown, as for one statement in autocommit).
    """
    async with _Autocommit(conn):
        control = _acursor(conn)
        control.format = _TEXT
        cursors = _group_cursors(conn, len(requests))[: len(requests)]
        async with conn.pipeline() as pipeline:
            await control.execute(compiled.queries["begin"])
            for cur, req in zip(cursors, requests, strict=True):
                await cur.execute(compiled.queries[req.name], req.params, prepare=True)
            await control.execute(compiled.queries["commit"])
            await pipeline.sync()
        return [await cur.fetchall() if _has_rows(cur) else [] for cur in cursors]


class _Autocommit:
    """``conn`` in autocommit while the block runs; on the way out, a transaction of ours
    left open by an error is rolled back, and the caller's setting is restored."""

    __slots__ = ("_conn", "_restore")

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self._restore = False

    async def __aenter__(self) -> None:
        self._restore = not self._conn.autocommit
        if self._restore:
            await self._conn.set_autocommit(True)

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        conn = self._conn
        if exc is not None and _must_roll_back(exc, conn):
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
        if self._restore and not conn.closed:
            await conn.set_autocommit(False)


_GROUP_CURSORS_ATTR = "_sayiir_group_cursors"


def _group_cursors(conn: psycopg.AsyncConnection[Any], n: int) -> list[psycopg.AsyncCursor[Any]]:
    """At least ``n`` cursors of ``conn`` for a group, one per statement of the pipeline
    (each keeps its statement's result), kept on the connection: a fresh cursor starts
    with no cached dumpers, and looking them up again was the largest cost of a group."""
    cursors: list[psycopg.AsyncCursor[Any]] | None = getattr(conn, _GROUP_CURSORS_ATTR, None)
    if cursors is None:
        cursors = []
        setattr(conn, _GROUP_CURSORS_ATTR, cursors)
    while len(cursors) < n:
        cur = conn.cursor(row_factory=tuple_row)
        cur.format = _BINARY
        cursors.append(cur)
    return cursors


def _returned(op: Op[T], stop: StopIteration) -> T:
    """What ``op`` returned (its ``StopIteration``'s value)."""
    result: T = stop.value
    return result


# A cursor made for each call cost about a tenth of a step's client CPU (measured): the
# cursor, its adapters map, and the swap of the connection's row factory (a caller's pool
# may have set another). Each connection keeps one cursor of ours instead, with tuple rows,
# as an attribute of the connection (not in a dict keyed by it: the cursor refers to its
# connection, so such a dict would keep every connection alive). A connection serves one
# caller at a time, and each ``execute`` replaces the cursor's previous result.
_CURSOR_ATTR = "_sayiir_cursor"


def _cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    cur: psycopg.Cursor[Any] | None = getattr(conn, _CURSOR_ATTR, None)
    if cur is None:
        cur = conn.cursor(row_factory=tuple_row)
        setattr(conn, _CURSOR_ATTR, cur)
    return cur


def _acursor(conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncCursor[Any]:
    cur: psycopg.AsyncCursor[Any] | None = getattr(conn, _CURSOR_ATTR, None)
    if cur is None:
        cur = conn.cursor(row_factory=tuple_row)
        setattr(conn, _CURSOR_ATTR, cur)
    return cur


def _has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    # Not cur.description: it builds a Column object per column on every call.
    res = cur.pgresult
    return res is not None and res.status == _TUPLES_OK


def _must_roll_back(
    exc: BaseException, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]
) -> bool:
    """Note whether ``exc`` cost us the connection (``mark_lost``); then, is a transaction
    of the operation (``begin`` ... ``commit``) left open on it?"""
    mark_lost(exc, conn.closed)
    return conn.info.transaction_status in _IN_TRANSACTION


class Retry:
    """Exponential backoff on connection-class errors, bounded by ``timeout`` seconds.

    One object per call, consulted by the retry loop (``_runner.attempts``) after each
    failed attempt.
    """

    __slots__ = ("_doing", "_started", "_target", "_timeout", "attempts")

    first_delay = 0.05
    max_delay = 2.0

    def __init__(
        self, target: Target, timeout: float, doing: str, started: float | None = None
    ) -> None:
        self._target = target
        self._timeout = timeout
        self._doing = doing
        self._started = time.monotonic() if started is None else started
        self.attempts = 0

    def acquire_timeout(self, configured: float) -> float:
        """How long the next pool checkout may wait: the pool's own timeout for the first
        attempt (a busy pool is not an outage), never past the retry budget after that."""
        if self.attempts == 0:
            return configured
        return min(configured, max(0.05, self.remaining()))

    def remaining(self) -> float:
        return self._started + self._timeout - time.monotonic()

    def after(self, exc: BaseException) -> float | BackendError:
        """Seconds to wait before the next attempt, or the error to raise instead."""
        transient = is_transient(exc) or (
            self._doing == "migrate" and getattr(exc, "sqlstate", None) in _MIGRATION_CLASH
        )
        if not transient:
            return translate(exc, self._target, self._doing)
        self.attempts += 1
        elapsed = time.monotonic() - self._started
        left = self._timeout - elapsed
        if left <= 0:
            return BackendError(
                f"PostgreSQL at {self._target.where} is unreachable: {self._doing} kept "
                f"failing for {elapsed:.1f}s ({self.attempts} attempts, "
                f"retry_timeout_secs={self._timeout:g}); last error: "
                f"{describe(exc, self._target)}"
            )
        if self.attempts == 1:
            delay = 0.0  # a dead pooled connection: the next one is probably fine
        else:
            delay = min(self.max_delay, self.first_delay * 2 ** (self.attempts - 2))
            delay *= random.uniform(0.8, 1.2)
        delay = min(delay, left)
        logger.warning(
            "PostgreSQL at %s: %s failed (attempt %d), retrying in %.2fs for up to %.1fs more: %s",
            self._target.where,
            self._doing,
            self.attempts,
            delay,
            left,
            describe(exc, self._target),
        )
        return delay


class Driver:
    """The psycopg-facing half of the backend, handed to ``_backend`` on first use.

    ``_backend`` must not import psycopg at import time (``import sayiir`` stays free of
    it); it loads this module once and keeps this object.
    """

    Error: type[psycopg.Error] = psycopg.Error
    Retry = Retry
    raise_parse_cache_limit = staticmethod(raise_parse_cache_limit)

    @staticmethod
    def execute(conn: psycopg.Connection[Any], compiled: Compiled, op: Op[T]) -> T:
        return execute(conn, compiled, op)

    aexecute = staticmethod(aexecute)
    agroup = staticmethod(agroup)

    @staticmethod
    def connect(conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.Connection.connect(conninfo, **kwargs)

    @staticmethod
    async def aconnect(conninfo: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(conninfo, **kwargs)


DRIVER = Driver()
