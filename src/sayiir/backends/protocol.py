"""The storage protocol every backend implements.

Methods are domain operations, not SQL: an in-memory dict, SQLite and
PostgreSQL implement them naturally. Each method is atomic: it either happens
completely or not at all, so a crash never leaves a run half-written.

The engine (``sayiir.engine``) depends only on this module and
``sayiir.core.records``; it never imports a concrete backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from sayiir.core.codec import Codec
from sayiir.core.limits import ConcurrencyState
from sayiir.core.queries import (
    AuditEntry,
    DefinitionInfo,
    QueueStats,
    RunDetail,
    RunFilter,
    RunPage,
    RunSort,
    StatusCounts,
)
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
)
from sayiir.core.schedules import ScheduleRecord
from sayiir.core.task_limits import GateAnswer, GateAsk, TaskWait

__all__ = [
    "AsyncStorage",
    "AsyncTaskLimitStorage",
    "ConcurrencyStorage",
    "DedupeStorage",
    "EngineStorage",
    "QueueStorage",
    "RunQueries",
    "ScheduleStorage",
    "Storage",
    "TaskLimitStorage",
    "TaskWaitStorage",
]


@runtime_checkable
class Storage(Protocol):
    """Synchronous storage operations (thread-safe: fork branches call them concurrently).

    One execution of a run at a time: the run stores the token of the execution that owns
    it (``InstanceRecord.token``, set by ``create_instance``, replaced by ``take_over``) and
    that execution's lease (``lease_until``, ``lease_secs`` long). The four writes of an
    executing engine (``save_steps``, ``record_attempt``, ``consume_signal``, ``finish``)
    carry its ``token``: when the stored run has another token (a resume took it over, or
    ``create_instance(replace=True)`` started a new run), the write changes nothing and
    raises ``RunReplacedError``. ``token=None``, or a stored run without one, skips the
    check. Each accepted checkpoint write renews the lease; ``finish`` ends it.

    Final states are final (``write_decision``): on a completed or failed run these writes
    change nothing and raise ``RunFinishedError``; on a cancelled run they change nothing
    and return the cancel; on a paused run they store checkpoints but leave it paused.
    """

    codec: Codec
    # How long an execution holds a run without writing (seconds); see take_over.
    lease_secs: float

    def create_instance(self, record: InstanceRecord, *, replace: bool) -> InstanceRecord | None:
        """Insert a new instance; return ``None`` when inserted.

        ``record.token`` is stored as given (the engine always sets one; a backend may
        store one of its own when it is ``None``).

        If the id exists: with ``replace=False`` return the existing record and
        change nothing; with ``replace=True`` atomically delete the old instance
        (checkpoints, attempts, pending requests, but *not* buffered signals) and
        insert the new one, returning ``None``.

        A ``running`` record that is not ``distributed`` is an execution starting: it gets
        the lease (``lease_until`` = now + ``lease_secs``; ``record.lease_until`` is ignored).
        """
        ...

    def take_over(
        self, instance_id: str, token: str | None, new_token: str
    ) -> InstanceRecord | None:
        """Make ``new_token``'s execution the owner of the run, atomically, if it may run.

        Only when the stored token is still ``token`` (the one the caller loaded), the run is
        active (running, waiting, awaiting a signal) and no other execution holds a live
        lease. Then the run gets ``new_token``, a lease, and the status ``running``; the
        record as stored now is returned. Otherwise nothing changes and ``None`` is returned.
        """
        ...

    def renew_lease(self, instance_id: str, token: str, *, release: bool = False) -> bool:
        """Extend the lease of ``token``'s execution (``release``: end it now, so a resume
        may take the run over at once). False when that execution no longer owns a
        running run (it was taken over, or the run parked or finished)."""
        ...

    def load(self, instance_id: str) -> RunState | None:
        """The instance record, all its checkpoints and attempt summaries, in one read."""
        ...

    def save_steps(
        self, instance_id: str, steps: Sequence[StepRecord], *, token: str | None = None
    ) -> ControlRequest | None:
        """Store checkpoints (and their task executions), mark the instance running.

        Returns the pending cancel/pause request, if any, so the engine needs no
        separate read to check for one before the next task.
        """
        ...

    def record_attempt(
        self, instance_id: str, attempt: AttemptRecord, *, token: str | None = None
    ) -> ControlRequest | None:
        """Store a started (with deadline) or failed task attempt; return the pending request.

        There is one record per (key, attempt): a later record replaces an earlier one.
        """
        ...

    def consume_signal(
        self, instance_id: str, signal_name: str, key: str, *, token: str | None = None
    ) -> bytes | None:
        """Atomically pop the oldest buffered event and store it as checkpoint ``key``.

        Idempotent per ``key``: if that checkpoint exists, return it and pop nothing.
        """
        ...

    def finish(
        self,
        instance_id: str,
        final: FinalState,
        steps: Sequence[StepRecord],
        *,
        token: str | None = None,
    ) -> ControlRequest | None:
        """Store the final (terminal or parked) state, with the last checkpoints if any.

        Clears the pending request when the final status applies it, and the lease. Returns
        ``None`` when written; the applied cancel or pause when the run was stopped
        meanwhile and ``final`` was not written (``write_decision``).
        """
        ...

    def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    def get_checkpoint(self, instance_id: str, key: str) -> bytes | None: ...

    def request_control(self, instance_id: str, request: ControlRequest) -> Status | None:
        """Cancel/pause: apply per ``control_decision``; return the status found (None: unknown).

        ``"apply"`` sets the status now (cancelled/paused, with reason and by);
        ``"request"`` stores the request for the executing engine; ``"noop"`` and
        ``"reject"`` change nothing (the caller raises for ``"reject"``).
        """
        ...

    def unpause(self, instance_id: str) -> Status | None:
        """Turn a paused instance back into running (not executed). Return the status found."""
        ...

    def send_signal(self, instance_id: str, signal_name: str, payload: bytes) -> Status | None:
        """Append an event to the FIFO of (instance, name); return the instance status found.

        The instance need not exist yet (``None``: the event waits for it). An
        event for a finished instance (completed, failed, cancelled) is not stored.
        """
        ...

    def async_storage(self) -> AsyncStorage:
        """The same storage for the asyncio driver (``CheckpointingRunner``)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncStorage(Protocol):
    """The same operations for the asyncio driver (``CheckpointingRunner``), awaited.

    Generated from ``Storage`` (``scripts/gen_storage.py``; ``scripts/check`` fails when
    they differ): every ``Storage`` operation, with the same name, parameters and result.
    """

    codec: Codec
    lease_secs: float

    # -- generated by scripts/gen_storage.py from Storage: do not edit --

    async def create_instance(
        self, record: InstanceRecord, *, replace: bool
    ) -> InstanceRecord | None: ...

    async def take_over(
        self, instance_id: str, token: str | None, new_token: str
    ) -> InstanceRecord | None: ...

    async def renew_lease(self, instance_id: str, token: str, *, release: bool = False) -> bool: ...

    async def load(self, instance_id: str) -> RunState | None: ...

    async def save_steps(
        self, instance_id: str, steps: Sequence[StepRecord], *, token: str | None = None
    ) -> ControlRequest | None: ...

    async def record_attempt(
        self, instance_id: str, attempt: AttemptRecord, *, token: str | None = None
    ) -> ControlRequest | None: ...

    async def consume_signal(
        self, instance_id: str, signal_name: str, key: str, *, token: str | None = None
    ) -> bytes | None: ...

    async def finish(
        self,
        instance_id: str,
        final: FinalState,
        steps: Sequence[StepRecord],
        *,
        token: str | None = None,
    ) -> ControlRequest | None: ...

    async def get_instance(self, instance_id: str) -> InstanceRecord | None: ...

    async def get_checkpoint(self, instance_id: str, key: str) -> bytes | None: ...

    async def request_control(self, instance_id: str, request: ControlRequest) -> Status | None: ...

    async def unpause(self, instance_id: str) -> Status | None: ...

    async def send_signal(
        self, instance_id: str, signal_name: str, payload: bytes
    ) -> Status | None: ...

    # -- end of generated code --

    async def aclose(self) -> None: ...


