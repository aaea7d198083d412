"""The exception tree users catch.

The reference package raises ``RuntimeError`` subclasses; we keep that shape so
``except RuntimeError`` and ``except sayiir.WorkflowError`` both keep working.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "DefinitionMismatchError",
    "DeserializationError",
    "InstanceAlreadyExistsError",
    "InstanceNotFoundError",
    "LeaseLostError",
    "RunFinishedError",
    "RunReplacedError",
    "TaskError",
    "WorkflowError",
]


class WorkflowError(RuntimeError):
    """A workflow could not be built, started, resumed or completed."""


class TaskError(WorkflowError):
    """A task failed on the in-memory path (after its retries)."""


class BackendError(WorkflowError):
    """The storage backend failed or refused the operation."""


class InstanceNotFoundError(BackendError):
    """No workflow instance has this id in the backend."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"Snapshot not found: {instance_id}")
        self.instance_id = instance_id


class InstanceAlreadyExistsError(WorkflowError):
    """A durable start found an existing instance under ``conflict_policy="fail"``."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"Workflow instance already exists: {instance_id}")
        self.instance_id = instance_id


class DefinitionMismatchError(WorkflowError):
    """The stored instance was started by a workflow with a different structure.

    Resuming it with the new definition would run different code against old
    checkpoints, so we refuse; both hashes are in the message.
    """

    def __init__(self, expected: str, found: str) -> None:
        super().__init__(
            f"Workflow definition mismatch: expected hash '{expected}', found '{found}'. "
            "The instance was started by a different version of this workflow; resume it "
            "with that version, or start a new instance."
        )
        self.expected = expected
        self.found = found


class DeserializationError(WorkflowError):
    """A stored or returned value could not be decoded into what the step expects."""


class LeaseLostError(BackendError):
    """A worker tried to write a result for a task it no longer owns (it was fenced off)."""


class RunReplacedError(BackendError):
    """Another execution owns this run now; this one was fenced off.

    Either a resume took the run over after this execution's lease expired (the process
    was stopped or too slow to renew it), or a new run was started under the same id with
    ``conflict_policy="terminate_existing"``. This execution stops at its next write, and
    writes nothing: the result of the task it was running is discarded.
    """

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"Workflow instance '{instance_id}' is now owned by another execution: a resume "
            "took it over after this execution's lease expired, or a new run replaced it "
            "(conflict_policy='terminate_existing'). This execution stopped here; the result "
            "of its in-flight task was discarded and nothing was written. Query the instance "
            "for its current status."
        )
        self.instance_id = instance_id


class RunFinishedError(BackendError):
    """A write was refused because the run has already finished (completed or failed)."""

    def __init__(self, instance_id: str, status: str) -> None:
        super().__init__(
            f"Workflow instance '{instance_id}' has already finished (status: {status}); "
            "this write was refused and nothing was written. A finished run never changes."
        )
        self.instance_id = instance_id
        self.status = status
