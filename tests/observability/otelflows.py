"""The workflow of the observability tests, and the span collection they share.

``shop``: ``reserve`` (fails its first attempt, retried), a fork of ``pack`` and ``bill``
joined by ``merge``, then ``ship``. With ``SAYIIR_TEST_CRASH_SHIP`` set, ``ship`` kills its
process (``os._exit``): the crash of the cross-process test (otel_child.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sayiir import Flow, RetryPolicy, get_task_context, task


@task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.01, backoff_multiplier=1.0))
def reserve(order: dict[str, Any]) -> dict[str, Any]:
    ctx = get_task_context()
    assert ctx is not None
    if ctx.attempt == 1:
        raise ConnectionError("stock service unavailable")
    return {**order, "reserved": True}


@task
def pack(order: dict[str, Any]) -> str:
    return f"box-{order['id']}"


@task
def bill(order: dict[str, Any]) -> int:
    return int(order["total"])


@task
def merge(parts: dict[str, Any]) -> dict[str, Any]:
    return {"box": parts["pack"], "billed": parts["bill"]}


@task
def ship(order: dict[str, Any]) -> str:
    if os.environ.get("SAYIIR_TEST_CRASH_SHIP"):
        os._exit(17)  # a real crash: nothing after this line runs, no span of ship is ended
    return f"shipped {order['box']}"


shop = Flow("shop").then(reserve).fork().branch(pack).branch(bill).join(merge).then(ship).build()

ORDER = {"id": 7, "total": 42}


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What the tests compare of a span (also the line format of ``FileSpanExporter``)."""
    ctx = span.context
    assert ctx is not None
    return {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
        "links": [
            [f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}"] for link in span.links
        ],
    }


class FileSpanExporter(SpanExporter):
    """Writes each finished span to a JSON-lines file at once (a process that crashes keeps
    what it exported)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(span_record(span)) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class Otel:
    """The providers of one test and what they collected."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("app")

    def spans(self) -> list[dict[str, Any]]:
        return [span_record(s) for s in self.exporter.get_finished_spans()]

    def metrics(self) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
        """``{metric name: {sorted labels: value (sums, gauges) or count (histograms)}}``."""
        found: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = found.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        labels = tuple(sorted((point.attributes or {}).items()))
                        # a sum or gauge: its value; a histogram: how many were recorded
                        points[labels] = getattr(point, "value", getattr(point, "count", None))
        return found
