"""The task execution context, readable from inside a running task."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from sayiir.core.metadata import TaskMetadata

__all__ = ["TaskExecutionContext", "current_context", "get_task_context"]


class TaskExecutionContext:
    """Where the running task is: workflow, instance, task id and options.

    >>> @task
    ... def charge(order):
    ...     ctx = get_task_context()
    ...     return f"{ctx.instance_id}/{ctx.task_id}"
    """

    __slots__ = ("instance_id", "metadata", "task_id", "workflow_id", "workflow_metadata")

    workflow_id: str
    instance_id: str
    task_id: str
    metadata: TaskMetadata
    workflow_metadata: dict[str, Any] | None

    def __init__(
        self,
        workflow_id: str,
        instance_id: str,
        task_id: str,
        metadata: TaskMetadata,
        workflow_metadata: dict[str, Any] | None = None,
    ) -> None:
        object.__setattr__(self, "workflow_id", workflow_id)
        object.__setattr__(self, "instance_id", instance_id)
        object.__setattr__(self, "task_id", task_id)
        object.__setattr__(self, "metadata", metadata)
        object.__setattr__(self, "workflow_metadata", workflow_metadata)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("TaskExecutionContext is read-only")

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
