"""The concurrency key and limit of a new run, checked once for every way a run is created.

``WorkflowClient.submit`` and the schedules (``sayiir.distributed.schedules``) both ask here:
a workflow with run limits gets its key computed from the run's input (``RunLimits.key_for``),
and a backend that does not enforce limits in its claim (it is no ``ConcurrencyStorage``) is
refused, since a limit that is not enforced is a silent overrun.
"""

from __future__ import annotations

from typing import Any

from sayiir.backends.protocol import ConcurrencyStorage
from sayiir.core.limits import RunLimits
from sayiir.errors import WorkflowError

__all__ = ["concurrency_of"]


def concurrency_of(
    storage: Any, workflow: Any, workflow_id: str, value: Any
) -> tuple[str, int] | None:
    """The run's concurrency key and limit (``None``: the workflow has no run limit).

    >>> from sayiir import Flow, InMemoryBackend
    >>> wf = Flow("orders", concurrency_key=lambda o: o["customer"], max_concurrent=1)
    >>> wf = wf.then(lambda o: o, name="ship").build()
    >>> concurrency_of(InMemoryBackend(), wf, "orders", {"customer": 7})
    ('orders:7', 1)
    """
    limits: RunLimits | None = getattr(workflow, "_limits", None)
    if limits is None:
        return None
    if not isinstance(storage, ConcurrencyStorage):
        raise WorkflowError(
            f"workflow {workflow_id!r} has a run concurrency limit, which "
            f"{type(storage).__name__} does not enforce (PostgresBackend, SqliteBackend and "
            "InMemoryBackend do): use one of those, or build the flow without "
            "max_concurrent_runs / concurrency_key"
        )
    return limits.key_for(workflow_id, value)
