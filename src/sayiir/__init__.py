"""sayiir: durable workflows in plain Python.

>>> from sayiir import Flow, task, run_workflow
>>> @task
... def double(x: int) -> int:
...     return x * 2
>>> run_workflow(Flow("demo").then(double).build(), 21)
42

The public names are listed in ``__all__`` (the reference's order, then ours).
Backends that need optional packages (PostgreSQL) and the distributed worker are
imported on first use, so ``import sayiir`` needs nothing but the standard library.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sayiir._version import __version__ as __version__
from sayiir.backends.memory import InMemoryBackend
from sayiir.core.builder import FlowBuilder
from sayiir.core.codec import Codec, JsonCodec
from sayiir.core.context import TaskExecutionContext, get_task_context
from sayiir.core.metadata import RetryPolicy, TaskMetadata
from sayiir.core.status import WorkflowStatus
from sayiir.core.task_limits import RateLimit
from sayiir.decorators import parse_duration, task
from sayiir.engine.engines import CheckpointingRunner, DurableEngine, WorkflowEngine
from sayiir.errors import (
    BackendError,
    InstanceAlreadyExistsError,
    TaskError,
    WorkflowError,
)
from sayiir.executor import (
    cancel_workflow,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    send_signal,
    unpause_workflow,
)
from sayiir.flow import BranchBuilder, Flow, ForkBuilder, NodeInfo, Workflow
from sayiir.loop_result import LoopResult, OnMax
from sayiir.observability.tracing import init_tracing, shutdown_tracing

# A library prints nothing unless asked to (init_tracing): without this handler, Python's
# "last resort" handler would print our warnings (e.g. database retries) to stderr.
logging.getLogger("sayiir").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from sayiir.backends.postgres import PostgresBackend
    from sayiir.backends.sqlite import SqliteBackend
    from sayiir.distributed.schedules import Schedule
    from sayiir.worker import Worker, WorkerHandle
    from sayiir.workflow_client import WorkflowClient

__all__ = [  # noqa: RUF022 -- the reference's order, then ours
    "BackendError",
    "BranchBuilder",
    "InstanceAlreadyExistsError",
    "DurableEngine",
    "Flow",
    "FlowBuilder",
    "ForkBuilder",
    "LoopResult",
    "OnMax",
    "NodeInfo",
    "InMemoryBackend",
    "PostgresBackend",
    "RetryPolicy",
    "TaskError",
    "TaskExecutionContext",
    "TaskMetadata",
    "get_task_context",
    "Workflow",
    "WorkflowEngine",
    "WorkflowError",
    "WorkflowStatus",
    "cancel_workflow",
    "pause_workflow",
    "resume_workflow",
    "run_durable_workflow",
    "run_workflow",
    "send_signal",
    "unpause_workflow",
    "parse_duration",
    "task",
    "Worker",
    "WorkerHandle",
    "WorkflowClient",
    "init_tracing",
    "shutdown_tracing",
    # Additions beyond the reference (spec §22).
    "CheckpointingRunner",
    "Codec",
    "JsonCodec",
    "SqliteBackend",
    "Schedule",
    "RateLimit",
]

_LAZY = {
    "PostgresBackend": "sayiir.backends.postgres",
    "SqliteBackend": "sayiir.backends.sqlite",
    "Worker": "sayiir.worker",
    "WorkerHandle": "sayiir.worker",
    "WorkflowClient": "sayiir.workflow_client",
    "Schedule": "sayiir.distributed.schedules",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sayiir' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
