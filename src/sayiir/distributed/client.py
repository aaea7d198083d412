"""``WorkflowClient``: submit and control runs from any process; it never executes tasks."""

from __future__ import annotations

from typing import Any

from sayiir.core.status import WorkflowStatus
from sayiir.engine import (
    Controls,
    backend_storage,
    check_policy,
    drive,
    instance_status,
    resolve,
    submit_run,
    task_result,
)

__all__ = ["WorkflowClient"]


class WorkflowClient(Controls):
    """Submit runs for workers, read their status, cancel, pause, signal.

    >>> from sayiir import Flow, InMemoryBackend
    >>> workflow = Flow("order").wait_for_signal("approved").then(lambda a: a, name="ship").build()
    >>> client = WorkflowClient(InMemoryBackend())  # PostgresBackend(url) to share with workers
    >>> client.submit(workflow, "order-42", {"amount": 10}).status
    'in_progress'
    >>> client.send_signal("order-42", "approved", {"by": "alice"})
    >>> client.status("order-42").status  # no worker has run it yet
    'in_progress'
    """

    def __init__(self, backend: Any, *, conflict_policy: str | None = None) -> None:
        self._storage = backend_storage(backend)
        self._policy = check_policy(conflict_policy)

    def submit(self, workflow: Any, instance_id: str, input: Any) -> WorkflowStatus:
        """Store a new run (per the conflict policy) for a worker to pick up."""
        definition, _ = resolve(workflow, {})
        s = self._storage
        op = submit_run(definition, s.codec, instance_id, input, self._policy)
        result: WorkflowStatus = drive(op, s)
        return result

    def status(self, instance_id: str) -> WorkflowStatus:
        result: WorkflowStatus = drive(
            instance_status(self._storage.codec, instance_id), self._storage
        )
        return result

    def get_task_result(self, instance_id: str, task_id: str) -> Any | None:
        """The output of one task of the run, or ``None`` if it has not run."""
        return drive(task_result(self._storage.codec, instance_id, task_id), self._storage)

    def cancel(
        self, instance_id: str, *, reason: str | None = None, cancelled_by: str | None = None
    ) -> None:
        """Cancel a run (options are keyword-only, as in the reference client)."""
        self._cancel(instance_id, reason, cancelled_by)

    def pause(
        self, instance_id: str, *, reason: str | None = None, paused_by: str | None = None
    ) -> None:
        """Pause a run (options are keyword-only, as in the reference client)."""
        self._pause(instance_id, reason, paused_by)

    def __repr__(self) -> str:
        return f"WorkflowClient(backend={self._storage!r})"