@runtime_checkable
class TaskLimitStorage(Protocol):
    """Task limits (``@task(max_concurrent=..., rate_limit=...)``, ``sayiir.core.task_limits``),
    shared by every process of the storage. The engine asks before a task body runs.

    A protocol of its own, not part of ``Storage``: a third-party storage without these
    operations still runs every workflow without task limits (one with limits is refused).
    """

    def acquire_task_slot(
        self,
        task_id: str,
        limit: int,
        instance_id: str,
        step_key: str,
        owner: str,
        attempt: int | None,
    ) -> bool:
        """Take one of the ``limit`` slots of ``task_id`` for step ``step_key`` of the run
        (a step holding one keeps it): True when taken. A slot is free when nobody holds it,
        or when its holder is gone: held for an in-process execution (``attempt`` None), the
        slot lives while that execution (token ``owner``) holds the run's lease; held for a
        worker, while claim ``attempt`` of the queue entry ``owner`` is held. False (nothing
        taken) records that the step waits for the slot (``TaskWaitStorage.task_wait``); True
        forgets it. Racing callers never hold more than ``limit`` slots together."""
        ...

    def release_task_slot(self, task_id: str, instance_id: str, step_key: str) -> None:
        """Give back the slot of ``task_id`` held by step ``step_key`` of the run (none:
        nothing happens). A checkpoint stored with ``StepRecord.frees_slot`` (by
        ``save_steps``, ``finish`` or ``advance``) gives its step's slot back in the same
        write, without this call."""
        ...

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
        """Record a start of ``task_id`` in ``bucket`` at ``now`` when fewer than ``n`` starts
        of the bucket lie in the window ``[now - per, now]``, and return 0.0; else record
        nothing but the step's wait and return the seconds until a start fits
        (``core.task_limits.rate_wait``). Racing callers never put more than ``n`` starts in
        one window."""
        ...


