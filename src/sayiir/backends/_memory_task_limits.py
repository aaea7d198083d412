"""Task limits on ``InMemoryBackend`` (``TaskLimitStorage``, ``TaskWaitStorage``): the
reference semantics, under the backend's lock (``core.task_limits.LocalTaskLimits``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sayiir.core.records import Claim, ControlRequest, QueueItem, Status, StepRecord
from sayiir.core.task_limits import (
    GateAnswer,
    GateAsk,
    LocalTaskLimits,
    SlotHolder,
    TaskWait,
    answer_gate,
)

__all__ = ["MemoryTaskLimits"]


class MemoryTaskLimits:
    """Mixed into ``InMemoryBackend``: needs its ``_lock`` and ``_instances``."""

    _lock: threading.Lock
    if TYPE_CHECKING:
        _instances: dict[str, Any]

        def advance(
            self, claim: Claim, steps: Sequence[StepRecord], *, enqueue: Sequence[QueueItem],
            next_item: QueueItem | None, lease_secs: float,
        ) -> tuple[ControlRequest | None, Claim | None]: ...  # fmt: skip

    def __init__(self) -> None:
        self._task_limits = LocalTaskLimits()

    def _alive(self, holder: SlotHolder, now: float) -> bool:
        """Whether the execution that took the slot still holds the run (see
        ``TaskLimitStorage.acquire_task_slot``)."""
        inst = self._instances.get(holder.instance_id)
        if inst is None:
            return False
        if holder.attempt is None:
            rec = inst.record
            return bool(
                rec.token == holder.owner
                and rec.status is Status.RUNNING
                and rec.lease_until is not None
                and rec.lease_until > now
            )
        entry = inst.queue.get(holder.owner)
        return bool(
            entry is not None
            and entry.worker_id is not None
            and entry.attempt == holder.attempt
            and entry.lease_expires_at is not None
            and entry.lease_expires_at > now
        )

    def acquire_task_slot(
        self,
        task_id: str,
        limit: int,
        instance_id: str,
        step_key: str,
        owner: str,
        attempt: int | None,
    ) -> bool:
        holder = SlotHolder(instance_id, step_key, owner, attempt)
        with self._lock:
            now = time.time()
            return self._task_limits.acquire(task_id, limit, holder, lambda h: self._alive(h, now))

    def release_task_slot(self, task_id: str, instance_id: str, step_key: str) -> None:
        with self._lock:
            self._task_limits.release(task_id, instance_id, step_key)

    def _free_slots(self, instance_id: str, steps: Sequence[StepRecord]) -> None:
        """The slots of ``steps`` that free theirs with their checkpoint
        (``StepRecord.frees_slot``); the caller holds the lock and writes the checkpoints."""
        for step in steps:
            if step.frees_slot and step.task_id is not None:
                self._task_limits.release(step.task_id, instance_id, step.key)

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
        """``GatedQueueStorage.advance_gated``: in memory a write costs no commit, so the
        advance and the asks are the calls they stand for, one after the other."""
        request, moved = self.advance(
            claim, steps, enqueue=enqueue, next_item=next_item, lease_secs=lease_secs
        )
        if moved is None or moved.key != next_item.key:
            return request, moved, None
        iid, key, attempt = claim.instance_id, next_item.key, moved.attempt
        answer = answer_gate(
            gate,
            lambda limit: self.acquire_task_slot(gate.task_id, limit, iid, key, key, attempt),
            lambda a: self.take_rate_token(a.task_id, a.bucket or "", a.n, a.per, a.now, iid, key),
        )
        return request, moved, answer

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
        with self._lock:
            return self._task_limits.take(task_id, bucket, n, per, now, instance_id, step_key)

    def task_wait(self, instance_id: str, now: float) -> TaskWait | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None or inst.record.status is not Status.RUNNING:
                return None
            clock = time.time()
            return self._task_limits.wait_of(instance_id, lambda h: self._alive(h, clock))
