"""Operator actions on runs, written once for the ``sayiir runs`` CLI and the web console.

Each action checks its input, acts through the storage protocol (so it works on memory,
SQLite and PostgreSQL alike), and records who did it in the audit log
(``RunQueries.record_audit``). A refused action raises ``ActionError`` (the run is unknown,
or its state does not allow it) and records nothing.

>>> from sayiir import Flow, InMemoryBackend, run_durable_workflow
>>> backend = InMemoryBackend()
>>> wf = Flow("approve").wait_for_signal("ok").then(lambda x: x, name="ship").build()
>>> run_durable_workflow(wf, "order-1", 1, backend).status
'awaiting_signal'
>>> cancel(backend, "order-1", actor="alice", reason="duplicate").message
'cancelled'
>>> [(e.actor, e.action) for e in backend.list_audit("order-1")]
[('alice', 'cancel')]

Semantics of the two actions that make runs runnable again:

- ``retry``: a *failed* run becomes running again, keeping its checkpoints; the attempts of
  the steps that have none are dropped, so the failed step gets its full retry budget again.
  A run submitted for workers is queued at once; a run executed in-process continues when
  its application calls ``resume_workflow`` (or ``sayiir runs resume --workflows``).
- ``fork``: a *new* run of the same workflow and input, holding the source run's checkpoints
  of every step that started before ``from_step`` (in start order); ``from_step`` and all
  later steps run again. Signals buffered for the source are not copied. The audit links
  both runs (``fork`` on the source, ``forked_from`` on the new run).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sayiir.backends._views import FORK, FORKED_FROM
from sayiir.core.queries import AuditEntry, RunFilter, RunSort
from sayiir.core.records import ACTIVE, InstanceRecord, QueueItem, Status, StepRecord
from sayiir.errors import InstanceNotFoundError, WorkflowError
from sayiir.executor import (
    cancel_workflow,
    pause_workflow,
    resume_workflow,
    send_signal,
    unpause_workflow,
)

__all__ = [
    "ACTIONS",
    "ActionError",
    "ActionResult",
    "BulkResult",
    "bulk",
    "cancel",
    "fork",
    "matching_runs",
    "pause",
    "resume",
    "retry",
    "signal",
    "unpause",
]

# Actions a bulk operation may apply (signal, fork take per-run arguments, retry only fits
# failed runs: all three work in bulk too, with the same arguments for every run).
ACTIONS = ("cancel", "pause", "unpause", "resume", "retry", "signal")


class ActionError(WorkflowError):
    """An action was refused: the run is unknown (``not_found``) or its state forbids it."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did: ``message`` is a short past-tense phrase for people."""

    instance_id: str
    action: str
    message: str
    new_instance_id: str | None = None


@dataclass(slots=True)
class BulkResult:
    """A bulk action: the runs it covered, what happened to each, what was refused."""

    action: str
    dry_run: bool
    matched: list[str] = field(default_factory=list)
    done: list[ActionResult] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(UTC)


def _audit(backend: Any, actor: str, action: str, iid: str, **detail: Any) -> None:
    clean = {k: v for k, v in detail.items() if v is not None}
    backend.record_audit(AuditEntry(_now(), actor, action, iid, clean))


def _record(backend: Any, instance_id: str) -> InstanceRecord:
    rec: InstanceRecord | None = backend.get_instance(instance_id)
    if rec is None:
        raise ActionError(f"no run '{instance_id}'", not_found=True)
    return rec


def _guard(fn: Callable[[], None], instance_id: str) -> None:
    """Run an engine call; its refusals (unknown run, wrong state) become ``ActionError``."""
    try:
        fn()
    except InstanceNotFoundError:
        raise ActionError(f"no run '{instance_id}'", not_found=True) from None
    except WorkflowError as exc:
        if isinstance(exc, ActionError):
            raise
        raise ActionError(str(exc)) from None


