"""Run ``_ops`` operations on the database: pooled or direct, sync or async, retried.

The retry loop is written once, without I/O: ``attempts`` is a generator that asks for an
attempt, is told how it failed, and answers with how long to wait (and whether to check
the pool first) or raises the ``BackendError`` to give up with. ``Runner._drive`` and
``Runner._adrive`` are the thin shells that do what it asks, with blocking calls or with
``await``; the operations themselves (``_ops``) and their executors (``_io``) are shared
the same way. On the hot path (pool open, schema ready, first attempt succeeds) a call
costs one pool checkout and the operation's statements.

Migrations run on first use, once per backend, on a connection of their own (or of the
caller's pool), before any pool of ours opens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from sayiir.errors import BackendError

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from sayiir.backends.postgres._io import Driver, Retry
    from sayiir.backends.postgres._ops import Op
    from sayiir.backends.postgres._pools import Pools
    from sayiir.backends.postgres._sql import Compiled

__all__ = ["START", "Make", "Runner", "Wait", "attempts", "driver"]

T = TypeVar("T")
# Builds the operation of one attempt; told whether it is a re-sent one (an earlier attempt
# may have committed before its connection broke).
Make = Callable[[bool], "Op[T]"]


class Wait:
    """What to do before the next attempt: ``check_pool`` (drop its dead connections),
    then sleep ``seconds``."""

    __slots__ = ("check_pool", "seconds")

    def __init__(self, seconds: float, check_pool: bool) -> None:
        self.seconds = seconds
        self.check_pool = check_pool

    def __repr__(self) -> str:
        return f"Wait({self.seconds!r}, check_pool={self.check_pool})"


START = Wait(0.0, check_pool=False)
Plan = Generator[Wait, BaseException, NoReturn]


def attempts(retry: Retry) -> Plan:
    """The retry loop of one call, without I/O.

    Prime it with ``next`` (it yields ``START``, the nothing to do before the first attempt),
    then make attempts; when one fails, ``send`` its error and get the ``Wait`` before the
    next attempt, or the ``BackendError`` that ends the call, raised. Send the error
    outside the ``except`` block that caught it: the psycopg error (whose ``pgconn`` may
    hold the conninfo) must be neither ``__cause__`` nor ``__context__`` of what is raised.
    """
    failure = yield START
    while True:
        outcome = retry.after(failure)
        if isinstance(outcome, BackendError):
            raise outcome
        # After the first failure, a dead pooled connection is the likely cause: the pool
        # drops the others like it before the next attempt.
        failure = yield Wait(outcome, check_pool=retry.attempts == 1)


class Runner:
    """Runs operations for one backend: readiness, connections, the retry loop.

    ``setup`` makes the operation run once before first use (migrate, or verify);
    ``parse_cache``: raise psycopg's parse-cache limit then (``_io.raise_parse_cache_limit``).
    """

    def __init__(
        self,
        pools: Pools,
        schema: str,
        table_prefix: str,
        retry_timeout: float,
        setup: Callable[[], Op[Any]],
        parse_cache: bool = True,
    ) -> None:
        self.pools = pools
        self.ready = False
        self._schema = schema
        self._prefix = table_prefix
        self._retry_timeout = retry_timeout
        self._setup = setup
        self._parse_cache = parse_cache
        self._sql: Compiled | None = None
        # The layout of the tables (migration 0008), found by ``setup``: the queries are
        # compiled for it once it is known (the setup's own queries are the same in both).
        self.partitioned = False

    def compiled(self) -> Compiled:
        """The queries and migration scripts, names filled in (rendered on first use)."""
        if self._sql is None:
            from sayiir.backends.postgres._sql import compile_sql

            if self._parse_cache:
                driver().raise_parse_cache_limit()
            self._sql = compile_sql(self._schema, self._prefix, self.partitioned)
        return self._sql

    def use_layout(self, partitioned: bool) -> None:
        """Compile the queries for the partitioned layout, or the plain one, from now on."""
        if partitioned != self.partitioned:
            self.partitioned = partitioned
            self._sql = None

    def run(self, doing: str, make: Make[T]) -> T:
        """Run on a connection of the sync pool (migrating first, on first use)."""
        return self._drive(doing, make, direct=False)

    def run_direct(self, doing: str, make: Make[T]) -> T:
        """Run on a connection of its own (or of the caller's pool): first contact,
        migrations."""
        self.pools.check_open()
        return self._drive(doing, make, direct=True)

    async def arun(self, doing: str, make: Make[T], resent: bool = False) -> T:
        """``run`` on the async pool. ``resent``: an earlier try of this call may have
        committed (a group of ``_group`` that failed), so even the first attempt here is
        told it is a re-sent one."""
        return await self._adrive(doing, make, direct=False, resent=resent)

    async def arun_direct(self, doing: str, make: Make[T]) -> T:
        """``run_direct`` with asyncio."""
        self.pools.check_open()
        return await self._adrive(doing, make, direct=True)

    # -- readiness -------------------------------------------------------------------------

    def pool(self) -> ConnectionPool[Any]:
        """The sync pool, the schema ready."""
        pool = self.pools.sync_hot()
        if pool is not None and self.ready:
            return pool
        with self.pools.lock:
            self.pools.check_open()
            if not self.ready:
                self.run_direct("migrate", lambda resent: self._setup())
                self.ready = True
            return self.pools.sync_pool()

    async def apool(self) -> AsyncConnectionPool[Any]:
        """The async pool of the running event loop, the schema ready."""
        pool = self.pools.async_hot()
        if pool is not None and self.ready:
            return pool
        async with self.pools.async_lock():
            self.pools.check_open()
            if not self.ready:
                await self.arun_direct("migrate", lambda resent: self._setup())
                self.ready = True
            return await self.pools.async_pool()

    # -- one attempt -----------------------------------------------------------------------

    def _attempt(self, retry: Retry, make: Make[T], direct: bool) -> T:
        io = driver()
        pool = self.pools.foreign_sync() if direct else self.pool()
        if pool is None:
            with io.connect(self.pools.target.conninfo,
                            **self.pools.direct_kwargs(retry.remaining())) as conn:  # fmt: skip
                return io.execute(conn, self.compiled(), make(retry.attempts > 0))
        # getconn/putconn, not ``pool.connection()``: that context manager also enters the
        # connection's own (a commit or rollback each call, which ``execute`` already does
        # when a transaction of ours is open) and is a tenth of a step's client CPU.
        conn = pool.getconn(timeout=retry.acquire_timeout(pool.timeout))
        try:
            return io.execute(conn, self.compiled(), make(retry.attempts > 0))
        finally:
            pool.putconn(conn)

    async def _aattempt(self, retry: Retry, make: Make[T], direct: bool, resent: bool) -> T:
        io = driver()
        pool = self.pools.foreign_async() if direct else await self.apool()
        if pool is None:
            conn = await io.aconnect(
                self.pools.target.conninfo, **self.pools.direct_kwargs(retry.remaining())
            )
            async with conn:
                return await io.aexecute(conn, self.compiled(), make(resent or retry.attempts > 0))
        conn = await pool.getconn(timeout=retry.acquire_timeout(pool.timeout))
        try:
            return await io.aexecute(conn, self.compiled(), make(resent or retry.attempts > 0))
        finally:
            await pool.putconn(conn)

    # -- the two shells of ``attempts`` ----------------------------------------------------

    def _retry(self, doing: str) -> Retry:
        return driver().Retry(self.pools.target, self._retry_timeout, doing)

    def _drive(self, doing: str, make: Make[T], direct: bool) -> T:
        retry = self._retry(doing)
        plan: Plan | None = None
        while True:
            try:
                return self._attempt(retry, make, direct)
            except driver().Error as exc:
                failure = exc
            plan = plan or _started(attempts(retry))  # only once an attempt failed
            wait = plan.send(failure)
            if wait.check_pool:
                self.pools.check()
            time.sleep(wait.seconds)

    async def _adrive(self, doing: str, make: Make[T], direct: bool, resent: bool = False) -> T:
        retry = self._retry(doing)
        plan: Plan | None = None
        while True:
            try:
                return await self._aattempt(retry, make, direct, resent)
            except driver().Error as exc:
                failure = exc
            plan = plan or _started(attempts(retry))
            wait = plan.send(failure)
            if wait.check_pool:
                await self.pools.acheck()
            await asyncio.sleep(wait.seconds)


def _started(plan: Plan) -> Plan:
    next(plan)
    return plan


_LOADED: list[Driver] = []


def driver() -> Driver:
    """The psycopg side (``_io.DRIVER``), imported on first use."""
    if not _LOADED:
        try:
            from sayiir.backends.postgres._io import DRIVER
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "PostgresBackend needs psycopg 3 and psycopg_pool: pip install 'sayiir[postgres]'"
            ) from exc
        _LOADED.append(DRIVER)
    return _LOADED[0]
