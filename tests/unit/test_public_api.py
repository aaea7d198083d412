"""The public names are pinned: adding, removing or reordering one is a decision, made here."""

from __future__ import annotations

import importlib

import sayiir
import sayiir._sayiir

# The reference's order, then ours (sayiir/__init__.py keeps that order on purpose).
SAYIIR_ALL = [
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
    "CheckpointingRunner",
    "Codec",
    "JsonCodec",
    "SqliteBackend",
    "Schedule",
    "RateLimit",
]

# The reference's private extension module, as code that reaches into it sees it.
SAYIIR_EXT_ALL = [
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


def test_sayiir_all_is_pinned() -> None:
    assert sayiir.__all__ == SAYIIR_ALL


def test_sayiir_ext_all_is_pinned() -> None:
    assert sayiir._sayiir.__all__ == SAYIIR_EXT_ALL


def test_every_public_name_resolves() -> None:
    # Lazy names (PostgresBackend, Worker, ...) included: each one imports, or names its extra.
    for module, names in ((sayiir, SAYIIR_ALL), (sayiir._sayiir, SAYIIR_EXT_ALL)):
        for name in names:
            try:
                assert getattr(module, name) is not None, name
            except ImportError as exc:  # an optional extra missing: the message says which
                assert "pip install" in str(exc), (name, exc)


def test_the_reference_postgres_name_stays_reachable() -> None:
    ext = importlib.import_module("sayiir._sayiir")
    try:
        backend = ext.PyPostgresBackend
    except ImportError as exc:
        assert "pip install" in str(exc)
    else:
        assert backend is sayiir.PostgresBackend


def test_statuses_and_metadata_compare_by_value_and_are_unhashable() -> None:
    # They define __eq__ and are mutable: Python makes them unhashable, as the reference's.
    assert sayiir.TaskMetadata(priority=2) == sayiir.TaskMetadata(priority=2)
    assert sayiir.WorkflowStatus("completed") == sayiir.WorkflowStatus("completed")
    for value in (sayiir.WorkflowStatus("completed"), sayiir.TaskMetadata()):
        try:
            hash(value)
        except TypeError as exc:
            assert "unhashable" in str(exc)
        else:
            raise AssertionError(f"{type(value).__name__} is hashable")
