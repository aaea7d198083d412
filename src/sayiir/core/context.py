"""The task execution context, readable from inside a running task."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, NamedTuple

from sayiir.core.metadata import TaskMetadata

__all__ = ["TaskExecutionContext", "current_context", "get_task_context"]


class TaskExecutionContext(NamedTuple):
    """Where the running task is: workflow, instance, task id and options (read-only).

    ``attempt`` counts the attempts of this task in this run (1 for the first, 2 for the
    first retry, ...): with ``instance_id`` and ``task_id`` it names this very attempt, for
    idempotency keys and for log records (docs/observability.md shows a logging filter).

    >>> from sayiir import Flow, run_durable_workflow, task
    >>> @task
    ... def charge(order):
    ...     ctx = get_task_context()
    ...     return f"{ctx.instance_id}/{ctx.task_id}"
    >>> run_durable_workflow(Flow("shop").then(charge).build(), "order-7", {}).output
    'order-7/charge'
    """

    workflow_id: str
    instance_id: str
    task_id: str
    metadata: TaskMetadata
    workflow_metadata: dict[str, Any] | None = None
    attempt: int = 1

    def __repr__(self) -> str:
        return (
            f"TaskExecutionContext(workflow_id={self.workflow_id!r}, "
            f"instance_id={self.instance_id!r}, task_id={self.task_id!r})"
        )


current_context: ContextVar[TaskExecutionContext | None] = ContextVar(
    "sayiir_task_context", default=None
)


def get_task_context() -> TaskExecutionContext | None:
    """The context of the task running in this thread or coroutine, else ``None``."""
    return current_context.get()
