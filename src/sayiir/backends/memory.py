"""``InMemoryBackend``: process-local storage for tests and scripts.

It is also the reference implementation of the storage protocol: every other
backend must behave like this one (the shared conformance suite checks it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from sayiir.backends.adapters import DirectAsyncStorage
from sayiir.core.codec import Codec, JsonCodec
from sayiir.core.records import (
    TERMINAL,
    AttemptRecord,
    AttemptState,
    ControlRequest,
    FinalState,
    InstanceRecord,
    RunState,
    Status,
    StepRecord,
    applied_request,
    control_decision,
    fold_attempt,
)

__all__ = ["InMemoryBackend"]


class _Instance:
    __slots__ = ("attempts", "checkpoints", "record")

    def __init__(self, record: InstanceRecord) -> None:
        self.record = record
        self.checkpoints: dict[str, bytes] = {}
        self.attempts: list[AttemptRecord] = []


class InMemoryBackend:
    """Thread-safe in-process store; state lives as long as the object.

    >>> backend = InMemoryBackend()
    >>> status = run_durable_workflow(wf, "run-1", 1, backend=backend)  # doctest: +SKIP
    """

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self._lock = threading.Lock()
        self._instances: dict[str, _Instance] = {}
        self._signals: dict[tuple[str, str], deque[bytes]] = {}

    def __repr__(self) -> str:
        return "InMemoryBackend()"

    # -- lifecycle -----------------------------------------------------------------------

    def create_instance(self, record: InstanceRecord, *, replace: bool) -> InstanceRecord | None:
        with self._lock:
            existing = self._instances.get(record.instance_id)
            if existing is not None and not replace:
                return _copy(existing.record)
            # The engine hands the record over and never touches it again: no copy needed.
            self._instances[record.instance_id] = _Instance(record)
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

    def save_steps(self, instance_id: str, steps: Sequence[StepRecord]) -> ControlRequest | None:
        with self._lock:
            inst = self._get(instance_id)
            for step in steps:
                inst.checkpoints[step.key] = step.output
            return self._touch(inst)

    def record_attempt(self, instance_id: str, attempt: AttemptRecord) -> ControlRequest | None:
        with self._lock:
            inst = self._get(instance_id)
            inst.attempts.append(attempt)
            return self._touch(inst)

    def consume_signal(self, instance_id: str, signal_name: str, key: str) -> bytes | None:
        with self._lock:
            inst = self._get(instance_id)
            queue = self._signals.get((instance_id, signal_name))
            if not queue:
                return None
            payload = queue.popleft()
            inst.checkpoints[key] = payload
            self._touch(inst)
            return payload

    def finish(self, instance_id: str, final: FinalState, steps: Sequence[StepRecord]) -> None:
        with self._lock:
            inst = self._get(instance_id)
            for step in steps:
                inst.checkpoints[step.key] = step.output
            rec = inst.record
            now = time.time()
            rec.status = final.status
            rec.output = final.output
            rec.error = final.error
            rec.wake_at = final.wake_at
            rec.park_node = final.park_node
            rec.signal_name = final.signal_name
            rec.updated_at = now
            if final.status is Status.CANCELLED:
                rec.reason, rec.cancelled_by = final.reason, final.by
            elif final.status is Status.PAUSED:
                rec.reason, rec.paused_by = final.reason, final.by
            if final.status in TERMINAL:
                rec.completed_at = now
            if final.status in (Status.CANCELLED, Status.PAUSED) or final.status in TERMINAL:
                rec.request = None

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
            elif rec.request is not None and rec.request.kind == "pause":
                rec.request = None
                return Status.PAUSED
            return found

    def send_signal(self, instance_id: str, signal_name: str, payload: bytes) -> Status | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            found = None if inst is None else inst.record.status
            if found not in TERMINAL:
                self._signals.setdefault((instance_id, signal_name), deque()).append(payload)
            return found

    def async_storage(self) -> DirectAsyncStorage:
        return DirectAsyncStorage(self)

    def close(self) -> None:
        """Nothing to release; present so every backend can be closed the same way."""

    # -- helpers -------------------------------------------------------------------------

    def _get(self, instance_id: str) -> _Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            from sayiir.errors import InstanceNotFoundError

            raise InstanceNotFoundError(instance_id)
        return inst

    @staticmethod
    def _touch(inst: _Instance) -> ControlRequest | None:
        rec = inst.record
        rec.updated_at = time.time()
        applied = applied_request(rec)
        if applied is not None:
            return applied
        rec.status = Status.RUNNING
        return rec.request


def _copy(record: InstanceRecord) -> InstanceRecord:
    return replace(record)


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
