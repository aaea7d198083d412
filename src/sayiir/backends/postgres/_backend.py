"""``PostgresBackend``: the storage protocol on PostgreSQL (psycopg 3 + psycopg_pool).

This module is the public face; the parts live beside it, one job each:

* ``_options``: the settings, validated once;
* ``_pools``: the arguments of each connection, and the lifecycles of the two pools;
* ``_runner``: migrations on first use, and the retry loop (a generator without I/O)
  driven by a sync and an async shell;
* ``_ops`` and ``_queue``: the operations, sans-IO generators of statements;
  ``_storage``: their calls, shared by the sync API and ``AsyncPostgresStorage``;
* ``_retention`` (deleting old runs) and ``_listen`` (worker wake-ups).

psycopg is imported inside methods only, so ``import sayiir`` never loads it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from sayiir.backends._closing import AsyncClosing
from sayiir.backends.adapters import ThreadedAsyncStorage
from sayiir.backends.postgres import (
    _migrations,
    _ops,
    _partition,
    _queue,
    _retention,
    _storage,
    _task_limits,
)
from sayiir.backends.postgres._conninfo import Target, parse_target
from sayiir.backends.postgres._console import PostgresQueries
from sayiir.backends.postgres._group import Group
from sayiir.backends.postgres._limits import PostgresLimits
from sayiir.backends.postgres._names import check_names
from sayiir.backends.postgres._options import Options, Password, check_password, positive
from sayiir.backends.postgres._pools import Pools
from sayiir.backends.postgres._runner import Runner, driver
from sayiir.backends.postgres._schedules import PostgresSchedules
from sayiir.backends.postgres._storage import AsyncPostgresStorage
from sayiir.backends.postgres._task_limits import PostgresTaskWaits
from sayiir.backends.protocol import QueueStorage
from sayiir.core.codec import Codec, JsonCodec
from sayiir.core.records import (
    AttemptRecord,
    Claim,
    ClaimAsk,
    ControlRequest,
    FinalState,
    InstanceRecord,
    QueueItem,
    RunState,
    Status,
    StepRecord,
    check_lease_secs,
)
from sayiir.core.task_limits import GateAnswer, GateAsk

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from sayiir.backends._sqlfiles import Migration
    from sayiir.backends.postgres._listen import Listener
    from sayiir.backends.postgres._sql import Compiled

__all__ = ["AsyncPostgresStorage", "PostgresBackend"]

logger = logging.getLogger("sayiir.backends.postgres")


class PostgresBackend(
    AsyncClosing,
    PostgresQueries,
    PostgresSchedules,
    PostgresLimits,
    PostgresTaskWaits,
    QueueStorage,
):
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
    ``Storage``); the database clock decides. ``raise_parse_cache_limit``: on first use,
    let psycopg cache the parsing of queries up to 64 KB instead of 4 KB, process-wide
    (sayiir's writes are longer than 4 KB; parsing them again costs ~0.3 ms of CPU per
    step); ``False`` leaves psycopg as it is.

    It is also the queue of distributed workers (``QueueStorage``: ``Worker(id, backend)``),
    with LISTEN/NOTIFY wake-ups (``subscribe``), and deletes old finished runs
    (``delete_finished``, the ``sayiir retention`` command).
    """

    codec: Codec

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
        raise_parse_cache_limit: bool = True,
        partition: str | None = None,
    ) -> None:
        options = Options(
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
                    retry_timeout_secs, lease_secs, raise_parse_cache_limit,
                    check_password(password, target), partition=partition)  # fmt: skip

    def _setup(
        self,
        target: Target,
        options: Options,
        schema: str,
        table_prefix: str,
        codec: Codec | None,
        auto_migrate: bool,
        retry_timeout_secs: float,
        lease_secs: float,
        parse_cache: bool,
        password: Password = None,
        pool: ConnectionPool[Any] | AsyncConnectionPool[Any] | None = None,
        partition: str | None = None,
    ) -> None:
        check_names(schema, table_prefix)
        self._partition = _partition.check_partition(partition)
        self.codec = codec if codec is not None else JsonCodec()
        self.lease_secs = check_lease_secs(lease_secs)
        self._target = target
        self._schema = schema
        self._prefix = table_prefix
        self._auto_migrate = bool(auto_migrate)
        retry_timeout = float(positive("retry_timeout_secs", retry_timeout_secs, 30.0, zero=True))
        foreign_kwargs: dict[str, Any] = {}
        if pool is not None and isinstance(pool.kwargs, dict):
            foreign_kwargs = {
                k: v for k, v in pool.kwargs.items() if k not in ("autocommit", "row_factory")
            }
        self._pools = Pools(target, options, password, repr(self), pool, foreign_kwargs)
        self._runner = Runner(self._pools, schema, table_prefix, retry_timeout,
                              lambda: self._open(migrate=self._auto_migrate),
                              bool(parse_cache))  # fmt: skip
        # Async pools belong to one event loop. A backend made with the plain constructor
        # may be used from several loops (asyncio.run per call), so its async form runs the
        # sync pool in threads; connect() and from_pool(AsyncConnectionPool) are native.
        self._async_native = pool is not None and not self._pools.owns_async
        self._listeners: dict[str, Listener] = {}  # query name -> its LISTEN thread
        self._defined: set[str] = set()  # definition hashes this object stored (console)
        self._group = Group(self._runner)  # group commit of the async storage's writes

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
            await backend._runner.arun("connect", lambda resent: _ops.ping())
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
        raise_parse_cache_limit: bool = True,
        partition: str | None = None,
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
        backend._setup(target, Options(None, None, pool.timeout, None, None, None, None),
                       schema, table_prefix, codec, auto_migrate, retry_timeout_secs,
                       lease_secs, raise_parse_cache_limit, pool=pool,
                       partition=partition)  # fmt: skip
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
        done = self._runner.run_direct("migrate", lambda resent: self._open(migrate=True))
        self._runner.ready = True
        return [f"{m.version:04d}_{m.name}" for m in done]

    def partition_tables(self) -> bool:
        """Convert the tables to the partitioned layout (``sayiir partition URL``).

        Runs, task executions and checkpoints become range-partitioned by month of the
        run's creation, and ``delete_finished`` then drops whole months instead of deleting
        rows (docs/postgres.md, "Partitioning"). Pending migrations are applied first. The
        conversion copies every row in one transaction, under an exclusive lock of the
        tables: nothing is half-converted if it fails, and every other process must be
        stopped meanwhile (and opened again afterwards). Returns ``False`` when the tables
        were partitioned already.

        >>> PostgresBackend("postgresql://localhost/sayiir").partition_tables()  # doctest: +SKIP
        True
        """
        from sayiir.backends.postgres._sql import migrations

        def op() -> _ops.Op[bool]:
            yield from _migrations.migrate(
                self._schema, self._prefix, migrations(), self._target.where
            )
            return (yield from _partition.convert(self._schema, self._prefix))

        converted = self._runner.run_direct("partition", lambda resent: op())
        self._runner.use_layout(True)
        self._runner.ready = True
        return converted

    def pending_migrations(self) -> list[tuple[str, str]]:
        """``(name, sql)`` for each migration not applied yet; applies nothing.

        Each ``sql`` is the complete script the migrator would run for that migration
        (transaction, advisory lock, body, version row), with names filled in: what
        ``sayiir migrate URL --dry-run`` prints.
        """
        from sayiir.backends.postgres._names import migration_lock_key
        from sayiir.backends.postgres._sql import migration_script, migrations

        plan = self._runner.run_direct(
            "inspect",
            lambda resent: _migrations.inspect(
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

    def _open(self, migrate: bool) -> _ops.Op[list[Migration]]:
        """First use: apply the migrations (or check them), then read the tables' layout and
        compile the queries for it; returns the migrations applied."""
        from sayiir.backends.postgres._sql import migrations

        where = self._target.where
        done: list[Migration] = []
        if migrate:
            done = yield from _migrations.migrate(self._schema, self._prefix, migrations(), where)
        else:
            yield from _migrations.verify(self._schema, self._prefix, migrations(), where)
        fresh = any(m.version == 1 for m in done)
        partitioned = yield from _partition.setup(
            self._schema, self._prefix, self._partition, fresh, migrate, where
        )
        self._runner.use_layout(partitioned)
        return done

    def _compiled(self) -> Compiled:
        return self._runner.compiled()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pools this backend opened (never a pool given to ``from_pool``)."""
        self._pools.closed = True
        self._stop_listening()
        self._pools.close()

    async def aclose(self) -> None:
        """Close the pools this backend opened; use this one from async code."""
        self._pools.closed = True
        if self._listeners:
            await asyncio.to_thread(self._stop_listening)
        await self._pools.aclose()

    def async_storage(self) -> AsyncPostgresStorage | ThreadedAsyncStorage:
        """The ``AsyncStorage`` form, used by ``CheckpointingRunner``.

        Native asyncio after ``connect()``/``from_pool(AsyncConnectionPool)``; otherwise
        the sync pool in threads, which works from any event loop.
        """
        if self._async_native:
            return AsyncPostgresStorage(self)
        return ThreadedAsyncStorage(self)

    # -- Storage (the sync runner over _storage's plans) ----------------------------------
    # -- generated by scripts/gen_storage.py from Storage: do not edit --

    def create_instance(self, record: InstanceRecord, *, replace: bool) -> InstanceRecord | None:
        return self._runner.run(
            *_storage.create_instance(record, replace, self.lease_secs, self._defined)
        )

    def take_over(
        self, instance_id: str, token: str | None, new_token: str
    ) -> InstanceRecord | None:
        return self._runner.run(*_storage.take_over(instance_id, token, new_token, self.lease_secs))

    def renew_lease(self, instance_id: str, token: str, *, release: bool = False) -> bool:
        return self._runner.run(*_storage.renew_lease(instance_id, token, release, self.lease_secs))

    def load(self, instance_id: str) -> RunState | None:
        return self._runner.run(*_storage.load(instance_id))

    def save_steps(
        self, instance_id: str, steps: Sequence[StepRecord], *, token: str | None = None
    ) -> ControlRequest | None:
        return self._runner.run(*_storage.save_steps(instance_id, steps, token, self.lease_secs))

    def record_attempt(
        self, instance_id: str, attempt: AttemptRecord, *, token: str | None = None
    ) -> ControlRequest | None:
        return self._runner.run(
            *_storage.record_attempt(instance_id, attempt, token, self.lease_secs)
        )

    def consume_signal(
        self, instance_id: str, signal_name: str, key: str, *, token: str | None = None
    ) -> bytes | None:
        return self._runner.run(
            *_storage.consume_signal(instance_id, signal_name, key, token, self.lease_secs)
        )

    def finish(
        self,
        instance_id: str,
        final: FinalState,
        steps: Sequence[StepRecord],
        *,
        token: str | None = None,
    ) -> ControlRequest | None:
        return self._runner.run(*_storage.finish(instance_id, final, steps, token))

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        return self._runner.run(*_storage.get_instance(instance_id))

    def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        return self._runner.run(*_storage.get_checkpoint(instance_id, key))

    def request_control(self, instance_id: str, request: ControlRequest) -> Status | None:
        return self._runner.run(*_storage.request_control(instance_id, request))

    def unpause(self, instance_id: str) -> Status | None:
        return self._runner.run(*_storage.unpause(instance_id))

    def send_signal(self, instance_id: str, signal_name: str, payload: bytes) -> Status | None:
        return self._runner.run(*_storage.send_signal(instance_id, signal_name, payload))

    def acquire_task_slot(
        self,
        task_id: str,
        limit: int,
        instance_id: str,
        step_key: str,
        owner: str,
        attempt: int | None,
    ) -> bool:
        return self._runner.run(
            *_storage.acquire_task_slot(task_id, limit, instance_id, step_key, owner, attempt)
        )

    def release_task_slot(self, task_id: str, instance_id: str, step_key: str) -> None:
        return self._runner.run(*_storage.release_task_slot(task_id, instance_id, step_key))

    def take_rate_token(
        self,
        task_id: str,
        bucket: str,
        n: int,
        per: float,
        now: float,
        instance_id: str,
        step_key: str,
    ) -> float:
        return self._runner.run(
            *_storage.take_rate_token(task_id, bucket, n, per, now, instance_id, step_key)
        )

    # -- end of generated code --

    # -- QueueStorage ----------------------------------------------------------------------

    def enqueue(self, instance_id: str, items: Sequence[QueueItem]) -> None:
        if items:
            self._runner.run("enqueue", lambda resent: _queue.enqueue(instance_id, items))

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
        return self._runner.run(
            "claim",
            lambda resent: _queue.claim(
                worker_id, definition_hashes, tags, limit, lease_secs, token=token, retry=resent
            ),
        )

    def next_due(self, definition_hashes: Sequence[str], tags: Sequence[str]) -> float | None:
        return self._runner.run("next_due", lambda resent: _queue.next_due(definition_hashes, tags))

    def heartbeat(self, claims: Sequence[Claim], lease_secs: float) -> list[Claim]:
        if not claims:
            return []
        return self._runner.run("heartbeat", lambda resent: _queue.heartbeat(claims, lease_secs))

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
        return self._runner.run(
            "advance",
            lambda resent: _queue.advance(
                claim,
                steps,
                final=final,
                enqueue=enqueue,
                next_item=next_item,
                release=release,
                lease_secs=lease_secs,
                token=token,
                retry=resent,
            ),
        )

    def finish_and_claim(
        self,
        claim: Claim,
        steps: Sequence[StepRecord],
        *,
        final: FinalState,
        enqueue: Sequence[QueueItem] = (),
        lease_secs: float = 300.0,
        then: ClaimAsk,
    ) -> tuple[ControlRequest | None, list[Claim]]:
        token = uuid4()
        return self._runner.run(
            "advance",
            lambda resent: _queue.finish_and_claim(
                claim, steps, final, enqueue, lease_secs, token, resent, then
            ),
        )

    def advance_gated(
        self,
        claim: Claim,
        steps: Sequence[StepRecord],
        *,
        enqueue: Sequence[QueueItem] = (),
        next_item: QueueItem,
        lease_secs: float = 300.0,
        gate: GateAsk,
    ) -> tuple[ControlRequest | None, Claim | None, GateAnswer | None]:
        token = uuid4()
        return self._runner.run(
            "advance",
            lambda resent: _task_limits.advance_gated(
                claim, steps, enqueue, next_item, lease_secs, token, resent, gate
            ),
        )

    def abandon(self, claim: Claim, error: str, *, retry_in: float) -> bool:
        return self._runner.run("abandon", lambda resent: _queue.abandon(claim, error, retry_in))

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when queue work may be ready; returns the unsubscribe function.

        A dedicated connection LISTENs on this schema and prefix's channel in a daemon
        thread. ``callback`` runs on that thread and must not block. It is also called
        after every (re)connection, since notifications sent meanwhile are lost.
        """
        listener = self._listening("listen", "workers find work by polling only")
        if listener is None:
            return _nothing
        return listener.add(lambda _payload: callback())

    def subscribe_changes(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        """Call ``callback(instance_id)`` when a run starts or its status changes (the web
        console's live updates); returns the unsubscribe function.

        Like ``subscribe``: a daemon thread LISTENs (on the changes channel, fed by a trigger
        of migration 0006); ``callback`` runs on it and must not block, and gets ``None``
        after every (re)connection, since changes made meanwhile are not announced.
        """
        listener = self._listening("listen_changes", "live views must poll")
        if listener is None:
            return _nothing
        return listener.add(callback)

    def _listening(self, query: str, fallback: str) -> Listener | None:
        """The LISTEN thread of ``query`` (started by its first subscriber), or None."""
        self._pools.check_open()
        with self._pools.lock:
            listener = self._listeners.get(query)
            if listener is None:
                if not self._target.conninfo:
                    logger.warning(
                        "%r: no conninfo to open a LISTEN connection with (the pool connects "
                        "through a function); %s",
                        self,
                        fallback,
                    )
                    return None
                from sayiir.backends.postgres._listen import Listener

                listener = Listener(
                    self._listen_connection, self._compiled().queries[query], self._target
                )
                self._listeners[query] = listener
        return listener

    def _listen_connection(self) -> Any:
        return driver().connect(self._target.conninfo, **self._pools.listen_kwargs())

    def _stop_listening(self) -> None:
        listeners, self._listeners = self._listeners, {}
        for listener in listeners.values():
            listener.close()

    # -- retention -------------------------------------------------------------------------

    def delete_finished(
        self,
        older_than_secs: float,
        batch_size: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete completed, failed and cancelled runs that ended over ``older_than_secs`` ago.

        Their checkpoints, task executions, queue entries and consumed signal events go
        with them. Deletes ``batch_size`` runs per statement, each batch its own transaction,
        until a batch comes back short; returns how many runs were deleted. The cutoff is
        taken once, from the database clock, when the call starts. ``progress(n)`` is called
        after each batch with the number of runs it deleted (the CLI draws a progress bar).
        """
        return _retention.delete_finished(self._runner, older_than_secs, batch_size, progress)

    def count_finished(self, older_than_secs: float) -> int:
        """How many runs ``delete_finished(older_than_secs)`` would delete now."""
        return _retention.count_finished(self._runner, older_than_secs)


def _nothing() -> None:
    """The unsubscribe function of a subscription that never listens."""
