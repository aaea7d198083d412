"""Task limits on PostgreSQL (migration 0011, task_limits.sql): the operations of
``TaskLimitStorage`` as ``_ops`` generators (run by the sync and the async backend through
``_storage``), and what operators read (``TaskWaitStorage``)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from sayiir.backends.postgres._ops import Op, Q
from sayiir.core.task_limits import TaskWait, rate_wait

if TYPE_CHECKING:
    from sayiir.backends.postgres._runner import Runner

__all__ = ["PostgresTaskWaits", "acquire_task_slot", "release_task_slot", "take_rate_token"]

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
