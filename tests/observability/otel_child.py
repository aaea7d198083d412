"""A process that starts ``shop`` on a SQLite file under an application span, and crashes in
``ship`` (test_traces.py): argv = database path, span file, traceparent file."""

from __future__ import annotations

import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sayiir import DurableEngine
from sayiir.backends.sqlite import SqliteBackend
from sayiir.observability import instrument

sys.path.insert(0, str(Path(__file__).parents[2]))  # the repository root: tests.*

from tests.observability.otelflows import ORDER, FileSpanExporter, shop


def main() -> None:
    db, spans, parent = sys.argv[1:4]
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(Path(spans))))
    instrument(tracer_provider=provider)
    with provider.get_tracer("app").start_as_current_span("checkout"):
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        Path(parent).write_text(carrier["traceparent"], encoding="utf-8")
        backend = SqliteBackend(db, lease_secs=0.5)
        DurableEngine(backend).run(shop, "order-7", ORDER)  # dies in ship
    raise SystemExit("ship did not crash the process")


if __name__ == "__main__":
    main()
