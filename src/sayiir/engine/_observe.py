"""Where observability plugs in: spans and metrics of run executions and task attempts.

Nothing is installed normally (``OBSERVER`` is ``None``), and the engine pays one global
read and one branch per execution and per task attempt. ``sayiir.observability.instrument``
(called by ``init_tracing`` when the ``otel`` extra is installed) installs an ``Observer``
built on OpenTelemetry; the engine only knows this protocol, so it stays stdlib-only.

The engine tells the observer what really runs: an execution of a run (a start, a resume,
a worker's turn on a claim) and each attempt of a task inside it. A step replayed from a
checkpoint is never reported, so a resume shows only the work it did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "OBSERVER",
    "AttemptScope",
    "ExecutionScope",
    "Observer",
    "log_extra",
    "observer",
]


class AttemptScope(Protocol):
    """One attempt of one task (a span while tracing)."""

    def activate(self) -> Callable[[], None]:
        """Make the attempt current in this thread (user spans and logs nest under it);
        returns the function that undoes it."""
        ...

    def end(self, outcome: str, error: BaseException | None, retry_in: float | None) -> None:
        """The attempt is over: ``completed``, ``retry`` (another attempt follows after
        ``retry_in`` seconds) or ``failed`` (the run fails with ``error``)."""
        ...


class ExecutionScope(Protocol):
    """One execution of one run: its attempts nest under it."""

    def attempt(self, task_id: str, key: str, attempt: int) -> AttemptScope:
        """An attempt of ``task_id`` (checkpoint ``key``) starts now."""
        ...

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        """Something happened to the run that is not a task (a signal consumed)."""
        ...

    def end(self, final: Any, error: BaseException | None) -> None:
        """The execution is over: ``final`` is its ``FinalState`` (``None``: the run goes on
        elsewhere), ``error`` what ended it without one."""
        ...


class Observer(Protocol):
    """What the engine reports to; installed once per process."""

    def traceparent(self) -> str | None:
        """The caller's current trace context (W3C ``traceparent``), stored with a new run."""
        ...

    def run_created(self, workflow_id: str) -> None:
        """A new run was stored."""
        ...

    def claimed(self, workflow_id: str, waited: float) -> None:
        """A worker claimed a queue entry that had waited ``waited`` seconds."""
        ...

    def execution(
        self,
        workflow_id: str,
        definition_hash: str,
        instance_id: str,
        run: Any,
        worker_id: str | None,
    ) -> ExecutionScope:
        """An execution of ``instance_id`` starts; ``run`` is its ``InstanceRecord`` (the
        stored ``traceparent`` and ``created_at``), ``None`` on the in-memory path."""
        ...

    def trace_ids(self) -> tuple[str, str] | None:
        """The (trace id, span id) of the current span, in hex, if any."""
        ...


OBSERVER: Observer | None = None


def observer() -> Observer | None:
    """The installed observer (read at call time: it may be installed after import)."""
    return OBSERVER


def log_extra(
    instance_id: str | None, task_id: str | None = None, attempt: int | None = None
) -> dict[str, Any]:
    """The ``extra=`` of sayiir's log records: the run, task and attempt they are about,
    and the current trace and span ids when tracing is on."""
    extra: dict[str, Any] = {
        "sayiir_instance_id": instance_id,
        "sayiir_task_id": task_id,
        "sayiir_attempt": attempt,
    }
    obs = OBSERVER
    if obs is not None:
        ids = obs.trace_ids()
        if ids is not None:
            extra["sayiir_trace_id"], extra["sayiir_span_id"] = ids
    return extra
