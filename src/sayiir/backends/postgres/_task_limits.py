"""Task limits on PostgreSQL (migration 0011, task_limits.sql): the operations of
``TaskLimitStorage`` as ``_ops`` generators (run by the sync and the async backend through
``_storage``), and what operators read (``TaskWaitStorage``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from sayiir.backends.postgres import _queue
from sayiir.backends.postgres._ops import Op, Q
from sayiir.core.records import Claim, ControlRequest, QueueItem, StepRecord
from sayiir.core.task_limits import GateAnswer, GateAsk, TaskWait, rate_wait

if TYPE_CHECKING:
    from sayiir.backends.postgres._runner import Runner

__all__ = [
    "PostgresTaskWaits",
    "acquire_task_slot",
    "advance_gated",
    "release_task_slot",
    "take_rate_token",
]

# A taker that saw a free slot number but lost it to a racing taker looks again at once,
# this many times, before it waits like a refused one.
_RACES = 3


def acquire_task_slot(
    task_id: str, limit: int, instance_id: str, step_key: str, owner: str, attempt: int | None
) -> Op[bool]:
    params = {
        "task": task_id, "limit": limit, "id": instance_id, "key": step_key, "owner": owner,
        "attempt": attempt,
    }  # fmt: skip
    for _ in range(_RACES):
        rows = yield Q("acquire_task_slot", params)
        seen, taken = rows[0]
        if taken:
            return True
        if not seen:
            break
    yield from _record_wait(instance_id, step_key, task_id, "slot", task_id, limit, None, None)
    return False


def release_task_slot(task_id: str, instance_id: str, step_key: str) -> Op[None]:
    yield Q("release_task_slot", {"task": task_id, "id": instance_id, "key": step_key})


def take_rate_token(
    task_id: str, bucket: str, n: int, per: float, now: float, instance_id: str, step_key: str
) -> Op[float]:
    params = {
        "bucket": bucket, "n": n, "per": per, "now": now, "id": instance_id, "key": step_key,
    }  # fmt: skip
    rows = yield Q("take_rate_token", params)
    took, starts = rows[0]
    if took:
        return 0.0
    # Refused on the row's newest version; the starts read may be older (a racing start
    # committed meanwhile): at least a little wait, then the caller asks again.
    wait = max(rate_wait(sorted(starts or ()), n, per, now), 0.001 + random.random() * 0.01)
    yield from _record_wait(instance_id, step_key, task_id, "rate", bucket, n, per, now + wait)
    return wait


def advance_gated(
    claim: Claim, steps: Sequence[StepRecord], enqueue: Sequence[QueueItem],
    next_item: QueueItem, lease_secs: float, token: UUID, retry: bool, gate: GateAsk,
) -> Op[tuple[ControlRequest | None, Claim | None, GateAnswer | None]]:  # fmt: skip
    """``GatedQueueStorage.advance_gated``: the advance, then the gate's slot and start
    under the moved claim, in one transaction (a commit, not three). A deadlock with
    another worker's write (their slot rows locked in the other order) rolls it all back,
    and the runner sends it again, as a re-sent advance."""
    yield Q("begin", prepare=False)
    request, moved = yield from _queue.advance(
        claim, steps, final=None, enqueue=enqueue, next_item=next_item, release=False,
        lease_secs=lease_secs, token=token, retry=retry, in_transaction=True,
    )  # fmt: skip
    answer = None
    if moved is not None and moved.key == next_item.key:
        iid, key = claim.instance_id, next_item.key
        slot = True
        if gate.limit is not None:
            slot = yield from acquire_task_slot(
                gate.task_id, gate.limit, iid, key, moved.key, moved.attempt
            )
        wait = 0.0
        if slot and gate.bucket is not None:
            wait = yield from take_rate_token(
                gate.task_id, gate.bucket, gate.n, gate.per, gate.now, iid, key
            )
        answer = GateAnswer(slot, wait)
    yield Q("commit", prepare=False)
    return request, moved, answer


def _record_wait(
    instance_id: str, step_key: str, task_id: str, kind: str, name: str, limit: int,
    per: float | None, retry_at: float | None,
) -> Op[None]:  # fmt: skip
    yield Q(
        "record_task_wait",
        {
            "id": instance_id, "key": step_key, "task": task_id, "kind": kind, "name": name,
            "limit": limit, "per": per, "retry_at": retry_at,
        },
    )  # fmt: skip


def task_wait(instance_id: str) -> Op[TaskWait | None]:
    rows = yield Q("task_wait", {"id": instance_id})
    if not rows:
        return None
    task_id, kind, name, limit, per, retry_at, holders = rows[0]
    return TaskWait(task_id, kind, name, int(limit), per, retry_at, tuple(holders or ()))


def purge_task_limit_rows() -> Op[int]:
    rows = yield Q("purge_task_limit_rows", prepare=False)
    return int(rows[0][0])


class PostgresTaskWaits:
    """Mixed into ``PostgresBackend``: runs the reads with its retry loop."""

    _runner: Runner

    def task_wait(self, instance_id: str, now: float) -> TaskWait | None:
        wait: TaskWait | None = self._runner.run("task_wait", lambda resent: task_wait(instance_id))
        return wait