def cancel(
    backend: Any, instance_id: str, *, actor: str, reason: str | None = None
) -> ActionResult:
    """Cancel a run: at once if parked or paused, else at its next step boundary."""
    _guard(lambda: cancel_workflow(instance_id, backend, reason, actor), instance_id)
    _audit(backend, actor, "cancel", instance_id, reason=reason)
    status = _record(backend, instance_id).status
    return ActionResult(
        instance_id, "cancel", "cancelled" if status is Status.CANCELLED else "cancel requested"
    )


def pause(backend: Any, instance_id: str, *, actor: str, reason: str | None = None) -> ActionResult:
    """Pause a run: at once if parked, else at its next step boundary."""
    _guard(lambda: pause_workflow(instance_id, backend, reason, actor), instance_id)
    _audit(backend, actor, "pause", instance_id, reason=reason)
    status = _record(backend, instance_id).status
    return ActionResult(
        instance_id, "pause", "paused" if status is Status.PAUSED else "pause requested"
    )


def unpause(backend: Any, instance_id: str, *, actor: str) -> ActionResult:
    """Make a paused run runnable (a worker-run one is queued; see ``resume``)."""
    _guard(lambda: unpause_workflow(instance_id, backend), instance_id)
    _audit(backend, actor, "unpause", instance_id)
    return ActionResult(instance_id, "unpause", "unpaused")


def signal(backend: Any, instance_id: str, name: str, payload: Any, *, actor: str) -> ActionResult:
    """Send signal ``name`` with ``payload`` (any value the backend's codec encodes)."""
    _record(backend, instance_id)  # an operator's signal is for a run that exists
    _guard(lambda: send_signal(instance_id, name, payload, backend), instance_id)
    _audit(backend, actor, "signal", instance_id, name=name)
    return ActionResult(instance_id, "signal", f"signal '{name}' sent")


def resume(
    backend: Any,
    instance_id: str,
    *,
    actor: str,
    workflows: Sequence[Any] = (),
) -> ActionResult:
    """Run an active run again: a worker-run one is queued for the workers; a run executed
    in-process is resumed here when its workflow is among ``workflows`` (imported by the
    caller), which this process then executes until the run parks or ends."""
    rec = _record(backend, instance_id)
    if rec.status not in ACTIVE:
        raise ActionError(
            f"cannot resume run '{instance_id}': it is {rec.status.value} "
            "(unpause a paused run first; retry a failed one)"
        )
    if rec.distributed:
        backend.enqueue(instance_id, [QueueItem("")])
        _audit(backend, actor, "resume", instance_id, how="queued")
        return ActionResult(instance_id, "resume", "queued for the workers")
    workflow = next((w for w in workflows if w.definition_hash == rec.definition_hash), None)
    if workflow is None:
        raise ActionError(
            f"run '{instance_id}' executes in its application's process, not on workers: "
            "call resume_workflow(workflow, id, backend) there, or pass the workflows "
            "(sayiir runs resume --workflows MODULE:ATTRIBUTE) to resume it here"
        )
    _audit(backend, actor, "resume", instance_id, how="in-process")
    status = resume_workflow(workflow, instance_id, backend)
    return ActionResult(instance_id, "resume", f"resumed: {status.status}")


def retry(
    backend: Any, instance_id: str, *, actor: str, workflows: Sequence[Any] = ()
) -> ActionResult:
    """Retry a failed run from its last checkpoint, with fresh attempts (module docstring)."""
    rec = _record(backend, instance_id)
    found = backend.reopen_failed(instance_id)
    if found is None:
        raise ActionError(f"no run '{instance_id}'", not_found=True)
    if found is not Status.FAILED:
        raise ActionError(f"cannot retry run '{instance_id}': it is {found.value}, not failed")
    _audit(backend, actor, "retry", instance_id, previous_error=rec.error)
    if rec.distributed:
        return ActionResult(instance_id, "retry", "queued for the workers")
    if any(w.definition_hash == rec.definition_hash for w in workflows):
        return resume(backend, instance_id, actor=actor, workflows=workflows)
    return ActionResult(instance_id, "retry", "runnable: resume it from its application")


