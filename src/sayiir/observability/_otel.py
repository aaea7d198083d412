"""The OpenTelemetry observer: spans of run executions and task attempts, and their metrics.

Installed by ``instrument()`` (``sayiir.observability``) as ``sayiir.engine._observe.OBSERVER``.
Only imported when the ``otel`` extra is installed.

Spans (docs/observability.md):

- ``sayiir.workflow <workflow_id>``: one execution of a run (a start, a resume, a worker's
  turn on a claim), from its first step to its outcome. Its parent is the trace context the
  run stored when it started (the caller's current span), so every execution of a run, in
  any process, is part of one trace.
- ``sayiir.task <task_id>``: one attempt of a task, child of its execution's span, current
  while the task body runs (spans the task makes nest under it). A step replayed from a
  checkpoint makes no span.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sayiir._version import __version__
from sayiir.core.records import FinalState, InstanceRecord
from sayiir.core.records import Status as RunStatus
from sayiir.engine._invoke import TaskTimeout
from sayiir.observability._metrics import Instruments

__all__ = ["OtelObserver"]

_PROPAGATOR = TraceContextTextMapPropagator()
_SCOPE = "sayiir"

# Attribute names: OpenTelemetry's semantic conventions where one exists (error.type), the
# sayiir.* namespace for the rest.
WORKFLOW_ID = "sayiir.workflow.id"
INSTANCE_ID = "sayiir.instance.id"
DEFINITION_HASH = "sayiir.workflow.definition_hash"
WORKER_ID = "sayiir.worker.id"
RUN_OUTCOME = "sayiir.run.outcome"
TASK_ID = "sayiir.task.id"
TASK_KEY = "sayiir.task.key"
ATTEMPT = "sayiir.task.attempt"
TASK_OUTCOME = "sayiir.task.outcome"
RETRY_DELAY = "sayiir.task.retry_delay_s"
ERROR_TYPE = "error.type"


def _error_type(error: BaseException) -> str:
    """``error.type``: the exception's qualified class name (builtins bare), ``timeout`` for
    an attempt that ran past its timeout (the semantic conventions' own example)."""
    kind = type(error)
    if kind is TaskTimeout:
        return "timeout"
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


class _Attempt:
    """One task attempt: its span and what its metrics need."""

    __slots__ = ("_ins", "_span", "_started", "_task_id", "_workflow_id")

    def __init__(
        self, span: Span, instruments: Instruments, workflow_id: str, task_id: str
    ) -> None:
        self._span = span
        self._ins = instruments
        self._workflow_id = workflow_id
        self._task_id = task_id
        self._started = time.perf_counter()

    def activate(self) -> Callable[[], None]:
        token = otel_context.attach(trace.set_span_in_context(self._span))
        return lambda: otel_context.detach(token)

    def end(self, outcome: str, error: BaseException | None, retry_in: float | None) -> None:
        span = self._span
        span.set_attribute(TASK_OUTCOME, outcome)
        if error is not None:
            span.set_attribute(ERROR_TYPE, _error_type(error))
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        if retry_in is not None:
            span.set_attribute(RETRY_DELAY, retry_in)
        span.end()
        self._ins.attempt_ended(
            self._workflow_id,
            self._task_id,
            outcome,
            type(error) is TaskTimeout,
            time.perf_counter() - self._started,
        )


class _Execution:
    """One execution of a run: its span; task attempts nest under it."""

    __slots__ = ("_context", "_created", "_ins", "_span", "_tracer", "instance_id", "workflow_id")

    def __init__(
        self,
        tracer: trace.Tracer,
        instruments: Instruments,
        span: Span,
        workflow_id: str,
        instance_id: str,
        created: float,
    ) -> None:
        self._tracer = tracer
        self._ins = instruments
        self._span = span
        self._context = trace.set_span_in_context(span)
        self.workflow_id = workflow_id
        self.instance_id = instance_id
        self._created = created  # epoch seconds the run was created (run duration)

    def attempt(self, task_id: str, key: str, attempt: int) -> _Attempt:
        # The workflow id is in the parent's attributes; the key only when it says more than
        # the task id (a second use ``id#2``, a loop iteration ``loop_0@2/id``).
        attributes: dict[str, str | int] = {
            INSTANCE_ID: self.instance_id,
            TASK_ID: task_id,
            ATTEMPT: attempt,
        }
        if key != task_id:
            attributes[TASK_KEY] = key
        span = self._tracer.start_span(
            f"sayiir.task {task_id}", self._context, SpanKind.INTERNAL, attributes
        )
        return _Attempt(span, self._ins, self.workflow_id, task_id)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        self._span.add_event(name, attributes)

    def end(self, final: FinalState | None, error: BaseException | None) -> None:
        span = self._span
        if final is None:
            # The run goes on elsewhere (worker mode), or the execution stopped without an
            # outcome (a crash of the engine, storage that failed for good).
            outcome = "suspended" if error is None else "interrupted"
        else:
            outcome = final.status.value
            if final.status is RunStatus.WAITING:
                span.add_event(
                    "sayiir.delay",
                    {
                        "sayiir.delay.id": final.park_node or "",
                        "sayiir.delay.wake_at": final.wake_at or 0.0,
                    },
                )
            elif final.status is RunStatus.AWAITING_SIGNAL:
                span.add_event(
                    "sayiir.signal.wait", {"sayiir.signal.name": final.signal_name or ""}
                )
        span.set_attribute(RUN_OUTCOME, outcome)
        if error is not None:
            span.set_attribute(ERROR_TYPE, _error_type(error))
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        elif final is not None and final.status is RunStatus.FAILED:
            span.set_status(Status(StatusCode.ERROR, final.error or "failed"))
        span.end()
        if final is not None:
            self._ins.run_ended(self.workflow_id, final.status.value, time.time() - self._created)


def _continued(traceparent: str) -> tuple[Context, list[Link] | None]:
    """The stored trace context of a run to continue, and a link to the caller's current
    span when that belongs to another trace (an operator's resume inside their own span)."""
    parent = _PROPAGATOR.extract({"traceparent": traceparent})
    stored = trace.get_current_span(parent).get_span_context()
    here = trace.get_current_span().get_span_context()
    if here.is_valid and here.trace_id != stored.trace_id:
        return parent, [Link(here)]
    return parent, None


class OtelObserver:
    """``sayiir.engine._observe.Observer`` on OpenTelemetry's tracing and metrics APIs."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider)
        self.instruments = Instruments(meter_provider, __version__)

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent")

    def run_created(self, workflow_id: str) -> None:
        self.instruments.run_started(workflow_id)

    def claimed(self, workflow_id: str, waited: float) -> None:
        self.instruments.schedule_to_start.record(max(waited, 0.0), {"workflow_id": workflow_id})

    def execution(
        self,
        workflow_id: str,
        definition_hash: str,
        instance_id: str,
        run: InstanceRecord | None,
        worker_id: str | None,
    ) -> _Execution:
        attributes: dict[str, str] = {
            WORKFLOW_ID: workflow_id,
            INSTANCE_ID: instance_id,
            DEFINITION_HASH: definition_hash,
        }
        if worker_id is not None:
            attributes[WORKER_ID] = worker_id
        parent, links = None, None
        if run is None:  # the in-memory path: a child of the caller's span
            created = time.time()
            self.instruments.run_started(workflow_id)
        else:
            created = run.created_at
            if run.traceparent is not None:
                parent, links = _continued(run.traceparent)
        span = self._tracer.start_span(
            f"sayiir.workflow {workflow_id}", parent, SpanKind.INTERNAL, attributes, links
        )
        return _Execution(self._tracer, self.instruments, span, workflow_id, instance_id, created)

    def trace_ids(self) -> tuple[str, str] | None:
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
