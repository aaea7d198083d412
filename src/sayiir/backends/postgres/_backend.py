"""``PostgresBackend``: the storage protocol on PostgreSQL (psycopg 3 + psycopg_pool).

The operations themselves live in ``_ops`` (sans-IO generators); this module owns the
lifecycle around them: lazy pools (a sync ``ConnectionPool`` for ``Storage`` and
``QueueStorage``, an ``AsyncConnectionPool`` for ``AsyncStorage``, each opened on first use),
migrations on first use, the retry loop that turns a database outage into a bounded wait,
and the LISTEN connection of worker wake-ups (``_listen``).

psycopg is imported inside methods only, so ``import sayiir`` never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import uuid4

from sayiir.backends.adapters import ThreadedAsyncStorage
from sayiir.backends.postgres import _migrations, _ops
from sayiir.backends.postgres._conninfo import Target, parse_target
from sayiir.backends.postgres._names import check_names
from sayiir.core.codec import Codec, JsonCodec
from sayiir.core.records import (
    AttemptRecord,
    Claim,
    ControlRequest,
    FinalState,
    InstanceRecord,
    QueueItem,
    RunState,
    Status,
    StepRecord,
    check_lease_secs,
)
from sayiir.errors import BackendError

if TYPE_CHECKING:
    from types import TracebackType

    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from sayiir.backends.postgres._io import Driver, Retry
    from sayiir.backends.postgres._listen import Listener
    from sayiir.backends.postgres._sql import Compiled

__all__ = ["PostgresBackend"]

T = TypeVar("T")
logger = logging.getLogger("sayiir.backends.postgres")
Make = Callable[[bool], "_ops.Op[T]"]

_DEFAULT_CONNECT_TIMEOUT = 10


class _Options:
    """Pool and session settings (spec/postgres.md §1.7), validated once."""

    __slots__ = (
        "acquire_timeout",
        "idle_in_transaction_timeout",
        "max_idle",
        "max_lifetime",
        "max_size",
        "min_size",
        "statement_timeout",
    )

    def __init__(
        self,
        max_connections: int | None,
        min_connections: int | None,
        acquire_timeout_secs: float | None,
        idle_timeout_secs: float | None,
        max_lifetime_secs: float | None,
        statement_timeout_secs: float | None,
        idle_in_transaction_session_timeout_secs: float | None,
    ) -> None:
        self.max_size = _positive("max_connections", max_connections, 10)
        self.min_size = _positive("min_connections", min_connections, 1, zero=True)
        if self.min_size > self.max_size:
            if min_connections is None:
                self.min_size = self.max_size
            else:
                raise ValueError(
                    f"min_connections={self.min_size} is larger than "
                    f"max_connections={self.max_size}"
                )
        self.acquire_timeout = _positive("acquire_timeout_secs", acquire_timeout_secs, 30.0)
        self.max_idle = _positive("idle_timeout_secs", idle_timeout_secs, 600.0)
        self.max_lifetime = _positive("max_lifetime_secs", max_lifetime_secs, 3600.0)
        self.statement_timeout = _positive_or_none("statement_timeout_secs", statement_timeout_secs)
        self.idle_in_transaction_timeout = _positive_or_none(
            "idle_in_transaction_session_timeout_secs", idle_in_transaction_session_timeout_secs
        )


def _positive(name: str, value: float | None, default: float, *, zero: bool = False) -> Any:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'>= 0' if zero else '> 0'}, not {value!r}")
    return type(default)(value)


def _positive_or_none(name: str, value: float | None) -> float | None:
    return None if value is None else float(_positive(name, value, 0.0))


class PostgresBackend:
    """Durable storage in PostgreSQL 13+.

    The constructor is cheap (it only validates its arguments): the backend connects, and
    creates or upgrades its tables, on first use.

    >>> backend = PostgresBackend("postgresql://localhost/sayiir")
    >>> status = run_durable_workflow(workflow, "order-123", 42, backend=backend)  # doctest: +SKIP

    With asyncio (the pool is open and the schema migrated when ``connect`` returns)::

        backend = await PostgresBackend.connect("postgresql://localhost/sayiir")
        status = await CheckpointingRunner(backend).run(workflow, "order-123", 42)
        await backend.aclose()

    ``password=`` takes the password apart from the URL, or a function called for each new
    connection, so that a rotated password is picked up without a restart (so is a changed
    ``~/.pgpass``/``PGPASSFILE`` entry, which libpq reads for each new connection).

    Several applications can share a database with ``schema=`` and ``table_prefix=``; a
    least-privilege user on PostgreSQL 15+ needs ``schema="sayiir"`` (see docs/postgres.md).
    Database outages are retried with backoff for up to ``retry_timeout_secs`` seconds, then
    raise ``BackendError``; no error message, log line or repr contains the password.
    ``lease_secs``: how long an execution holds a run without a write or a heartbeat (see
    ``Storage``); the database clock decides.

    It is also the queue of distributed workers (``QueueStorage``: ``Worker(id, backend)``),
    with LISTEN/NOTIFY wake-ups (``subscribe``), and deletes old finished runs
    (``delete_finished``, the ``sayiir retention`` command).
    """

    codec: Codec
    _password: str | Callable[[], str] | None

    def __init__(
        self,
        url: str,
        *,
        max_connections: int | None = None,
        min_connections: int | None = None,
        acquire_timeout_secs: float | None = None,
        idle_timeout_secs: float | None = None,
        max_lifetime_secs: float | None = None,
        statement_timeout_secs: float | None = None,
        idle_in_transaction_session_timeout_secs: float | None = None,
        schema: str = "public",
        table_prefix: str = "sayiir_",
        codec: Codec | None = None,
        auto_migrate: bool = True,
        retry_timeout_secs: float = 30.0,
        password: str | Callable[[], str] | None = None,
        lease_secs: float = 30.0,
    ) -> None:
        options = _Options(
            max_connections,
            min_connections,
            acquire_timeout_secs,
            idle_timeout_secs,
            max_lifetime_secs,
            statement_timeout_secs,
            idle_in_transaction_session_timeout_secs,
        )
        target = parse_target(url)
        self._setup(target, options, schema, table_prefix, codec, auto_migrate,
                    retry_timeout_secs, lease_secs)  # fmt: skip
        self._password = _check_password(password, target)

    def _setup(
        self,
        target: Target,
        options: _Options,
        schema: str,
        table_prefix: str,
        codec: Codec | None,
        auto_migrate: bool,
        retry_timeout_secs: float,
        lease_secs: float,
    ) -> None:
        check_names(schema, table_prefix)
        self.codec = codec if codec is not None else JsonCodec()
        self.lease_secs = check_lease_secs(lease_secs)
        self._target = target
        self._options = options
        self._schema = schema
        self._prefix = table_prefix
        self._auto_migrate = bool(auto_migrate)
        self._retry_timeout = float(_positive("retry_timeout_secs", retry_timeout_secs, 30.0,
                                              zero=True))  # fmt: skip
        self._pool: ConnectionPool[Any] | None = None
        self._owns_pool = True
        self._apool: AsyncConnectionPool[Any] | None = None
        # Async pools belong to one event loop. A backend made with the plain constructor
        # may be used from several loops (asyncio.run per call), so its async form runs the
        # sync pool in threads; connect() and from_pool(AsyncConnectionPool) are native.
        self._async_native = False
        self._owns_apool = True
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._alock: asyncio.Lock | None = None
        self._lock = threading.Lock()
        self._ready = False
        self._closed = False
        self._sql: Compiled | None = None
        self._foreign_kwargs: dict[str, Any] = {}
        self._closing: asyncio.Task[None] | None = None
        self._listener: Listener | None = None
        self._password = None

    # -- construction ----------------------------------------------------------------------

    @classmethod
    async def connect(cls, url: str, **options: Any) -> PostgresBackend:
        """Open the async pool and migrate; errors (bad URL, host, password) surface here.

        >>> url = "postgresql://localhost/sayiir"
        >>> backend = await PostgresBackend.connect(url)  # doctest: +SKIP
        """
        backend = cls(url, **options)
        backend._async_native = True
        try:
            await backend._arun("connect", lambda retry: _ops.ping())
        except BaseException:
            await backend.aclose()
            raise
        return backend

    @classmethod
    async def connect_with_codec(cls, url: str, codec: Codec, **options: Any) -> PostgresBackend:
        """``connect`` with an explicit codec for stored values.

        >>> backend = await PostgresBackend.connect_with_codec(url, JsonCodec())  # doctest: +SKIP
        """
        return await cls.connect(url, codec=codec, **options)

    @classmethod
    def from_pool(
        cls,
        pool: ConnectionPool[Any] | AsyncConnectionPool[Any],
        *,
        schema: str = "public",
        table_prefix: str = "sayiir_",
        codec: Codec | None = None,
        auto_migrate: bool = True,
        retry_timeout_secs: float = 30.0,
        lease_secs: float = 30.0,
    ) -> PostgresBackend:
        """Use a ``psycopg_pool`` pool you own (sync or async); we never close it.

        The pool must be open before the first call. Connections are switched to autocommit
        while we hold them and switched back before they return to your pool. If you use
        the other API (sync with an async pool or the reverse), a pool of the other kind is
        opened from the same conninfo and closed by ``close()``/``aclose()``.

        >>> pool = AsyncConnectionPool(url, open=False)  # doctest: +SKIP
        >>> await pool.open()  # doctest: +SKIP
        >>> backend = PostgresBackend.from_pool(pool)  # doctest: +SKIP
        """
        from psycopg_pool import AsyncConnectionPool, ConnectionPool

        if not isinstance(pool, (ConnectionPool, AsyncConnectionPool)):
            raise TypeError(
                "from_pool() takes a psycopg_pool.ConnectionPool or AsyncConnectionPool, "
                f"not {type(pool).__name__}"
            )
        kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}
        if isinstance(pool.conninfo, str):
            target = parse_target(pool.conninfo)
        else:  # a conninfo callable: only this pool knows how to connect
            target = Target("", f"<pool {pool.name!r}>", f"pool {pool.name!r}", {}, ())
        if kwargs.get("password"):
            target = Target(target.conninfo, target.display, target.where, target.params,
                            (*target.secrets, str(kwargs["password"])))  # fmt: skip
        backend = cls.__new__(cls)
        backend._setup(target, _Options(None, None, pool.timeout, None, None, None, None),
                       schema, table_prefix, codec, auto_migrate, retry_timeout_secs,
                       lease_secs)  # fmt: skip
        backend._foreign_kwargs = {
            k: v for k, v in kwargs.items() if k not in ("autocommit", "row_factory")
        }
        if isinstance(pool, ConnectionPool):
            backend._pool, backend._owns_pool = pool, False
        else:
            backend._apool, backend._owns_apool = pool, False
            backend._async_native = True
        return backend

    def __repr__(self) -> str:
        return (
            f"PostgresBackend({self._target.display!r}, schema={self._schema!r}, "
            f"table_prefix={self._prefix!r})"
        )

    # -- migrations ------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations now (also done automatically on first use).

        Returns the names (``"0001_initial"``) of the migrations this call applied.
        """
        from sayiir.backends.postgres._sql import migrations

        done = self._run_direct(
            "migrate",
            lambda retry: _migrations.migrate(
                self._schema, self._prefix, migrations(), self._target.where
            ),
        )
        self._ready = True
        return [f"{m.version:04d}_{m.name}" for m in done]

    def pending_migrations(self) -> list[tuple[str, str]]:
        """``(name, sql)`` for each migration not applied yet; applies nothing.

        Each ``sql`` is the complete script the migrator would run for that migration
        (transaction, advisory lock, body, version row), with names filled in: what
        ``sayiir migrate URL --dry-run`` prints.
        """
        from sayiir.backends.postgres._names import migration_lock_key
        from sayiir.backends.postgres._sql import migration_script, migrations

        plan = self._run_direct(
            "inspect",
            lambda retry: _migrations.inspect(
                self._schema, self._prefix, migrations(), self._target.where
            ),
        )
        key = migration_lock_key(self._schema, self._prefix)
        compiled = self._compiled()
        return [
            (
                f"{m.version:04d}_{m.name}",
                migration_script(compiled, m, key, create_schema=self._schema != "public"),
            )
            for m in plan.pending
        ]

    def _setup_op(self) -> _ops.Op[Any]:
        from sayiir.backends.postgres._sql import migrations

        step = _migrations.migrate if self._auto_migrate else _migrations.verify
        return step(self._schema, self._prefix, migrations(), self._target.where)

    def _compiled(self) -> Compiled:
        if self._sql is None:
            from sayiir.backends.postgres._sql import compile_sql

            self._sql = compile_sql(self._schema, self._prefix)
        return self._sql

    # -- sync plumbing ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"{self!r} is closed")

    def _pool_kwargs(self) -> dict[str, Any]:
        """Connection arguments; the pools call this for each new connection."""
        params = self._target.params
        kwargs: dict[str, Any] = {**self._foreign_kwargs, "autocommit": True}
        self._add_password(kwargs)
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = _DEFAULT_CONNECT_TIMEOUT
        if "application_name" not in params:
            kwargs["application_name"] = "sayiir"
        settings = [params.get("options", "")]
        opts = self._options
        if opts.statement_timeout is not None:
            settings.append(f"-c statement_timeout={round(opts.statement_timeout * 1000)}")
        if opts.idle_in_transaction_timeout is not None:
            ms = round(opts.idle_in_transaction_timeout * 1000)
            settings.append(f"-c idle_in_transaction_session_timeout={ms}")
        if any(settings[1:]):
            kwargs["options"] = " ".join(s for s in settings if s)
        return kwargs

    def _pool_args(self) -> dict[str, Any]:
        opts = self._options
        return {
            # A function, not a dict: a password function is asked again for each connection.
            "kwargs": self._pool_kwargs,
            "min_size": opts.min_size,
            "max_size": opts.max_size,
            "timeout": opts.acquire_timeout,
            "max_idle": opts.max_idle,
            "max_lifetime": opts.max_lifetime,
            "name": f"sayiir@{self._target.where}",
            "open": False,
        }

    def _sync_pool(self) -> ConnectionPool[Any]:
        pool = self._pool
        if pool is not None and self._ready:
            return pool
        self._check_open()
        self._ensure_ready()
        with self._lock:
            self._check_open()
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(self._target.conninfo, **self._pool_args())
                self._pool.open(wait=False)
            return self._pool

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self._run_direct("migrate", lambda retry: self._setup_op())
                self._ready = True

    def _run_direct(self, doing: str, make: Make[T]) -> T:
        """Run on a connection of its own (or of a caller's pool): first contact, migrations."""
        io = _io_module()
        execute = io.execute
        self._check_open()

        def once(retry: Retry) -> T:
            pool = self._pool
            if pool is not None and not self._owns_pool:
                with pool.connection(timeout=retry.acquire_timeout(pool.timeout)) as conn:
                    return execute(conn, self._compiled(), make(retry.attempts > 0))
            extra = self._direct_kwargs(retry)
            with io.connect(self._target.conninfo, **extra) as conn:
                return execute(conn, self._compiled(), make(retry.attempts > 0))

        return self._retrying(doing, once)

    def _direct_kwargs(self, retry: Retry) -> dict[str, Any]:
        """Connection arguments for first contact: no session settings, bounded wait."""
        kwargs: dict[str, Any] = {**self._foreign_kwargs, "autocommit": True}
        self._add_password(kwargs)
        if "connect_timeout" not in self._target.params:
            left = max(1, round(retry.remaining()))
            kwargs.setdefault("connect_timeout", min(_DEFAULT_CONNECT_TIMEOUT, left))
        return kwargs

    def _add_password(self, kwargs: dict[str, Any]) -> None:
        """The current password from ``password=`` (never cached: it may have rotated)."""
        source = self._password
        if source is None:
            return
        if isinstance(source, str):
            kwargs["password"] = source
            return
        try:
            value = source()
        except Exception as exc:
            raise BackendError(
                f"the password function of {self!r} raised {type(exc).__name__}"
            ) from exc
        if not isinstance(value, str) or not value:
            raise BackendError(
                f"the password function of {self!r} must return a non-empty str, "
                f"not {type(value).__name__}"
            )
        self._target.learn(value)
        kwargs["password"] = value

    def _run(self, doing: str, make: Make[T]) -> T:
        io = _io_module()
        pool = self._pool
        failure: BaseException | None = None
        started: float | None = None  # None: the retry budget starts at the first attempt
        if pool is not None and self._ready:
            # The hot path: no retry bookkeeping unless this first attempt fails.
            started = time.monotonic()
            try:
                with pool.connection(timeout=self._options.acquire_timeout) as conn:
                    return io.execute(conn, self._compiled(), make(False))
            except io.Error as exc:
                failure = exc

        def once(retry: Retry) -> T:
            pool = self._sync_pool()
            with pool.connection(timeout=retry.acquire_timeout(pool.timeout)) as conn:
                return io.execute(conn, self._compiled(), make(retry.attempts > 0))

        return self._retrying(doing, once, failure, started)

    def _retrying(
        self,
        doing: str,
        once: Callable[[Retry], T],
        failure: BaseException | None = None,
        started: float | None = None,
    ) -> T:
        io = _io_module()
        retry = io.Retry(self._target, self._retry_timeout, doing, started)
        while True:
            if failure is None:
                try:
                    return once(retry)
                except io.Error as exc:
                    failure = exc
            # Decided and raised outside the except block: the psycopg error (which may
            # carry the conninfo) is neither __cause__ nor __context__ of what we raise.
            outcome = retry.after(failure)
            failure = None
            if isinstance(outcome, BackendError):
                raise outcome
            if retry.attempts == 1 and self._pool is not None and self._owns_pool:
                self._check_pool()
            time.sleep(outcome)

    def _check_pool(self) -> None:
        """Drop the pool's dead connections (after the server restarted, for instance)."""
        pool = self._pool
        if pool is not None:
            with contextlib.suppress(_io_module().Error):
                pool.check()

    # -- async plumbing --------------------------------------------------------------------

    async def _async_pool(self) -> AsyncConnectionPool[Any]:
        pool = self._apool
        if pool is not None and self._ready and (not self._owns_apool or self._aloop_ok()):
            return pool
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._alock is None or self._aloop is not loop:
            # An owned pool belongs to the loop that opened it; a new loop gets a new pool.
            self._alock, self._aloop = asyncio.Lock(), loop
            if self._owns_apool and self._apool is not None:
                _drop_idle_connections(self._apool)
                self._apool = None
        async with self._alock:
            self._check_open()
            if not self._ready:
                await self._arun_direct("migrate", lambda retry: self._setup_op())
                self._ready = True
            if self._apool is None:
                from psycopg_pool import AsyncConnectionPool

                apool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    self._target.conninfo, **self._pool_args()
                )
                await apool.open(wait=False)
                self._apool = apool
            return self._apool

    def _aloop_ok(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._aloop
        except RuntimeError:  # pragma: no cover - only called from coroutines
            return False

    async def _arun_direct(self, doing: str, make: Make[T]) -> T:
        io = _io_module()
        aexecute = io.aexecute

        async def once(retry: Retry) -> T:
            pool = self._apool
            if pool is not None and not self._owns_apool:
                async with pool.connection(timeout=retry.acquire_timeout(pool.timeout)) as conn:
                    return await aexecute(conn, self._compiled(), make(retry.attempts > 0))
            extra = self._direct_kwargs(retry)
            conn = await io.aconnect(self._target.conninfo, **extra)
            async with conn:
                return await aexecute(conn, self._compiled(), make(retry.attempts > 0))

        return await self._aretrying(doing, once)

    async def _arun(self, doing: str, make: Make[T]) -> T:
        io = _io_module()
        pool = self._apool
        failure: BaseException | None = None
        started: float | None = None
        if pool is not None and self._ready and (not self._owns_apool or self._aloop_ok()):
            started = time.monotonic()
            try:
                async with pool.connection(timeout=self._options.acquire_timeout) as conn:
                    return await io.aexecute(conn, self._compiled(), make(False))
            except io.Error as exc:
                failure = exc

        async def once(retry: Retry) -> T:
            pool = await self._async_pool()
            async with pool.connection(timeout=retry.acquire_timeout(pool.timeout)) as conn:
                return await io.aexecute(conn, self._compiled(), make(retry.attempts > 0))

        return await self._aretrying(doing, once, failure, started)

    async def _aretrying(
        self,
        doing: str,
        once: Callable[[Retry], Awaitable[T]],
        failure: BaseException | None = None,
        started: float | None = None,
    ) -> T:
        io = _io_module()
        retry = io.Retry(self._target, self._retry_timeout, doing, started)
        while True:
            if failure is None:
                try:
                    return await once(retry)
                except io.Error as exc:
                    failure = exc
            outcome = retry.after(failure)  # outside the except block, as in _retrying
            failure = None
            if isinstance(outcome, BackendError):
                raise outcome
            if retry.attempts == 1 and self._apool is not None and self._owns_apool:
                with contextlib.suppress(io.Error):
                    await self._apool.check()
            await asyncio.sleep(outcome)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pools this backend opened (never a pool given to ``from_pool``)."""
        self._closed = True
        self._stop_listening()
        pool, self._pool = self._pool, None
        if pool is not None and self._owns_pool:
            pool.close()
        apool, self._apool = self._apool, None
        if apool is not None and self._owns_apool:
            loop = self._aloop
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not None and running is loop:
                # Called from async code: finish closing in the background on the same loop
                # (the reference keeps the task alive until it is done).
                self._closing = running.create_task(apool.close())
            elif loop is not None and not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(apool.close())
            else:
                _drop_idle_connections(apool)

    async def aclose(self) -> None:
        """Close the pools this backend opened; use this one from async code."""
        self._closed = True
        if self._listener is not None:
            await asyncio.to_thread(self._stop_listening)
        apool, self._apool = self._apool, None
        if apool is not None and self._owns_apool and self._aloop_ok():
            await apool.close()
        pool, self._pool = self._pool, None
        if pool is not None and self._owns_pool:
            await asyncio.to_thread(pool.close)

    def __enter__(self) -> PostgresBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> PostgresBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def async_storage(self) -> AsyncPostgresStorage | ThreadedAsyncStorage:
        """The ``AsyncStorage`` form, used by ``CheckpointingRunner``.

        Native asyncio after ``connect()``/``from_pool(AsyncConnectionPool)``; otherwise
        the sync pool in threads, which works from any event loop.
        """
        if self._async_native:
            return AsyncPostgresStorage(self)
        return ThreadedAsyncStorage(self)

    # -- Storage ---------------------------------------------------------------------------

    def create_instance(self, record: InstanceRecord, *, replace: bool) -> InstanceRecord | None:
        token = _ops.start_token(record)
        lease = self.lease_secs
        return self._run(
            "create_instance",
            lambda retry: _ops.create_instance(
                record, replace=replace, token=token, retry=retry, lease_secs=lease
            ),
        )

    def load(self, instance_id: str) -> RunState | None:
        return self._run("load", lambda retry: _ops.load(instance_id))

    def take_over(
        self, instance_id: str, token: str | None, new_token: str
    ) -> InstanceRecord | None:
        lease = self.lease_secs
        return self._run(
            "take_over", lambda retry: _ops.take_over(instance_id, token, new_token, lease)
        )

    def renew_lease(self, instance_id: str, token: str, *, release: bool = False) -> bool:
        lease = 0.0 if release else self.lease_secs
        return self._run("renew_lease", lambda retry: _ops.renew_lease(instance_id, token, lease))

    def save_steps(
        self, instance_id: str, steps: Sequence[StepRecord], *, token: str | None = None
    ) -> ControlRequest | None:
        lease = self.lease_secs
        return self._run(
            "save_steps", lambda retry: _ops.save_steps(instance_id, steps, token, lease)
        )

    def record_attempt(
        self, instance_id: str, attempt: AttemptRecord, *, token: str | None = None
    ) -> ControlRequest | None:
        lease = self.lease_secs
        return self._run(
            "record_attempt",
            lambda retry: _ops.record_attempt(instance_id, attempt, token, lease),
        )

    def consume_signal(
        self, instance_id: str, signal_name: str, key: str, *, token: str | None = None
    ) -> bytes | None:
        lease = self.lease_secs
        return self._run(
            "consume_signal",
            lambda retry: _ops.consume_signal(instance_id, signal_name, key, token, lease),
        )

    def finish(
        self,
        instance_id: str,
        final: FinalState,
        steps: Sequence[StepRecord],
        *,
        token: str | None = None,
    ) -> ControlRequest | None:
        return self._run("finish", lambda retry: _ops.finish(instance_id, final, steps, token))

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        return self._run("get_instance", lambda retry: _ops.get_instance(instance_id))

    def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        return self._run("get_checkpoint", lambda retry: _ops.get_checkpoint(instance_id, key))

    def request_control(self, instance_id: str, request: ControlRequest) -> Status | None:
        return self._run(
            "request_control", lambda retry: _ops.request_control(instance_id, request)
        )

    def unpause(self, instance_id: str) -> Status | None:
        return self._run("unpause", lambda retry: _ops.unpause(instance_id))

    def send_signal(self, instance_id: str, signal_name: str, payload: bytes) -> Status | None:
        send_id = uuid4()
        return self._run(
            "send_signal",
            lambda retry: _ops.send_signal(instance_id, signal_name, payload, send_id=send_id),
        )

    # -- QueueStorage ----------------------------------------------------------------------

    def enqueue(self, instance_id: str, items: Sequence[QueueItem]) -> None:
        if items:
            self._run("enqueue", lambda retry: _ops.enqueue(instance_id, items))

    def claim(
        self,
        worker_id: str,
        definition_hashes: Sequence[str],
        tags: Sequence[str],
        limit: int,
        lease_secs: float,
    ) -> list[Claim]:
        if limit <= 0 or not definition_hashes:
            return []
        token = uuid4()
        return self._run(
            "claim",
            lambda retry: _ops.claim(
                worker_id, definition_hashes, tags, limit, lease_secs, token=token, retry=retry
            ),
        )

    def next_due(self, definition_hashes: Sequence[str], tags: Sequence[str]) -> float | None:
        return self._run("next_due", lambda retry: _ops.next_due(definition_hashes, tags))

    def heartbeat(self, claims: Sequence[Claim], lease_secs: float) -> list[Claim]:
        if not claims:
            return []
        return self._run("heartbeat", lambda retry: _ops.heartbeat(claims, lease_secs))

    def advance(
        self,
        claim: Claim,
        steps: Sequence[StepRecord],
        *,
        final: FinalState | None = None,
        enqueue: Sequence[QueueItem] = (),
        next_item: QueueItem | None = None,
        release: bool = False,
        lease_secs: float = 300.0,
    ) -> tuple[ControlRequest | None, Claim | None]:
        token = uuid4()
        return self._run(
            "advance",
            lambda retry: _ops.advance(
                claim,
                steps,
                final=final,
                enqueue=enqueue,
                next_item=next_item,
                release=release,
                lease_secs=lease_secs,
                token=token,
                retry=retry,
            ),
        )

    def abandon(self, claim: Claim, error: str, *, retry_in: float) -> bool:
        return self._run("abandon", lambda retry: _ops.abandon(claim, error, retry_in))

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when queue work may be ready; returns the unsubscribe function.

        A dedicated connection LISTENs on this schema and prefix's channel in a daemon
        thread. ``callback`` runs on that thread and must not block. It is also called
        after every (re)connection, since notifications sent meanwhile are lost.
        """
        self._check_open()
        with self._lock:
            if self._listener is None:
                if not self._target.conninfo:
                    logger.warning(
                        "%r: no conninfo to open a LISTEN connection with (the pool connects "
                        "through a function); workers find work by polling only",
                        self,
                    )
                    return _nothing
                from sayiir.backends.postgres._listen import Listener

                self._listener = Listener(
                    self._listen_connection, self._compiled().queries["listen"], self._target
                )
            listener = self._listener
        return listener.add(callback)

    def _listen_connection(self) -> Any:
        kwargs = self._pool_kwargs()
        params = self._target.params
        if "keepalives" not in params:  # notice a silently dead peer within about 25 s
            kwargs.update(keepalives=1, keepalives_idle=10, keepalives_interval=5,
                          keepalives_count=3)  # fmt: skip
        return _io_module().connect(self._target.conninfo, **kwargs)

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    # -- retention -------------------------------------------------------------------------

    def delete_finished(self, older_than_secs: float, batch_size: int = 1000) -> int:
        """Delete completed, failed and cancelled runs that ended over ``older_than_secs`` ago.

        Their checkpoints, task executions, queue entries and consumed signal events go
        with them. Deletes ``batch_size`` runs per statement, each batch its own transaction,
        until a batch comes back short; returns how many runs were deleted. The cutoff is
        taken once, from the database clock, when the call starts.
        """
        older = _non_negative("older_than_secs", older_than_secs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
        cutoff = self._run("delete_finished", lambda retry: _ops.retention_cutoff(older))
        total = 0
        while True:
            n = self._run("delete_finished", lambda retry: _ops.delete_finished(cutoff, batch_size))
            total += n
            if n < batch_size:
                return total

    def count_finished(self, older_than_secs: float) -> int:
        """How many runs ``delete_finished(older_than_secs)`` would delete now."""
        older = _non_negative("older_than_secs", older_than_secs)
        cutoff = self._run("count_finished", lambda retry: _ops.retention_cutoff(older))
        return self._run("count_finished", lambda retry: _ops.count_finished(cutoff))


def _check_password(
    password: str | Callable[[], str] | None, target: Target
) -> str | Callable[[], str] | None:
    if password is None:
        return None
    if not (isinstance(password, str) or callable(password)):
        raise TypeError(
            f"password must be a str or a function returning one, not {type(password).__name__}"
        )
    if target.has_password:
        raise ValueError(
            "the URL has a password and password= was given too: keep one of them "
            "(password= alone, for rotation)"
        )
    if isinstance(password, str):
        target.learn(password)
    return password


def _nothing() -> None:
    """The unsubscribe function of a subscription that never listens."""


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, not {value!r}")
    return float(value)


_LOADED: list[Driver] = []


def _io_module() -> Driver:
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


def _drop_idle_connections(pool: AsyncConnectionPool[Any]) -> None:
    """Close the idle connections of an async pool whose event loop has ended.

    ``asyncio.run`` closes its loop when it returns; a pool opened there can no longer be
    closed with ``await pool.close()``. Its idle connections are closed at the socket level
    instead (psycopg_pool keeps them in ``_pool``; if that ever changes, they are closed by
    garbage collection, as before).
    """
    for conn in list(getattr(pool, "_pool", ())):
        with contextlib.suppress(Exception):
            conn.pgconn.finish()


class AsyncPostgresStorage:
    """``AsyncStorage`` over a ``PostgresBackend``: the same operations on the async pool."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._b = backend
        self.codec = backend.codec
        self.lease_secs = backend.lease_secs

    def __repr__(self) -> str:
        return f"AsyncPostgresStorage({self._b!r})"

    async def create_instance(
        self, record: InstanceRecord, *, replace: bool
    ) -> InstanceRecord | None:
        token = _ops.start_token(record)
        lease = self.lease_secs
        return await self._b._arun(
            "create_instance",
            lambda retry: _ops.create_instance(
                record, replace=replace, token=token, retry=retry, lease_secs=lease
            ),
        )

    async def load(self, instance_id: str) -> RunState | None:
        return await self._b._arun("load", lambda retry: _ops.load(instance_id))

    async def take_over(
        self, instance_id: str, token: str | None, new_token: str
    ) -> InstanceRecord | None:
        lease = self.lease_secs
        return await self._b._arun(
            "take_over", lambda retry: _ops.take_over(instance_id, token, new_token, lease)
        )

    async def renew_lease(self, instance_id: str, token: str, *, release: bool = False) -> bool:
        lease = 0.0 if release else self.lease_secs
        return await self._b._arun(
            "renew_lease", lambda retry: _ops.renew_lease(instance_id, token, lease)
        )

    async def save_steps(
        self, instance_id: str, steps: Sequence[StepRecord], *, token: str | None = None
    ) -> ControlRequest | None:
        lease = self.lease_secs
        return await self._b._arun(
            "save_steps", lambda retry: _ops.save_steps(instance_id, steps, token, lease)
        )

    async def record_attempt(
        self, instance_id: str, attempt: AttemptRecord, *, token: str | None = None
    ) -> ControlRequest | None:
        lease = self.lease_secs
        return await self._b._arun(
            "record_attempt",
            lambda retry: _ops.record_attempt(instance_id, attempt, token, lease),
        )

    async def consume_signal(
        self, instance_id: str, signal_name: str, key: str, *, token: str | None = None
    ) -> bytes | None:
        lease = self.lease_secs
        return await self._b._arun(
            "consume_signal",
            lambda retry: _ops.consume_signal(instance_id, signal_name, key, token, lease),
        )

    async def finish(
        self,
        instance_id: str,
        final: FinalState,
        steps: Sequence[StepRecord],
        *,
        token: str | None = None,
    ) -> ControlRequest | None:
        return await self._b._arun(
            "finish", lambda retry: _ops.finish(instance_id, final, steps, token)
        )

    async def get_instance(self, instance_id: str) -> InstanceRecord | None:
        return await self._b._arun("get_instance", lambda retry: _ops.get_instance(instance_id))

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        return await self._b._arun(
            "get_checkpoint", lambda retry: _ops.get_checkpoint(instance_id, key)
        )

    async def request_control(self, instance_id: str, request: ControlRequest) -> Status | None:
        return await self._b._arun(
            "request_control", lambda retry: _ops.request_control(instance_id, request)
        )

    async def unpause(self, instance_id: str) -> Status | None:
        return await self._b._arun("unpause", lambda retry: _ops.unpause(instance_id))

    async def send_signal(
        self, instance_id: str, signal_name: str, payload: bytes
    ) -> Status | None:
        send_id = uuid4()
        return await self._b._arun(
            "send_signal",
            lambda retry: _ops.send_signal(instance_id, signal_name, payload, send_id=send_id),
        )

    async def aclose(self) -> None:
        await self._b.aclose()
