"""The run and control functions of the reference API (``sayiir.executor``).

Each call builds a cheap engine; all durable state lives in the backend.
"""

from __future__ import annotations

from typing import Any

from sayiir.backends.memory import InMemoryBackend
from sayiir.core.status import WorkflowStatus
from sayiir.engine.engines import DurableEngine, WorkflowEngine
from sayiir.errors import WorkflowError

__all__ = [
    "cancel_workflow",
    "pause_workflow",
    "resume_workflow",
    "run_durable_workflow",
    "run_workflow",
    "send_signal",
    "unpause_workflow",
]

_PLAIN = WorkflowEngine()


def run_workflow(
    workflow: Any,
    input_data: Any,
    *,
    instance_id: str | None = None,
    backend: Any = None,
    conflict_policy: str | None = None,
) -> Any:
    """Run a workflow and return its output; raises ``TaskError`` when a task fails.

    >>> from sayiir import Flow
    >>> run_workflow(Flow("double").then(lambda x: x * 2, name="double").build(), 21)
    42

    With ``instance_id`` the run is durable (see ``run_durable_workflow``) and
    anything but completion raises ``WorkflowError``.
    """
    if instance_id is None:
        return _PLAIN.run(workflow, input_data)
    status = run_durable_workflow(workflow, instance_id, input_data, backend, conflict_policy)
    if status.status == "completed":
        return status.output
    raise WorkflowError(
        f"Workflow did not complete (status={status.status}). "
        "Use run_durable_workflow() to inspect the full status."
    )


def run_durable_workflow(
    workflow: Any,
    instance_id: str,
    input_data: Any,
    backend: Any = None,
    conflict_policy: str | None = None,
) -> WorkflowStatus:
    """Start a durable run, checkpointing after every task; return its status.

    >>> from sayiir import Flow, SqliteBackend
    >>> wf = Flow("double").then(lambda x: x * 2, name="double").build()
    >>> backend = SqliteBackend("runs.db")
    >>> run_durable_workflow(wf, "order-123", 42, backend=backend).status
    'completed'

    Task failures are reported as ``status="failed"``, not raised. Without a
    backend, a throwaway ``InMemoryBackend`` is used.
    """
    engine = DurableEngine(backend if backend is not None else InMemoryBackend(), conflict_policy)
    return engine.run(workflow, instance_id, input_data)


def resume_workflow(workflow: Any, instance_id: str, backend: Any) -> WorkflowStatus:
    """Continue a run from its last checkpoint (after a crash, a delay or a signal).

    >>> from sayiir import Flow, InMemoryBackend
    >>> wf = Flow("approve").wait_for_signal("ok").then(lambda x: x + 1, name="inc").build()
    >>> backend = InMemoryBackend()
    >>> run_durable_workflow(wf, "order-123", 0, backend).status
    'awaiting_signal'
    >>> send_signal("order-123", "ok", 41, backend)
    >>> resume_workflow(wf, "order-123", backend).output
    42
    """
    return DurableEngine(backend).resume(workflow, instance_id)


def cancel_workflow(
    instance_id: str, backend: Any, reason: str | None = None, cancelled_by: str | None = None
) -> None:
    """Cancel a run: at once if parked, else when its running task finishes.

    >>> from sayiir import Flow, InMemoryBackend
    >>> backend = InMemoryBackend()
    >>> wf = Flow("approve").wait_for_signal("ok").then(lambda x: x, name="ship").build()
    >>> run_durable_workflow(wf, "order-1", 1, backend).status
    'awaiting_signal'
    >>> cancel_workflow("order-1", backend, reason="dup", cancelled_by="ops")
    >>> backend.get_instance("order-1").status.value
    'cancelled'
    """
    DurableEngine(backend).cancel(instance_id, reason, cancelled_by)


def pause_workflow(
    instance_id: str, backend: Any, reason: str | None = None, paused_by: str | None = None
) -> None:
    """Pause a run: at once if parked, else when its running task finishes.

    >>> from sayiir import Flow, InMemoryBackend
    >>> backend = InMemoryBackend()
    >>> wf = Flow("approve").wait_for_signal("ok").then(lambda x: x, name="ship").build()
    >>> run_durable_workflow(wf, "order-123", 1, backend).status
    'awaiting_signal'
    >>> pause_workflow("order-123", backend, reason="maintenance")
    >>> resume_workflow(wf, "order-123", backend).status
    'paused'
    """
    DurableEngine(backend).pause(instance_id, reason, paused_by)


def unpause_workflow(instance_id: str, backend: Any) -> None:
    """Make a paused run runnable again; call ``resume_workflow`` (or let a worker) run it.

    >>> from sayiir import Flow, InMemoryBackend
    >>> backend = InMemoryBackend()
    >>> wf = Flow("approve").wait_for_signal("ok").then(lambda x: x, name="ship").build()
    >>> run_durable_workflow(wf, "order-123", 1, backend).status
    'awaiting_signal'
    >>> pause_workflow("order-123", backend)
    >>> unpause_workflow("order-123", backend)
    >>> resume_workflow(wf, "order-123", backend).status
    'awaiting_signal'
    """
    DurableEngine(backend).unpause(instance_id)


def send_signal(instance_id: str, signal_name: str, payload: Any, backend: Any) -> None:
    """Buffer an event for ``wait_for_signal(signal_name)``; it never runs the workflow.

    >>> from sayiir import Flow, InMemoryBackend
    >>> backend = InMemoryBackend()
    >>> wf = Flow("approve").wait_for_signal("approved").then(lambda a: a["by"], name="by").build()
    >>> run_durable_workflow(wf, "order-123", 1, backend).status
    'awaiting_signal'
    >>> send_signal("order-123", "approved", {"by": "alice"}, backend)
    >>> resume_workflow(wf, "order-123", backend).output
    'alice'
    """
    DurableEngine(backend).send_signal(instance_id, signal_name, payload)