@runtime_checkable
class AsyncTaskLimitStorage(Protocol):
    """``TaskLimitStorage`` for the asyncio driver, awaited (generated from it)."""

    # -- generated by scripts/gen_storage.py from Storage: do not edit --

    async def acquire_task_slot(
        self,
        task_id: str,
        limit: int,
        instance_id: str,
        step_key: str,
        owner: str,
        attempt: int | None,
    ) -> bool: ...

    async def release_task_slot(self, task_id: str, instance_id: str, step_key: str) -> None: ...

    async def take_rate_token(
        self,
        task_id: str,
        bucket: str,
        n: int,
        per: float,
        now: float,
        instance_id: str,
        step_key: str,
    ) -> float: ...

    # -- end of generated code --


@runtime_checkable
class TaskWaitStorage(Protocol):
    """What an operator reads about task limits (``WorkflowClient.waiting_reason``)."""

    def task_wait(self, instance_id: str, now: float) -> TaskWait | None:
        """What a step of the run waits for (a slot or a rate-limit start), with the live
        holders of the slots; ``None`` when no step of it waits."""
        ...


@runtime_checkable
class QueueStorage(Storage, Protocol):
    """What distributed workers need on top of ``Storage``: a fenced queue of runnable points.

    Every runnable point of a worker-run instance (a ready task, a resumable
    timer or signal wait) is a queue entry. Workers claim entries with a lease;
    every write a worker makes for an entry carries its ``Claim`` and is refused
    (``LeaseLostError``, nothing written) when the claim is no longer current.
    """

    def enqueue(self, instance_id: str, items: Sequence[QueueItem]) -> None:
        """Add entries, skipping keys already queued or already checkpointed."""
        ...

    def claim(
        self,
        worker_id: str,
        definition_hashes: Sequence[str],
        tags: Sequence[str],
        limit: int,
        lease_secs: float,
    ) -> list[Claim]:
        """Claim up to ``limit`` available entries (highest priority first, then oldest).

        Entries whose lease expired are available again (with ``attempt + 1``).
        Only entries of the given definitions, whose tags are all in ``tags``,
        of instances that are neither paused nor finished, are claimed. Each claim's
        ``last_error`` says why the entry's previous claim ended without an outcome: its
        lease expired (``records.lease_expired``), or the error given to ``abandon``.
        """
        ...

    def next_due(self, definition_hashes: Sequence[str], tags: Sequence[str]) -> float | None:
        """Seconds until the earliest unclaimed entry that ``claim`` would take falls due
        (a timer, a retry backoff); ``None`` when none is waiting. An idle worker sleeps
        that long instead of a whole poll interval: nothing announces the passage of time.
        """
        ...

    def heartbeat(self, claims: Sequence[Claim], lease_secs: float) -> list[Claim]:
        """Extend the leases; return the claims that were lost (to be abandoned)."""
        ...

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
        """One fenced write: checkpoints and new queue entries, under ``claim``.

        The claim is kept (a checkpoint mid-path), unless: ``next_item`` is given
        (the claim moves to it, the same worker runs it next: a new entry claimed at
        once, or its queued entry when due and never claimed, such as a fork branch no
        worker took yet; when that key is checkpointed, or its entry is claimed, not due
        or was claimed before, nothing is taken and the claim is kept), ``final`` is
        given (the instance gets its final state; a finished instance loses every queue
        entry) or ``release`` is set. Returns the pending cancel/pause request and
        the claim now held. Raises ``LeaseLostError`` (writing nothing) when
        ``claim`` is no longer the current claim of its entry.
        """
        ...

    def abandon(self, claim: Claim, error: str, *, retry_in: float) -> bool:
        """Give up ``claim`` without an outcome: the entry becomes claimable again in
        ``retry_in`` seconds, keeps its ``attempt`` count (the next claim is ``attempt + 1``,
        as after an expired lease, so dead-lettering counts it) and remembers ``error`` as
        the cause. False, and nothing written, when ``claim`` is no longer held.
        """
        ...

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (it must not block) when queue work may be ready; return the
        function that unsubscribes it. Workers poll as well: a backend may never call it."""
        ...


@runtime_checkable
class GatedQueueStorage(Protocol):
    """A queue storage that asks a task's limits in the write that claims the task: the
    worker's checkpoint, its claim on the next task and that task's slot and start, one
    transaction. Optional: a worker on a storage without it asks them one by one."""

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
        """``advance(claim, steps, enqueue=..., next_item=..., lease_secs=...)`` and, when
        the claim moved to ``next_item``, ``gate`` asked for it under the new claim (its slot
        held by that claim, ``acquire_task_slot``; its start, ``take_rate_token``), as one
        transaction. The answer is ``None`` when the claim did not move (nothing asked)."""
        ...


@runtime_checkable
class ChainedQueueStorage(Protocol):
    """A queue storage that claims a worker's next entry in the write that ends its run: a
    busy worker pays no commit (a WAL flush, a sync of SQLite's file) of its own per claim.
    Optional: a worker on a storage without it claims after the write."""

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
        """``advance(claim, steps, final=..., enqueue=..., lease_secs=...)`` and, in the same
        transaction, ``claim(then.worker_id, then.definition_hashes, then.tags, 1,
        lease_secs)``. Returns the advance's request and what the claim took. Raises
        ``LeaseLostError`` (nothing written, nothing claimed) when ``claim`` is not held."""
        ...


class EngineStorage(
    QueueStorage, TaskLimitStorage, GatedQueueStorage, ChainedQueueStorage, Protocol
):
    """Every operation the engine's effects may name (``_effects.Store``): a driver only
    calls those its storage has (the task limits' are checked before a run starts)."""


@runtime_checkable
class RunQueries(Protocol):
    """What the operator console and the ``sayiir runs`` CLI read (``sayiir.core.queries``).

    Read-only except the audit log. Lists page by keyset (``RunPage.next_cursor``, never
    OFFSET) and nothing counts a whole table (``count_runs`` stops at ``cap``). Every
    backend answers the same way; tests/contract/test_queries_contract.py checks it.
    """

    def list_runs(
        self,
        filter: RunFilter,
        sort: RunSort = ...,
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        """One page of runs matching ``filter`` in ``sort`` order, after ``cursor``."""
        ...

    def count_runs(self, filter: RunFilter, cap: int = 1000) -> tuple[int, bool]:
        """How many runs match, counting at most ``cap``: ``(n, capped)`` ("1,000+")."""
        ...

    def run_detail(
        self,
        instance_id: str,
        *,
        steps_cursor: str | None = None,
        steps_limit: int = 500,
        preview_bytes: int = 2048,
    ) -> RunDetail | None:
        """A run with one page of its steps (in start order), signals, children and audit."""
        ...

    def step_output(self, instance_id: str, key: str) -> object:
        """The full decoded output of checkpoint ``key`` (``KeyError`` when absent)."""
        ...

    def run_input(self, instance_id: str) -> object:
        """The full decoded input of a run (``InstanceNotFoundError`` when unknown)."""
        ...

    def run_output(self, instance_id: str) -> object:
        """The full decoded output of a run (``None`` until it completed)."""
        ...

    def status_counts(
        self, since: datetime, until: datetime, bucket_secs: float = 3600.0
    ) -> StatusCounts:
        """Runs created in ``[since, until)`` by status, in total and per time bucket."""
        ...

    def queue_stats(self) -> QueueStats | None:
        """The worker queue's depth and oldest ready age (``None``: no queue)."""
        ...

    def list_definitions(self) -> list[DefinitionInfo]:
        """Every stored workflow definition, newest first."""
        ...

    def get_definition(self, definition_hash: str) -> DefinitionInfo | None: ...

    def record_audit(self, entry: AuditEntry) -> None:
        """Append an operator action to the audit log."""
        ...

    def reopen_failed(self, instance_id: str) -> Status | None:
        """Retry a failed run, atomically: it becomes ``running`` again (no lease, so a
        resume takes it over at once) with its checkpoints; the attempts of its steps
        without a checkpoint are deleted, so they get fresh retries; a run submitted for
        workers is queued again. Returns the status found (``None``: unknown run); any
        status but ``failed`` changes nothing."""
        ...

    def list_audit(self, instance_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The audit entries of one run (or all runs), newest first."""


@runtime_checkable
class ScheduleStorage(Protocol):
    """Stored schedules (``sayiir.distributed.schedules``): rows changed by compare-and-set.

    Every change of a schedule is ``put_schedule`` with the version the writer read, so of
    several workers or schedulers deciding the same tick at once exactly one wins.
    """

    def put_schedule(self, record: ScheduleRecord, expected_version: int | None) -> bool:
        """Store ``record`` (its ``version`` as given). ``expected_version=None``: insert,
        False when the id exists. Otherwise: replace the row only if it is still at
        ``expected_version``; False (nothing written) when it changed or is gone."""
        ...

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None: ...

    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by id."""
        ...

    def delete_schedule(self, schedule_id: str) -> bool:
        """Delete it (its runs stay); False when there was none."""
        ...

    def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        """Up to ``limit`` schedules not paused whose ``fire_at`` is at or before ``now``,
        earliest first."""
        ...

    def next_schedule_at(self) -> float | None:
        """The earliest ``fire_at`` of a schedule not paused (``None``: there is none)."""
        ...


@runtime_checkable
class ConcurrencyStorage(Protocol):
    """What an operator reads about run concurrency limits (``sayiir.core.limits``)."""

    def concurrency_state(self, instance_id: str) -> ConcurrencyState | None:
        """The concurrency key of a run still waiting for its first claim, its limit and the
        unfinished runs holding a slot of it; ``None`` when the run has no key or started."""
        ...


@runtime_checkable
class DedupeStorage(Protocol):
    """The keys of idempotent submits (``WorkflowClient.submit(dedupe_key=...)``)."""

    def take_dedupe_key(self, key: str, instance_id: str, now: float, expires: float) -> str | None:
        """Make ``instance_id`` the holder of ``key`` until ``expires``, unless a run holds
        it at ``now`` (its window not passed); return the holder now (``instance_id`` when
        taken). ``None``: a concurrent call took it meanwhile, ask again."""
        ...

    def purge_dedupe_keys(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` keys whose window has passed at ``now`` (oldest first);
        return how many. Served by an index on the expiry, so a call with nothing to purge
        costs one probe (submits call it; ``sayiir retention`` in batches)."""
        ...