def _steps_in_order(backend: Any, instance_id: str) -> Iterator[tuple[str, str | None]]:
    cursor = None
    while True:
        d = backend.run_detail(instance_id, steps_cursor=cursor, steps_limit=5000, preview_bytes=1)
        if d is None:
            return
        for s in d.steps:
            yield s.key, s.task_id
        cursor = d.steps_next_cursor
        if cursor is None:
            return


def fork(
    backend: Any,
    instance_id: str,
    from_step: str,
    *,
    actor: str,
    new_id: str | None = None,
) -> ActionResult:
    """A new run reusing the checkpoints before ``from_step`` (module docstring)."""
    state = backend.load(instance_id)
    if state is None:
        raise ActionError(f"no run '{instance_id}'", not_found=True)
    steps = list(_steps_in_order(backend, instance_id))
    keys = [k for k, _ in steps]
    if from_step not in keys:
        shown = ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else "")
        raise ActionError(
            f"run '{instance_id}' has no step {from_step!r}; its steps: {shown or '(none)'}"
        )
    kept = steps[: keys.index(from_step)]
    src = state.record
    new_id = new_id or f"{instance_id}-fork-{uuid.uuid4().hex[:8]}"
    now = time.time()
    token = str(uuid.uuid4())
    record = InstanceRecord(
        new_id,
        src.workflow_id,
        src.definition_hash,
        Status.PAUSED,  # checkpoints first, then runnable: a worker never sees it half-made
        src.input,
        paused_by=actor,
        reason=f"fork of {instance_id}",
        created_at=now,
        updated_at=now,
        distributed=src.distributed,
        priority=src.priority,
        token=token,
    )
    if backend.create_instance(record, replace=False) is not None:
        raise ActionError(f"a run '{new_id}' exists already: choose another --new-id")
    outputs = [
        StepRecord(key, state.checkpoints[key], task_id, started_at=now, finished_at=now)
        for key, task_id in kept
        if key in state.checkpoints
    ]
    if outputs:
        backend.save_steps(new_id, outputs, token=token)
    backend.unpause(new_id)
    _audit(backend, actor, FORK, instance_id, new_instance_id=new_id, from_step=from_step)
    _audit(backend, actor, FORKED_FROM, new_id, source_instance_id=instance_id, from_step=from_step)
    return ActionResult(
        instance_id, "fork", f"forked as '{new_id}' ({len(outputs)} checkpoints)", new_id
    )


def matching_runs(backend: Any, filter: RunFilter, page: int = 500) -> Iterator[str]:
    """Every instance id ``filter`` matches, in creation order, read a keyset page at a time
    (a bulk action never loads the whole list at once)."""
    cursor = None
    while True:
        got = backend.list_runs(filter, RunSort("created_at", False), cursor, page)
        for run in got.runs:
            yield run.instance_id
        cursor = got.next_cursor
        if cursor is None:
            return


def bulk(
    backend: Any,
    action: str,
    filter: RunFilter,
    *,
    actor: str,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> BulkResult:
    """Apply ``action`` to every run ``filter`` matches (``dry_run``: list them only).

    ``options`` are the action's own (``reason``, ``name`` and ``payload`` of a signal...).
    A run whose state refuses the action is reported in ``refused`` and the others go on.
    ``progress(done, total)`` is called after each run.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown bulk action {action!r}: use one of {', '.join(ACTIONS)}")
    result = BulkResult(action, dry_run, list(matching_runs(backend, filter)))
    if dry_run:
        return result
    functions: dict[str, Callable[..., ActionResult]] = {
        "cancel": cancel,
        "pause": pause,
        "unpause": unpause,
        "resume": resume,
        "retry": retry,
        "signal": signal,
    }
    fn = functions[action]
    total = len(result.matched)
    for n, iid in enumerate(result.matched, start=1):
        try:
            if action == "signal":
                result.done.append(
                    fn(backend, iid, options["name"], options.get("payload"), actor=actor)
                )
            else:
                result.done.append(fn(backend, iid, actor=actor, **options))
        except ActionError as exc:
            result.refused[iid] = str(exc)
        if progress is not None:
            progress(n, total)
    return result
