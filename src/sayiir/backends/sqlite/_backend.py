"""``SqliteBackend``: durable storage in one SQLite file, for one machine.

It behaves exactly like the reference ``InMemoryBackend`` (the shared contract suite in
tests/contract checks it method by method); what it adds is that state survives the process,
a power cut (``synchronous=FULL``) and a ``kill -9``, and that several processes can share the
file. Every write method is one ``BEGIN IMMEDIATE`` transaction, so it is atomic across
processes; ``load`` is one read transaction, so it sees one consistent snapshot.

Consumed signals are kept (``consumed_at`` set) rather than deleted, as the PostgreSQL contract's
"consumed marker" has it: the row records when the run took the event, and the pending-signal
index only covers unconsumed rows, so lookups stay as fast as with deletion. They stay until
deleted (there is no retention command yet).

It is also a worker queue (``QueueStorage``, statements in ``_queue``): ``sayiir worker``
processes and ``WorkflowClient`` share one file on one machine, with no server. Claims are
fenced as on PostgreSQL; wake-ups across processes come from ``_wake.CommitWatcher``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sayiir.backends._closing import Closing
from sayiir.backends._sqlfiles import load_migrations, load_queries
from sayiir.backends._sqlrows import instance_params
from sayiir.backends.adapters import ThreadedAsyncStorage
from sayiir.backends.protocol import QueueStorage
from sayiir.backends.sqlite import _queue
from sayiir.backends.sqlite._connection import MIN_SQLITE_VERSION, Database
from sayiir.backends.sqlite._flow_control import SqliteDedupe, SqliteSchedules
from sayiir.backends.sqlite._migrate import migrate
from sayiir.backends.sqlite._queries import SqliteQueries
from sayiir.backends.sqlite._task_limits import SqliteTaskLimits, take_slot, take_start
from sayiir.backends.sqlite._wake import CommitWatcher
from sayiir.core.codec import Codec, JsonCodec
from sayiir.core.limits import ConcurrencyState
from sayiir.core.records import (
    ACTIVE,
    TERMINAL,
    AttemptRecord,
    AttemptState,
    Claim,
    ClaimAsk,
    ControlRequest,
    FinalState,
    InstanceRecord,
    QueueItem,
    RunState,
    Status,
    StepRecord,
    applied_request,
    check_lease_secs,
    control_decision,
    executes,
    fold_attempt,
    write_decision,
)
from sayiir.core.task_limits import GateAnswer, GateAsk, answer_gate
from sayiir.errors import (
    BackendError,
    InstanceNotFoundError,
    LeaseLostError,
    RunReplacedError,
)

__all__ = ["SqliteBackend"]

_PACKAGE = "sayiir.backends.sqlite"
_Q = load_queries(_PACKAGE)
_MIGRATIONS = load_migrations(f"{_PACKAGE}.migrations")
_SYNCHRONOUS = ("full", "normal")

# Hot queries, bound once (a missing name fails at import, not at the first call).
_SELECT_INSTANCE = _Q["select_instance"]
_INSERT_INSTANCE = _Q["insert_instance"]
_SELECT_CONTROL = _Q["select_control"]
_TOUCH = _Q["touch_instance"]
_FINISH = _Q["finish_instance"]
_UPSERT_CHECKPOINT = _Q["upsert_checkpoint"]
_UPSERT_COMPLETED = _Q["upsert_completed_execution"]
_FREE_STEP_SLOT = _Q["free_step_slot"]
_UPSERT_ATTEMPT = _Q["upsert_attempt"]
_SELECT_CHECKPOINTS = _Q["select_checkpoints"]
_SELECT_CHECKPOINT = _Q["select_checkpoint"]
_SELECT_OPEN_ATTEMPTS = _Q["select_open_attempts"]
_BEGIN_READ = _Q["begin_deferred"]

_Row = tuple[Any, ...]
R = TypeVar("R")


class SqliteBackend(
    Closing, SqliteQueries, SqliteSchedules, SqliteDedupe, SqliteTaskLimits, QueueStorage
):
    """Durable storage in one SQLite file (stdlib ``sqlite3``, WAL), safe for several processes.

    >>> from sayiir import Flow, run_durable_workflow
    >>> wf = Flow("double").then(lambda x: x * 2, name="double").build()
    >>> with SqliteBackend("runs.db") as backend:
    ...     status = run_durable_workflow(wf, "order-1", 42, backend=backend)
    >>> status.output
    84

    ``synchronous="full"`` (the default) syncs the WAL on every commit, so a committed
    checkpoint survives a power cut; ``"normal"`` is faster and survives a crash or ``kill -9``
    of the process, but the last commits may be lost on power loss or an OS crash. Another process
    holding the write lock is waited for up to ``busy_timeout_secs``, then ``BackendError``.
    ``lease_secs``: how long an execution holds a run without a write or a heartbeat (see
    ``Storage``); each process's clock decides, so keep the machine's clock in sync.

    Workers (``Worker(id, SqliteBackend(path))`` in several processes) claim queued tasks
    from the same file; see docs/workers.md.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: Codec | None = None,
        synchronous: str = "full",
        busy_timeout_secs: float = 30.0,
        lease_secs: float = 30.0,
    ) -> None:
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self.lease_secs = check_lease_secs(lease_secs)
        self._path = os.fsdecode(path)
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise BackendError(
                f"SqliteBackend needs SQLite {'.'.join(map(str, MIN_SQLITE_VERSION))} or later; "
                f"this Python links SQLite {sqlite3.sqlite_version}"
            )
        sync = synchronous.lower()
        if sync not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        if not busy_timeout_secs >= 0:
            raise ValueError(f"busy_timeout_secs must be >= 0, not {busy_timeout_secs!r}")
        self._db = Database(self._path, _Q, synchronous=sync, busy_timeout=busy_timeout_secs)
        self._defined: set[str] = set()  # definition hashes this object stored (0005)
        self._listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()
        self._watcher: CommitWatcher | None = None
        try:
            migrate(self._db, _Q, _MIGRATIONS)
        except BaseException:
            self._db.close()
            raise

    @property
    def path(self) -> str:
        """The database file, as given."""
        return self._path

    def __repr__(self) -> str:
        return f"SqliteBackend({self._path!r})"

    def async_storage(self) -> ThreadedAsyncStorage:
        """The asyncio form: each call runs in a worker thread, never on the event loop."""
        return ThreadedAsyncStorage(self)

    def close(self) -> None:
        """Close the connection; calls made afterwards raise ``BackendError``."""
        with self._listeners_lock:
            watcher, self._watcher = self._watcher, None
            self._listeners.clear()
        if watcher is not None:
            watcher.stop()
        self._db.close()

    # -- lifecycle -----------------------------------------------------------------------

    def create_instance(self, record: InstanceRecord, *, replace: bool) -> InstanceRecord | None:
        iid = record.instance_id
        params = instance_params(record)
        params["run_token"] = record.token
        params["lease_until"] = time.time() + self.lease_secs if executes(record) else None

        first = [QueueItem("", priority=record.priority)] if record.distributed else []
        stored = False

        def tx(cur: sqlite3.Cursor) -> InstanceRecord | None:
            nonlocal stored
            stored = self._store_definition(cur, record)
            ids = {"instance_id": iid}
            if not cur.execute(_INSERT_INSTANCE, params).rowcount:
                if not replace:
                    return self._record(cur.execute(_SELECT_INSTANCE, ids).fetchone())
                # Buffered signals stay: they may have been sent for the new run. Queue
                # entries go with the old row (ON DELETE CASCADE).
                cur.execute(_Q["delete_instance_checkpoints"], ids)
                cur.execute(_Q["delete_instance_executions"], ids)
                cur.execute(_Q["delete_instance"], ids)
                cur.execute(_INSERT_INSTANCE, params)
            concurrency = None
            if record.concurrency_key is not None:
                concurrency = (record.concurrency_key, record.concurrency_limit)
            _queue.enqueue(_Q, cur, iid, record.definition_hash, first, time.time(), concurrency)
            return None

        found = self._db.write(f"create_instance({iid!r})", tx)
        if stored:
            self._defined.add(record.definition_hash)
        if found is None and first:
            self._notify()
        return found

    def load(self, instance_id: str) -> RunState | None:
        ids = {"instance_id": instance_id}

        def tx(cur: sqlite3.Cursor) -> RunState | None:
            row = cur.execute(_SELECT_INSTANCE, ids).fetchone()
            if row is None:
                return None
            checkpoints: dict[str, bytes] = dict(cur.execute(_SELECT_CHECKPOINTS, ids).fetchall())
            attempts: dict[str, AttemptState] = {}
            for a in cur.execute(_SELECT_OPEN_ATTEMPTS, ids).fetchall():
                fold_attempt(attempts.setdefault(a[0], AttemptState()), AttemptRecord(*a))
            return RunState(self._record(row), checkpoints, attempts)

        return self._db.run(f"load({instance_id!r})", tx, _BEGIN_READ)

    def take_over(
        self, instance_id: str, token: str | None, new_token: str
    ) -> InstanceRecord | None:
        def tx(cur: sqlite3.Cursor) -> InstanceRecord | None:
            now = time.time()
            params = {
                "instance_id": instance_id,
                "token": token,
                "new_token": new_token,
                "now": now,
                "lease_until": now + self.lease_secs,
            }
            if not cur.execute(_Q["take_over"], params).rowcount:
                return None
            return self._record(cur.execute(_SELECT_INSTANCE, params).fetchone())

        return self._db.write(f"take_over({instance_id!r})", tx)

    def renew_lease(self, instance_id: str, token: str, *, release: bool = False) -> bool:
        def tx(cur: sqlite3.Cursor) -> bool:
            now = time.time()
            params = {
                "instance_id": instance_id,
                "token": token,
                "lease_until": now if release else now + self.lease_secs,
            }
            return bool(cur.execute(_Q["renew_lease"], params).rowcount)

        return self._db.write(f"renew_lease({instance_id!r})", tx)

    def save_steps(
        self, instance_id: str, steps: Sequence[StepRecord], *, token: str | None = None
    ) -> ControlRequest | None:
        def tx(cur: sqlite3.Cursor) -> ControlRequest | None:
            now = time.time()
            pending, write = self._touch(cur, instance_id, now, token)
            if write:
                _store_steps(cur, instance_id, steps, now)
            return pending

        return self._db.write(f"save_steps({instance_id!r})", tx)

    def record_attempt(
        self, instance_id: str, attempt: AttemptRecord, *, token: str | None = None
    ) -> ControlRequest | None:
        a = attempt
        params = {
            "instance_id": instance_id,
            "key": a.key,
            "task_id": a.task_id,
            "attempt": a.attempt,
            "status": a.status,
            "worker_id": a.worker_id,
            "started_at": a.started_at,
            "finished_at": a.finished_at,
            "duration_ms": _duration_ms(a.started_at, a.finished_at),
            "error": a.error,
            "next_retry_at": a.next_retry_at,
            "deadline": a.deadline,
        }

        def tx(cur: sqlite3.Cursor) -> ControlRequest | None:
            pending, write = self._touch(cur, instance_id, time.time(), token)
            if write:
                cur.execute(_UPSERT_ATTEMPT, params)
            return pending

        return self._db.write(f"record_attempt({instance_id!r})", tx)

    def consume_signal(
        self, instance_id: str, signal_name: str, key: str, *, token: str | None = None
    ) -> bytes | None:
        ids = {"instance_id": instance_id, "signal_name": signal_name}

        def tx(cur: sqlite3.Cursor) -> bytes | None:
            row = _fence(cur.execute(_SELECT_CONTROL, ids).fetchone(), instance_id, token)
            if self._decision(row, instance_id) == "skip":
                return None  # a cancelled run takes no event; the engine's finish learns why
            done = cur.execute(_SELECT_CHECKPOINT, {"instance_id": instance_id, "key": key})
            found = done.fetchone()
            if found is not None:  # a repeated call: the event was consumed already
                consumed: bytes = found[0]
                return consumed
            row = cur.execute(_Q["next_signal"], ids).fetchone()
            if row is None:
                return None
            signal_id, payload = row
            event: bytes = payload
            now = time.time()
            cur.execute(_Q["mark_signal_consumed"], {"id": signal_id, "now": now})
            cur.execute(_UPSERT_CHECKPOINT, _checkpoint_params(instance_id, key, payload, now))
            self._touch(cur, instance_id, now, token)
            return event

        return self._db.write(f"consume_signal({instance_id!r}, {signal_name!r})", tx)

    def finish(
        self,
        instance_id: str,
        final: FinalState,
        steps: Sequence[StepRecord],
        *,
        token: str | None = None,
    ) -> ControlRequest | None:
        status = Status(final.status)

        def tx(cur: sqlite3.Cursor) -> ControlRequest | None:
            now = time.time()
            params = _final_params(instance_id, final, now)
            row = _fence(cur.execute(_SELECT_CONTROL, params).fetchone(), instance_id, token)
            decision = self._decision(row, instance_id, status)
            if decision != "skip":
                _store_steps(cur, instance_id, steps, now)
            if decision != "write":
                return _applied(instance_id, row)
            _write_final(cur, row, params)
            return None

        return self._db.write(f"finish({instance_id!r})", tx)

    # -- reads ---------------------------------------------------------------------------

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        def tx(cur: sqlite3.Cursor) -> InstanceRecord | None:
            row = cur.execute(_SELECT_INSTANCE, {"instance_id": instance_id}).fetchone()
            return None if row is None else self._record(row)

        return self._db.run(f"get_instance({instance_id!r})", tx, None)

    def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        def tx(cur: sqlite3.Cursor) -> bytes | None:
            row = cur.execute(_SELECT_CHECKPOINT, {"instance_id": instance_id, "key": key})
            found = row.fetchone()
            return None if found is None else found[0]

        return self._db.run(f"get_checkpoint({instance_id!r}, {key!r})", tx, None)

    # -- control -------------------------------------------------------------------------

    def request_control(self, instance_id: str, request: ControlRequest) -> Status | None:
        params = {
            "instance_id": instance_id,
            "kind": request.kind,
            "reason": request.reason,
            "by": request.by,
        }

        def tx(cur: sqlite3.Cursor) -> Status | None:
            row = cur.execute(_SELECT_CONTROL, params).fetchone()
            if row is None:
                return None
            found = self._status(row[0], instance_id)
            decision = control_decision(found, request.kind)
            if decision == "apply":
                query = _Q["apply_cancel"] if request.kind == "cancel" else _Q["apply_pause"]
                cur.execute(query, {**params, "now": time.time()})
                if request.kind == "cancel" and row[8]:
                    _queue.delete_run(_Q, cur, instance_id)
            elif decision == "request":
                cur.execute(_Q["store_request"], params)  # never downgrades a pending cancel
            return found

        return self._db.write(f"request_control({instance_id!r})", tx)

    def unpause(self, instance_id: str) -> Status | None:
        ids = {"instance_id": instance_id}
        woke: list[bool] = []

        def tx(cur: sqlite3.Cursor) -> Status | None:
            row = cur.execute(_SELECT_CONTROL, ids).fetchone()
            if row is None:
                return None
            found = self._status(row[0], instance_id)
            if found is Status.PAUSED:
                now = time.time()
                cur.execute(_Q["unpause_instance"], {**ids, "now": now})
                if row[8]:
                    woke.append(_queue.enqueue(_Q, cur, instance_id, row[9], [_CONTINUE], now))
            elif row[4] == "pause":
                cur.execute(_Q["clear_request"], ids)
                return Status.PAUSED
            return found

        found = self._db.write(f"unpause({instance_id!r})", tx)
        if woke:
            self._notify()
        return found

    def send_signal(self, instance_id: str, signal_name: str, payload: bytes) -> Status | None:
        woke: list[bool] = []

        def tx(cur: sqlite3.Cursor) -> Status | None:
            row = cur.execute(_SELECT_CONTROL, {"instance_id": instance_id}).fetchone()
            found = None if row is None else self._status(row[0], instance_id)
            now = time.time()
            if found not in TERMINAL:
                params = {
                    "instance_id": instance_id,
                    "signal_name": signal_name,
                    "payload": payload,
                    "now": now,
                }
                cur.execute(_Q["insert_signal"], params)
            if row is not None and row[8] and found in ACTIVE:  # wake a worker to consume it
                woke.append(_queue.enqueue(_Q, cur, instance_id, row[9], [_CONTINUE], now))
            return found

        found = self._db.write(f"send_signal({instance_id!r}, {signal_name!r})", tx)
        if woke:
            self._notify()
        return found

    # -- worker queue (QueueStorage; statements in _queue) ---------------------------------

    def enqueue(self, instance_id: str, items: Sequence[QueueItem]) -> None:
        def tx(cur: sqlite3.Cursor) -> bool:
            row = cur.execute(_SELECT_CONTROL, {"instance_id": instance_id}).fetchone()
            return row is not None and _queue.enqueue(
                _Q, cur, instance_id, row[9], items, time.time()
            )

        if self._db.write(f"enqueue({instance_id!r})", tx):
            self._notify()

    def claim(
        self,
        worker_id: str,
        definition_hashes: Sequence[str],
        tags: Sequence[str],
        limit: int,
        lease_secs: float,
    ) -> list[Claim]:
        def tx(cur: sqlite3.Cursor) -> list[Claim]:
            return _queue.claim(_Q, cur, worker_id, definition_hashes, tags, limit, lease_secs)

        # An idle worker looks first without the write lock, which busy workers need.
        if not self._db.run("claim", lambda cur: _queue.claimable(
                _Q, cur, definition_hashes, tags), None):  # fmt: skip
            return []
        return self._db.write("claim", tx)

    def concurrency_state(self, instance_id: str) -> ConcurrencyState | None:
        def tx(cur: sqlite3.Cursor) -> ConcurrencyState | None:
            return _queue.concurrency_state(_Q, cur, instance_id)

        return self._db.run("concurrency_state", tx, None)

    def next_due(self, definition_hashes: Sequence[str], tags: Sequence[str]) -> float | None:
        def tx(cur: sqlite3.Cursor) -> float | None:
            return _queue.next_due(_Q, cur, definition_hashes, tags)

        return self._db.run("next_due", tx, None)

    def heartbeat(self, claims: Sequence[Claim], lease_secs: float) -> list[Claim]:
        if not claims:
            return []

        def tx(cur: sqlite3.Cursor) -> list[Claim]:
            return _queue.heartbeat(_Q, cur, claims, lease_secs)

        return self._db.write("heartbeat", tx)

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
        return self._queue_write(
            f"advance({claim.instance_id!r}, {claim.key!r})",
            lambda cur, woke: self._advance(
                cur, claim, steps, final, enqueue, next_item, release, lease_secs, woke
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
        iid, key = claim.instance_id, next_item.key

        def tx(
            cur: sqlite3.Cursor, woke: list[bool]
        ) -> tuple[ControlRequest | None, Claim | None, GateAnswer | None]:
            request, moved = self._advance(
                cur, claim, steps, None, enqueue, next_item, False, lease_secs, woke
            )
            if moved is None or moved.key != key:
                return request, moved, None
            attempt = moved.attempt
            answer = answer_gate(
                gate,
                lambda limit: take_slot(cur, gate.task_id, limit, iid, key, key, attempt),
                lambda a: take_start(cur, a.task_id, a.bucket or "", a.n, a.per, a.now, iid, key),
            )
            return request, moved, answer

        return self._queue_write(f"advance({iid!r}, {claim.key!r}) and its limits", tx)

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
        """``ChainedQueueStorage.finish_and_claim``: the final advance and the worker's next
        claim in one write transaction (one sync of the file instead of two)."""

        def tx(cur: sqlite3.Cursor, woke: list[bool]) -> tuple[ControlRequest | None, list[Claim]]:
            request, _ = self._advance(
                cur, claim, steps, final, enqueue, None, False, lease_secs, woke
            )
            taken = _queue.claim(
                _Q, cur, then.worker_id, then.definition_hashes, then.tags, 1, lease_secs
            )
            return request, taken

        return self._queue_write(f"finish_and_claim({claim.instance_id!r}, {claim.key!r})", tx)

    def _queue_write(self, what: str, fn: Callable[[sqlite3.Cursor, list[bool]], R]) -> R:
        """A write transaction of the queue: ``fn(cursor, woke)`` appends to ``woke`` whether
        it queued work; idle workers are told once it committed."""
        woke: list[bool] = []
        result = self._db.write(what, lambda cur: fn(cur, woke))
        if any(woke):
            self._notify()
        return result

    def _advance(
        self, cur: sqlite3.Cursor, claim: Claim, steps: Sequence[StepRecord],
        final: FinalState | None, enqueue: Sequence[QueueItem], next_item: QueueItem | None,
        release: bool, lease_secs: float, woke: list[bool],
    ) -> tuple[ControlRequest | None, Claim | None]:  # fmt: skip
        """``advance`` inside the caller's write transaction; appends to ``woke`` whether
        it queued work to announce."""
        iid = claim.instance_id
        if not _queue.held(_Q, cur, claim):
            raise LeaseLostError(
                f"worker '{claim.worker_id}' lost its claim on task '{claim.key}' of "
                f"instance '{iid}' (attempt {claim.attempt}); its result was not written"
            )
        now = time.time()
        row = cur.execute(_SELECT_CONTROL, {"instance_id": iid}).fetchone()
        if final is not None and self._decision(row, iid, Status(final.status)) != "write":
            # An applied cancel or pause stays; the claim is given up.
            if final.status in TERMINAL:
                _queue.delete_run(_Q, cur, iid)
            else:
                _queue.delete_entry(_Q, cur, claim)
            return _applied(iid, row), None
        _store_steps(cur, iid, steps, now)
        renew = next_item is not None and next_item.key == claim.key
        if final is not None or release or renew:
            # Given up before the new entries go in: a worker that holds "" and parks
            # queues "" again (due at the wake-up time); that entry must survive.
            _queue.delete_entry(_Q, cur, claim)
        woke.append(_queue.enqueue(_Q, cur, iid, row[9], enqueue, now))
        if final is not None:
            _write_final(cur, row, _final_params(iid, final, now))
            return None, None
        request, _ = self._touch(cur, iid, now, None)
        if next_item is None:
            return request, None if release else claim
        taken = _queue.take_next(_Q, cur, claim, next_item, row[9], lease_secs)
        if taken is None:  # the claim is kept (InMemoryBackend.advance)
            return request, None if release or renew else claim
        if not release and not renew:
            _queue.delete_entry(_Q, cur, claim)
        return request, taken

    def abandon(self, claim: Claim, error: str, *, retry_in: float) -> bool:
        def tx(cur: sqlite3.Cursor) -> bool:
            return _queue.release(_Q, cur, claim, error, retry_in)

        given_up = self._db.write(f"abandon({claim.instance_id!r}, {claim.key!r})", tx)
        if given_up and retry_in <= 0:
            self._notify()
        return given_up

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when queue work may be ready: at once for this backend's own
        writes, and within a few milliseconds of a commit by another process on the file
        (``CommitWatcher``). ``callback`` must not block. Returns the unsubscribe function."""
        with self._listeners_lock:
            self._listeners.append(callback)
            if self._watcher is None and self._path != ":memory:":
                self._watcher = CommitWatcher(self._path, _Q["pragma_data_version"], self._notify)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)
                watcher = self._watcher if not self._listeners else None
                if watcher is not None:
                    self._watcher = None
            if watcher is not None:
                watcher.stop()

        return unsubscribe

    def _notify(self) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    # -- helpers -------------------------------------------------------------------------

    def _touch(
        self, cur: sqlite3.Cursor, instance_id: str, now: float, token: str | None
    ) -> tuple[ControlRequest | None, bool]:
        """A write by the executing engine (``InMemoryBackend._touch``): mark the run running
        unless a cancel/pause was applied meanwhile, renew the execution's lease; return what
        the engine must obey, and whether the write may store anything (not on a cancelled
        run; a finished one raises ``RunFinishedError``)."""
        row = _fence(cur.execute(_SELECT_CONTROL, {"instance_id": instance_id}).fetchone(),
                     instance_id, token)  # fmt: skip
        if self._decision(row, instance_id) == "skip":
            return _applied(instance_id, row), False
        lease_until = None if token is None else now + self.lease_secs
        cur.execute(_TOUCH, {"instance_id": instance_id, "now": now, "lease_until": lease_until})
        applied = _applied(instance_id, row)
        if applied is not None:
            return applied, True
        kind, req_reason, req_by = row[4:7]
        return (None if kind is None else ControlRequest(kind, req_reason, req_by)), True

    def _decision(self, row: _Row, instance_id: str, final: Status | None = None) -> str:
        """``write_decision`` for the ``select_control`` row; raise on a finished run."""
        return write_decision(instance_id, self._status(row[0], instance_id), final)

    def _status(self, value: str, instance_id: str) -> Status:
        try:
            return Status(value)
        except ValueError:
            raise BackendError(
                f"SQLite database {self._path!r}: instance {instance_id!r} has an unknown "
                f"status {value!r} (a corrupt row, or written by a newer sayiir)"
            ) from None

    def _record(self, row: _Row) -> InstanceRecord:
        return InstanceRecord(
            instance_id=row[0],
            workflow_id=row[1],
            definition_hash=row[2],
            status=self._status(row[3], row[0]),
            input=b"" if row[4] is None else row[4],  # a corrupt NULL fails decoding, not here
            output=row[5],
            error=row[6],
            reason=row[7],
            cancelled_by=row[8],
            paused_by=row[9],
            wake_at=row[10],
            park_node=row[11],
            signal_name=row[12],
            request=None if row[13] is None else ControlRequest(row[13], row[14], row[15]),
            created_at=row[16],
            updated_at=row[17],
            completed_at=row[18],
            distributed=bool(row[19]),
            token=row[20],
            lease_until=row[21],
            traceparent=row[22],
        )


_CONTINUE = QueueItem("")  # a worker resumes the run (a signal arrived, it was unpaused)


def _final_params(instance_id: str, final: FinalState, now: float) -> dict[str, Any]:
    """The parameters of ``finish_instance``: the status rules of ``records`` as flags."""
    status = Status(final.status)
    stopped = status is Status.CANCELLED or status is Status.PAUSED
    return {
        "instance_id": instance_id,
        "status": status.value,
        "output": final.output,
        "error": final.error,
        "wake_at": final.wake_at,
        "park_node": final.park_node,
        "signal_name": final.signal_name,
        "now": now,
        "reason": final.reason,
        "by": final.by,
        "stopped": stopped,
        "cancelled": status is Status.CANCELLED,
        "paused": status is Status.PAUSED,
        "terminal": status in TERMINAL,
        "clear_request": stopped or status in TERMINAL,
    }


def _write_final(cur: sqlite3.Cursor, control: _Row, params: dict[str, Any]) -> None:
    """Store the final state; a finished run submitted for workers loses its queue entries."""
    cur.execute(_FINISH, params)
    if params["terminal"] and control[8]:
        _queue.delete_run(_Q, cur, params["instance_id"])


def _applied(instance_id: str, row: _Row) -> ControlRequest | None:
    """The applied cancel or pause of a ``select_control`` row (``applied_request``)."""
    status, reason, cancelled_by, paused_by = row[:4]
    if status != "cancelled" and status != "paused":
        return None
    stopped = InstanceRecord(
        instance_id, "", "", Status(status), b"", reason=reason,
        cancelled_by=cancelled_by, paused_by=paused_by,
    )  # fmt: skip
    return applied_request(stopped)


def _fence(control: _Row | None, instance_id: str, token: str | None) -> _Row:
    """The ``select_control`` row of the instance a write goes to; raise when there is none,
    or when it belongs to another run than ``token``'s (``InMemoryBackend._get``)."""
    if control is None:
        raise InstanceNotFoundError(instance_id)
    stored = control[7]
    if token is not None and stored is not None and stored != token:
        raise RunReplacedError(instance_id)
    return control


def _checkpoint_params(instance_id: str, key: str, output: bytes, now: float) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "key": key,
        "output": output,
        "size": len(output),
        "now": now,
    }


def _store_steps(
    cur: sqlite3.Cursor, instance_id: str, steps: Sequence[StepRecord], now: float
) -> None:
    """Checkpoints for every step; a 'completed' execution row for each real task (markers,
    with ``task_id`` None, are checkpoints only); the task slots the steps free."""
    if not steps:
        return
    cur.executemany(
        _UPSERT_CHECKPOINT, [_checkpoint_params(instance_id, s.key, s.output, now) for s in steps]
    )
    executions = [
        {
            "instance_id": instance_id,
            "key": s.key,
            "task_id": s.task_id,
            "attempt": s.attempt,
            "worker_id": s.worker_id,
            "started_at": s.started_at,
            "finished_at": s.finished_at,
            "duration_ms": _duration_ms(s.started_at, s.finished_at),
        }
        for s in steps
        if s.task_id is not None
    ]
    if executions:
        cur.executemany(_UPSERT_COMPLETED, executions)
    freed = [{"instance_id": instance_id, "key": s.key} for s in steps if s.frees_slot]
    if freed:
        cur.executemany(_FREE_STEP_SLOT, freed)


def _duration_ms(started_at: float, finished_at: float | None) -> float | None:
    if finished_at is None or not started_at or not finished_at:
        return None
    return (finished_at - started_at) * 1000.0
