"""``InMemoryBackend``: process-local storage for tests and scripts.

It is also the reference implementation of the storage protocol: every other
backend must behave like this one (the shared conformance suite checks it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from operator import attrgetter

from sayiir.backends._memory_dedupe import MemoryDedupe
from sayiir.backends._memory_queries import MemoryQueries, StepMeta
from sayiir.backends._memory_schedules import MemorySchedules
from sayiir.backends._memory_task_limits import MemoryTaskLimits
from sayiir.backends.adapters import DirectAsyncStorage
from sayiir.backends.protocol import QueueStorage
from sayiir.core.codec import Codec, JsonCodec
from sayiir.core.limits import ConcurrencyState
from sayiir.core.queries import AuditEntry, DefinitionInfo
from sayiir.core.records import (
    ACTIVE,
    CANCELLED,
    PAUSED,
    RUNNING,
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
    claim_order,
    control_decision,
    executes,
    fold_attempt,
    lease_expired,
    write_decision,
)
from sayiir.errors import (
    InstanceNotFoundError,
    LeaseLostError,
    RunReplacedError,
)

__all__ = ["InMemoryBackend"]


class _Instance:
    __slots__ = ("attempts", "checkpoints", "consumed", "meta", "queue", "record")

    def __init__(self, record: InstanceRecord) -> None:
        self.record = record
        self.checkpoints: dict[str, bytes] = {}
        self.attempts: list[AttemptRecord] = []
        self.queue: dict[str, _Entry] = {}
        # For the console (RunQueries): what a checkpoint's step was, and consumed signals.
        self.meta: dict[str, StepMeta] = {}
        self.consumed: list[tuple[str, bytes, float, float]] = []

    def put(self, steps: Sequence[StepRecord], now: float | None = None) -> None:
        if now is None:
            now = time.time()
        for step in steps:
            self.checkpoints[step.key] = step.output
            self.meta[step.key] = (
                step.task_id,
                step.attempt,
                step.started_at,
                step.finished_at,
                now,
            )


class _Entry:
    """A queue entry of a worker-run instance (see ``QueueStorage``)."""

    __slots__ = (
        "attempt", "available_at", "item", "last_error", "lease_expires_at", "seq", "worker_id",
    )  # fmt: skip

    def __init__(self, item: QueueItem, available_at: float, seq: int) -> None:
        self.item = item
        self.available_at = available_at
        self.seq = seq
        self.attempt = 0
        self.worker_id: str | None = None
        self.lease_expires_at: float | None = None
        self.last_error: str | None = None  # why the last claim ended without an outcome


class InMemoryBackend(MemoryQueries, MemorySchedules, MemoryDedupe, MemoryTaskLimits, QueueStorage):
    """Thread-safe in-process store; state lives as long as the object.

    ``lease_secs``: how long an execution holds a run without a write or a heartbeat
    (see ``Storage``); the local clock decides.

    >>> from sayiir import Flow, run_durable_workflow
    >>> wf = Flow("inc").then(lambda x: x + 1, name="inc").build()
    >>> backend = InMemoryBackend()
    >>> run_durable_workflow(wf, "run-1", 1, backend=backend).output
    2
    >>> backend.get_checkpoint("run-1", "inc")
    b'2'
    """

    def __init__(self, codec: Codec | None = None, *, lease_secs: float = 30.0) -> None:
        MemorySchedules.__init__(self)
        MemoryDedupe.__init__(self)
        MemoryTaskLimits.__init__(self)
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self.lease_secs = check_lease_secs(lease_secs)
        self._lock = threading.Lock()
        self._instances: dict[str, _Instance] = {}
        self._signals: dict[tuple[str, str], deque[tuple[bytes, float]]] = {}
        self._definitions: dict[str, DefinitionInfo] = {}
        self._audit: list[AuditEntry] = []
        self._seq = 0
        self._listeners: list[Callable[[], None]] = []
        self._slots: dict[str, set[str]] = {}  # concurrency key -> runs holding a slot

    def __repr__(self) -> str:
        return "InMemoryBackend()"

    # -- lifecycle -----------------------------------------------------------------------

    def create_instance(self, record: InstanceRecord, *, replace: bool) -> InstanceRecord | None:
        with self._lock:
            existing = self._instances.get(record.instance_id)
            if existing is not None and not replace:
                return _copy(existing.record)
            self._store_definition(record)
            # The engine hands the record over and never touches it again: no copy needed.
            inst = self._instances[record.instance_id] = _Instance(record)
            record.lease_until = time.time() + self.lease_secs if executes(record) else None
            if record.distributed:
                self._enqueue(inst, [QueueItem("", priority=record.priority)])
            return None

    def load(self, instance_id: str) -> RunState | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return None
            attempts: dict[str, AttemptState] = {}
            for attempt in inst.attempts:
                if attempt.key not in inst.checkpoints:
                    fold_attempt(attempts.setdefault(attempt.key, AttemptState()), attempt)
            return RunState(_copy(inst.record), dict(inst.checkpoints), attempts)

    def take_over(
        self, instance_id: str, token: str | None, new_token: str
    ) -> InstanceRecord | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return None
            rec = inst.record
            now = time.time()
            live = rec.lease_until is not None and rec.lease_until > now
            if rec.token != token or rec.status not in ACTIVE or live:
                return None
            rec.token, rec.lease_until = new_token, now + self.lease_secs
            rec.status, rec.updated_at = Status.RUNNING, now
            return _copy(rec)

    def renew_lease(self, instance_id: str, token: str, *, release: bool = False) -> bool:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return False
            rec = inst.record
            if rec.token != token or rec.status is not Status.RUNNING:
                return False
            now = time.time()
            rec.lease_until = now if release else now + self.lease_secs
            return True

    def save_steps(
        self, instance_id: str, steps: Sequence[StepRecord], *, token: str | None = None
    ) -> ControlRequest | None:
        with self._lock:
            inst = self._get(instance_id, token)
            stopped = self._stopped(inst)
            if stopped is not None:
                return stopped
            now = time.time()
            inst.put(steps, now)
            self._free_slots(instance_id, steps)
            return self._touch(inst, token, now)

    def record_attempt(
        self, instance_id: str, attempt: AttemptRecord, *, token: str | None = None
    ) -> ControlRequest | None:
        with self._lock:
            inst = self._get(instance_id, token)
            stopped = self._stopped(inst)
            if stopped is not None:
                return stopped
            # One record per (key, attempt): a failure replaces the attempt's "running" row.
            inst.attempts = [
                a for a in inst.attempts if (a.key, a.attempt) != (attempt.key, attempt.attempt)
            ]
            inst.attempts.append(attempt)
            return self._touch(inst, token)

    def consume_signal(
        self, instance_id: str, signal_name: str, key: str, *, token: str | None = None
    ) -> bytes | None:
        with self._lock:
            inst = self._get(instance_id, token)
            if self._stopped(inst) is not None:
                return None  # a cancelled run takes no event; the engine's finish learns why
            if key in inst.checkpoints:  # a repeated call: the event was consumed already
                return inst.checkpoints[key]
            queue = self._signals.get((instance_id, signal_name))
            if not queue:
                return None
            payload, sent_at = queue.popleft()
            inst.put([StepRecord(key, payload)])
            inst.consumed.append((signal_name, payload, sent_at, time.time()))
            self._touch(inst, token)
            return payload

    def finish(
        self,
        instance_id: str,
        final: FinalState,
        steps: Sequence[StepRecord],
        *,
        token: str | None = None,
    ) -> ControlRequest | None:
        with self._lock:
            return self._finish(self._get(instance_id, token), final, steps)

    def _finish(
        self, inst: _Instance, final: FinalState, steps: Sequence[StepRecord]
    ) -> ControlRequest | None:
        rec = inst.record
        decision = write_decision(rec.instance_id, rec.status, final.status)
        if decision != "skip":
            inst.put(steps)
            self._free_slots(rec.instance_id, steps)
        if decision != "write":
            return applied_request(rec)
        now = time.time()
        rec.lease_until = None
        rec.status = final.status
        rec.output = final.output
        rec.error = final.error
        rec.wake_at = final.wake_at
        rec.park_node = final.park_node
        rec.signal_name = final.signal_name
        rec.updated_at = now
        status = final.status
        if status is CANCELLED:
            rec.reason, rec.cancelled_by = final.reason, final.by
        elif status is PAUSED:
            rec.reason, rec.paused_by = final.reason, final.by
        if status in TERMINAL:
            rec.completed_at = now
            inst.queue.clear()
        if status is PAUSED or status in TERMINAL:  # TERMINAL holds CANCELLED
            rec.request = None
        return None

    # -- reads ---------------------------------------------------------------------------

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return None if inst is None else _copy(inst.record)

    def get_checkpoint(self, instance_id: str, key: str) -> bytes | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            return None if inst is None else inst.checkpoints.get(key)

    # -- control -------------------------------------------------------------------------

    def request_control(self, instance_id: str, request: ControlRequest) -> Status | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return None
            rec = inst.record
            found = rec.status
            decision = control_decision(found, request.kind)
            if decision == "apply":
                _apply(rec, request)
                if request.kind == "cancel":
                    inst.queue.clear()
            elif decision == "request" and not (
                rec.request is not None and rec.request.kind == "cancel"
            ):
                rec.request = request  # a pending cancel is never downgraded to a pause
            return found

    def unpause(self, instance_id: str) -> Status | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return None
            rec = inst.record
            found = rec.status
            if found is Status.PAUSED:
                rec.status = Status.RUNNING
                rec.reason = rec.paused_by = None
                rec.updated_at = time.time()
                if rec.distributed:
                    self._enqueue(inst, [QueueItem("")])
            elif rec.request is not None and rec.request.kind == "pause":
                rec.request = None
                return Status.PAUSED
            return found

    def send_signal(self, instance_id: str, signal_name: str, payload: bytes) -> Status | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            found = None if inst is None else inst.record.status
            if found not in TERMINAL:
                queue = self._signals.setdefault((instance_id, signal_name), deque())
                queue.append((payload, time.time()))
            if inst is not None and inst.record.distributed and found in ACTIVE:
                self._enqueue(inst, [QueueItem("")])  # wake a worker to consume it
            return found

    # -- worker queue --------------------------------------------------------------------

    def enqueue(self, instance_id: str, items: Sequence[QueueItem]) -> None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is not None:
                self._enqueue(inst, items)

    def claim(
        self,
        worker_id: str,
        definition_hashes: Sequence[str],
        tags: Sequence[str],
        limit: int,
        lease_secs: float,
    ) -> list[Claim]:
        now = time.time()
        with self._lock:
            ready: list[tuple[float, float, int, _Instance, _Entry]] = []
            for inst, entry in self._servable(definition_hashes, tags):
                free = entry.worker_id is None and entry.available_at <= now
                expired = entry.lease_expires_at is not None and entry.lease_expires_at < now
                if free or expired:
                    order = claim_order(entry.item.priority, entry.available_at, now)
                    ready.append((order, entry.available_at, entry.seq, inst, entry))
            ready.sort(key=lambda r: r[:3])
            claims: list[Claim] = []
            for _, _, _, inst, entry in ready:
                if len(claims) == limit:
                    break
                if not self._admit(inst, entry):
                    continue  # its concurrency key is at its limit: the run waits queued
                if entry.worker_id is not None:  # taken over: its lease ran out
                    entry.last_error = lease_expired(entry.worker_id, entry.attempt)
                entry.attempt += 1
                entry.worker_id = worker_id
                entry.lease_expires_at = now + lease_secs
                claims.append(_claim_of(inst, entry, now - entry.available_at))
            return claims

    def concurrency_state(self, instance_id: str) -> ConcurrencyState | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None or inst.record.concurrency_key is None or "" not in inst.queue:
                return None
            if inst.queue[""].attempt > 0:
                return None  # claimed once: it started
            key = inst.record.concurrency_key
            holders = sorted(
                h
                for h in self._slots.get(key, ())
                if h in self._instances and self._instances[h].record.status not in TERMINAL
            )
            return ConcurrencyState(
                key, inst.record.concurrency_limit, tuple(holders), instance_id in holders
            )

    def _admit(self, inst: _Instance, entry: _Entry) -> bool:
        """Whether the entry's run may run: it has no concurrency key, already holds a slot
        of it, or takes one now (fewer than the limit of unfinished runs hold one)."""
        rec = inst.record
        key = rec.concurrency_key
        if key is None or entry.item.key != "":
            return True
        holders = self._slots.setdefault(key, set())
        if rec.instance_id in holders:
            return True
        for held in list(holders):
            other = self._instances.get(held)
            if other is None or other.record.status in TERMINAL:
                holders.discard(held)  # a finished run's slot is free (checked lazily)
        if len(holders) >= rec.concurrency_limit:
            return False
        holders.add(rec.instance_id)
        return True

    def next_due(self, definition_hashes: Sequence[str], tags: Sequence[str]) -> float | None:
        now = time.time()
        with self._lock:
            due = [
                entry.available_at
                for _, entry in self._servable(definition_hashes, tags)
                if entry.worker_id is None and entry.available_at > now
            ]
        return min(due) - now if due else None

    def _servable(
        self, definition_hashes: Sequence[str], tags: Sequence[str]
    ) -> Iterator[tuple[_Instance, _Entry]]:
        """The entries a worker may claim (of its definitions, tags all served, runs neither
        paused nor finished), whether due or held; ``claim`` and ``next_due`` filter on."""
        hashes, served = set(definition_hashes), set(tags)
        for inst in self._instances.values():
            rec = inst.record
            if rec.status in ACTIVE and rec.definition_hash in hashes:
                for entry in inst.queue.values():
                    if served.issuperset(entry.item.tags):
                        yield inst, entry

    def heartbeat(self, claims: Sequence[Claim], lease_secs: float) -> list[Claim]:
        now = time.time()
        lost = []
        with self._lock:
            for claim in claims:
                entry = self._held(claim)
                if entry is None:
                    lost.append(claim)
                else:
                    entry.lease_expires_at = now + lease_secs
            return lost

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
        with self._lock:
            entry = self._held(claim)
            if entry is None:
                raise LeaseLostError(
                    f"worker '{claim.worker_id}' lost its claim on task '{claim.key}' of "
                    f"instance '{claim.instance_id}' (attempt {claim.attempt}); "
                    "its result was not written"
                )
            inst = self._instances[claim.instance_id]
            if final is not None:
                decision = write_decision(claim.instance_id, inst.record.status, final.status)
                if decision != "write":  # an applied pause stays; the claim is given up
                    if final.status in TERMINAL:
                        inst.queue.clear()  # as a terminal advance does
                    else:
                        inst.queue.pop(claim.key, None)
                    return applied_request(inst.record), None
            inst.put(steps)
            self._free_slots(claim.instance_id, steps)
            renew = next_item is not None and next_item.key == claim.key
            if final is not None or release or renew:
                # Given up before the new entries go in: a worker that holds "" and parks
                # queues "" again (due at the wake-up time); that entry must survive.
                inst.queue.pop(claim.key, None)
            self._enqueue(inst, enqueue)
            if final is not None:
                self._finish(inst, final, ())
                return None, None
            request = self._touch(inst, None)
            if next_item is None:
                return request, None if release else claim
            requeued = renew and any(item.key == claim.key for item in enqueue)
            taken = None if requeued else self._take(inst, next_item, claim.worker_id, lease_secs)
            if taken is None:
                # Checkpointed, another worker's, or not due: this worker keeps its claim
                # (it re-reads the run before it lets go), unless it gave the claim up.
                return request, None if release or renew else claim
            if not release and not renew:
                inst.queue.pop(claim.key, None)
            return request, taken

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
        """``ChainedQueueStorage.finish_and_claim``: in memory a write costs no commit, so
        the advance and the claim are the calls they stand for, one after the other."""
        request, _ = self.advance(claim, steps, final=final, enqueue=enqueue, lease_secs=lease_secs)
        taken = self.claim(then.worker_id, then.definition_hashes, then.tags, 1, lease_secs)
        return request, taken

    def _take(
        self, inst: _Instance, item: QueueItem, worker_id: str, lease_secs: float
    ) -> Claim | None:
        """``advance(next_item=...)``: claim ``item`` for ``worker_id``: a new entry, or its
        entry when queued, due and never claimed (a spread fork branch nobody took yet).
        ``None`` when its key is checkpointed or its entry is not free to take."""
        if item.key in inst.checkpoints:
            return None
        now = time.time()
        entry = inst.queue.get(item.key)
        if entry is None:
            self._seq += 1
            entry = inst.queue[item.key] = _Entry(item, now, self._seq)
        elif entry.worker_id is not None or entry.attempt or entry.available_at > now:
            return None
        entry.attempt, entry.worker_id, entry.lease_expires_at = 1, worker_id, now + lease_secs
        return _claim_of(inst, entry)

    def abandon(self, claim: Claim, error: str, *, retry_in: float) -> bool:
        with self._lock:
            entry = self._held(claim)
            if entry is None:
                return False
            entry.worker_id = entry.lease_expires_at = None
            entry.available_at = time.time() + max(retry_in, 0.0)
            entry.last_error = error
            if retry_in <= 0:
                for listener in self._listeners:
                    listener()
            return True

    def _held(self, claim: Claim) -> _Entry | None:
        inst = self._instances.get(claim.instance_id)
        entry = None if inst is None else inst.queue.get(claim.key)
        if entry is None or entry.attempt != claim.attempt or entry.worker_id != claim.worker_id:
            return None
        return entry

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when work may be ready (the in-process twin of LISTEN/NOTIFY)."""
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    def _enqueue(self, inst: _Instance, items: Sequence[QueueItem]) -> None:
        now = time.time()
        if items:
            for listener in self._listeners:
                listener()  # must not block: workers only set an event
        for item in items:
            if item.key in inst.checkpoints:
                continue
            due = item.available_at if item.available_at is not None else now
            entry = inst.queue.get(item.key)
            if entry is None:
                self._seq += 1
                inst.queue[item.key] = _Entry(item, due, self._seq)
            elif entry.worker_id is None:
                entry.available_at = min(entry.available_at, due)

    def async_storage(self) -> DirectAsyncStorage:
        return DirectAsyncStorage(self)

    def close(self) -> None:
        """Nothing to release; present so every backend can be closed the same way."""

    # -- helpers -------------------------------------------------------------------------

    def _get(self, instance_id: str, token: str | None = None) -> _Instance:
        """The instance a write goes to; refused when it is another run than ``token``'s."""
        inst = self._instances.get(instance_id)
        if inst is None:
            raise InstanceNotFoundError(instance_id)
        stored = inst.record.token
        if token is not None and stored is not None and stored != token:
            raise RunReplacedError(instance_id)
        return inst

    @staticmethod
    def _stopped(inst: _Instance) -> ControlRequest | None:
        """Refuse a checkpoint write to a finished run; the cancel of a cancelled one, which
        takes no checkpoint either (``write_decision``)."""
        rec = inst.record
        if rec.status is RUNNING:  # the common case, decided at once
            return None
        decision = write_decision(rec.instance_id, rec.status)
        return applied_request(rec) if decision == "skip" else None

    def _touch(
        self, inst: _Instance, token: str | None, now: float | None = None
    ) -> ControlRequest | None:
        """A write of the executing engine: the run is running (unless a cancel or pause was
        applied), the execution's lease renewed; return what the engine must obey."""
        rec = inst.record
        if now is None:
            now = time.time()
        rec.updated_at = now
        applied = applied_request(rec)
        if applied is not None:
            return applied
        rec.status = RUNNING
        if token is not None and not rec.distributed:
            rec.lease_until = now + self.lease_secs
        return rec.request


def _claim_of(inst: _Instance, entry: _Entry, waited: float | None = None) -> Claim:
    assert entry.worker_id is not None
    rec = inst.record
    return Claim(
        rec.instance_id,
        entry.item.key,
        entry.attempt,
        entry.worker_id,
        rec.definition_hash,
        entry.last_error,
        waited,
    )


_FIELDS = attrgetter(*(f.name for f in fields(InstanceRecord)))


def _copy(record: InstanceRecord) -> InstanceRecord:
    """A copy of ``record`` (every field read in C: ``dataclasses.replace`` took 9 us)."""
    return InstanceRecord(*_FIELDS(record))


def _apply(rec: InstanceRecord, request: ControlRequest) -> None:
    """Apply a cancel/pause to an instance nobody is executing."""
    if request.kind == "cancel":
        rec.status = Status.CANCELLED
        rec.cancelled_by = request.by
        rec.completed_at = time.time()
    else:
        rec.status = Status.PAUSED
        rec.paused_by = request.by
    rec.reason = request.reason
    rec.request = None
    rec.wake_at = rec.park_node = rec.signal_name = None
    rec.updated_at = time.time()
