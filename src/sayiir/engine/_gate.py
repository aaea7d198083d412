"""The gate of task limits: a task with ``@task(max_concurrent=..., rate_limit=...)`` starts only
once it holds a slot of the task and a start of its rate limit's window.

Written once for every way a task runs (``Execution.task`` asks here): a durable run asks its
storage (``TaskLimitStorage``, through ``Store`` effects), a plain ``run_workflow`` a table of
this process. When the task cannot start yet, an in-process run sleeps (on the execution's
clock) and asks again; a worker gives its claim back with the task due again later
(``Execution._retry_later``: not a failed attempt, no retry used up), so no worker thread
waits. The slot is given back when the attempt ends, however it ends.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sayiir.backends.protocol import EngineStorage, TaskLimitStorage
from sayiir.core.nodes import TaskNode, WorkflowDefinition, walk_nodes
from sayiir.core.records import applied_request
from sayiir.core.task_limits import (
    GateAnswer,
    GateAsk,
    LocalTaskLimits,
    SlotHolder,
    TaskLimits,
)
from sayiir.engine import _interpreter
from sayiir.engine._effects import Effects, Sleep, Store
from sayiir.errors import WorkflowError

if TYPE_CHECKING:
    from sayiir.engine._interpreter import Execution, Lane

__all__ = ["acquire", "check_storage", "release"]

# An in-process run waiting for a slot asks again after this, doubling up to _MAX_PAUSE (a
# slot is freed by a write of another process: nothing announces it).
_FIRST_PAUSE = 0.02
_MAX_PAUSE = 0.5
# A worker whose task waits for a slot makes the task due again after about this long.
_WORKER_SLOT_RETRY = 0.2

# Plain runs (``run_workflow``, no storage): the limits hold within this process.
_local = LocalTaskLimits()
_local_lock = threading.Lock()


def _always(holder: SlotHolder) -> bool:
    return True  # a plain run gives its slot back itself (it has no lease to expire)


def acquire(
    ex: Execution, limits: TaskLimits, fn: Callable[[Any], Any], value: Any, task_id: str,
    key: str, lane: Lane,
) -> Effects[bool]:  # fmt: skip
    """Wait until the task may start; True when a slot was taken (``release`` it)."""
    rate = limits.rate_limit
    bucket = bad_key = None
    if rate is not None:
        try:
            bucket = rate.bucket(task_id, value)
        except ValueError as exc:
            bad_key = str(exc)  # the run fails once the task is this execution's to run
    limit = limits.max_concurrent
    ask = None
    if bad_key is None:
        ask = GateAsk(task_id, limit)
        if rate is not None and bucket is not None:
            ask = GateAsk(task_id, limit, bucket, rate.n, rate.per, ex.clock())
    answer = yield from _reach(ex, fn, task_id, key, lane, ask)
    if ask is None:
        raise _interpreter.Failure(bad_key or "")
    pause = _FIRST_PAUSE
    while True:
        if answer is None:
            answer = yield from _ask(ex, ask, key)
        taken, wait = answer
        answer = None
        if not taken:
            wait = _WORKER_SLOT_RETRY * (0.75 + random.random() / 2) if ex.worker else pause
            pause = min(pause * 2, _MAX_PAUSE)
        elif wait > 0 and limit is not None:
            yield from release(ex, task_id, key)  # no slot held while waiting
        if wait <= 0:
            return limit is not None
        yield from _wait_out(ex, wait, task_id, key)


def _reach(
    ex: Execution, fn: Callable[[Any], Any], task_id: str, key: str, lane: Lane,
    ask: GateAsk | None,
) -> Effects[GateAnswer | None]:  # fmt: skip
    """Make the task this execution's to run: a worker claims it (``_take``: runs here, or
    ``_Suspended``), asking ``ask`` in that write when its storage can
    (``GatedQueueStorage``: the claim, the slot and the start in one transaction), and
    returns the answer; an in-process run writes what it holds first."""
    worker = ex.worker
    if worker is None:
        if lane.pending:
            yield from ex.flush(lane)
        return None
    worker.answer = None
    yield from ex._take(key, task_id, fn, lane, ask if worker.gated else None)
    answer, worker.answer = worker.answer, None
    return answer


def _ask(ex: Execution, ask: GateAsk, key: str) -> Effects[GateAnswer]:
    """The slot, then the start, each asked on its own (``answer_gate``'s order)."""
    if ask.limit is not None and not (yield from _take_slot(ex, ask.task_id, ask.limit, key)):
        return GateAnswer(False, 0.0)
    if ask.bucket is None:
        return GateAnswer(True, 0.0)
    return GateAnswer(
        True, (yield from _take_start(ex, ask.task_id, ask.bucket, ask.n, ask.per, key))
    )


def _wait_out(ex: Execution, wait: float, task_id: str, key: str) -> Effects[None]:
    """Wait ``wait`` seconds before asking again: a worker gives its claim back (the task is
    due again then); an in-process run sleeps, and stops if a cancel or pause came."""
    if ex.worker is not None:
        ex._retry_later(key, task_id, ex.clock() + wait)
    yield from Sleep(wait, ex.clock)
    if ex.durable:
        record = yield from Store(EngineStorage.get_instance, ex.instance_id)
        request = None if record is None else record.request or applied_request(record)
        if request is not None:
            raise _interpreter._Stopped(request)


def _take_slot(ex: Execution, task_id: str, limit: int, key: str) -> Effects[bool]:
    if not ex.durable:
        with _local_lock:
            return _local.acquire(task_id, limit, SlotHolder(_plain(ex), key, ""), _always)
    worker = ex.worker
    if worker is not None and worker.claim is not None:
        owner, attempt = worker.claim.key, worker.claim.attempt
    else:
        owner, attempt = ex.token or "", None
    taken: bool = yield from Store(
        EngineStorage.acquire_task_slot, task_id, limit, ex.instance_id, key, owner, attempt
    )
    return taken


def _take_start(
    ex: Execution, task_id: str, bucket: str, n: int, per: float, key: str
) -> Effects[float]:
    now = ex.clock()
    if not ex.durable:
        with _local_lock:
            return _local.take(task_id, bucket, n, per, now, _plain(ex), key)
    wait: float = yield from Store(
        EngineStorage.take_rate_token, task_id, bucket, n, per, now, ex.instance_id, key
    )
    return wait


def release(ex: Execution, task_id: str, key: str) -> Effects[None]:
    """Give the slot of step ``key`` back."""
    if not ex.durable:
        with _local_lock:
            _local.release(task_id, _plain(ex), key)
        return
    yield from Store(EngineStorage.release_task_slot, task_id, ex.instance_id, key)


def _plain(ex: Execution) -> str:
    """A plain run's holder name: its workflow id (all its plain runs share that as their
    instance id) and the execution, unique while it runs."""
    return f"{ex.instance_id}@{id(ex):x}"


def limited_tasks(definition: WorkflowDefinition) -> list[str]:
    """The ids of the tasks of ``definition`` with limits (computed once, cached on it)."""
    cache = definition.runtime_cache
    found: list[str] | None = cache.get(_LIMITED)
    if found is None:
        found = cache[_LIMITED] = sorted(
            {
                node.id
                for node in walk_nodes(definition.nodes)
                if isinstance(node, TaskNode)
                and node.metadata is not None
                and node.metadata.limits is not None
            }
        )
    return found


_LIMITED = "limited_tasks"


def check_storage(storage: object, definition: WorkflowDefinition) -> None:
    """Refuse to run (or submit) a workflow with task limits on a storage that cannot
    enforce them: a limit that is not enforced is a silent overrun."""
    limited = limited_tasks(definition)
    if limited and not isinstance(storage, TaskLimitStorage):  # same names, sync or async
        raise WorkflowError(
            f"workflow {definition.workflow_id!r} has task limits (max_concurrent or "
            f"rate_limit on {', '.join(repr(t) for t in limited)}), which "
            f"{type(storage).__name__} does not enforce (PostgresBackend, SqliteBackend and "
            "InMemoryBackend do): use one of those, or remove the limits from the tasks"
        )
