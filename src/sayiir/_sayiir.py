"""The reference's private extension module, kept importable for code that reaches into it.

``from sayiir._sayiir import DeserializationError`` and the ``Py*`` class names of the
reference keep working; they are the public classes under their reference names.
"""

from __future__ import annotations

from sayiir.backends.memory import InMemoryBackend as PyInMemoryBackend
from sayiir.core.builder import FlowBuilder as PyFlowBuilder
from sayiir.core.context import TaskExecutionContext as PyTaskExecutionContext
from sayiir.core.context import get_task_context
from sayiir.core.metadata import RetryPolicy as PyRetryPolicy
from sayiir.core.metadata import TaskMetadata as PyTaskMetadata
from sayiir.core.nodes import NodeInfo
from sayiir.core.nodes import WorkflowDefinition as PyWorkflow
from sayiir.core.status import WorkflowStatus as PyWorkflowStatus
from sayiir.distributed.client import WorkflowClient as PyWorkflowClient
from sayiir.distributed.worker import Worker as PyWorker
from sayiir.distributed.worker import WorkerHandle as PyWorkerHandle
from sayiir.engine.engines import DurableEngine as PyDurableEngine
from sayiir.engine.engines import WorkflowEngine as PyWorkflowEngine
from sayiir.errors import (
    BackendError,
    DeserializationError,
    InstanceAlreadyExistsError,
    TaskError,
    WorkflowError,
)
from sayiir.observability.tracing import init_tracing, shutdown_tracing

__all__ = [
    "BackendError",
    "DeserializationError",
    "InstanceAlreadyExistsError",
    "NodeInfo",
    "PyDurableEngine",
    "PyFlowBuilder",
    "PyInMemoryBackend",
    "PyRetryPolicy",
    "PyTaskExecutionContext",
    "PyTaskMetadata",
    "PyWorker",
    "PyWorkerHandle",
    "PyWorkflow",
    "PyWorkflowClient",
    "PyWorkflowEngine",
    "PyWorkflowStatus",
    "TaskError",
    "WorkflowError",
    "get_task_context",
    "init_tracing",
    "shutdown_tracing",
]


def __getattr__(name: str) -> object:
    if name == "PyPostgresBackend":  # needs the postgres extra: imported on first use
        from sayiir.backends.postgres import PostgresBackend

        return PostgresBackend
    raise AttributeError(f"module 'sayiir._sayiir' has no attribute {name!r}")
