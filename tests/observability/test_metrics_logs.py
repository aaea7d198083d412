"""The Prometheus endpoint, the queue gauges (one query per scrape) and log records that
carry run, task, attempt and trace ids (issue 13)."""

from __future__ import annotations

import logging
import secrets
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sayiir import DurableEngine, Flow, InMemoryBackend, WorkflowClient, get_task_context, task
from sayiir.observability import TaskContextFilter, uninstrument
from sayiir.observability._metrics import QueueGauges
from sayiir.observability.prometheus import serve_metrics
from tests.observability.otelflows import ORDER, Otel, shop


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield InMemoryBackend()
        return
    from sayiir import PostgresBackend

    prefix = f"q{secrets.token_hex(4)}_"  # an empty queue of its own in the module's database
    with PostgresBackend(request.getfixturevalue("pg_dsn"), table_prefix=prefix) as backend:
        yield backend


@pytest.mark.parametrize("queue", ["memory", "postgres"], indirect=True)
def test_a_claim_says_how_long_its_entry_waited(queue: Any) -> None:
    client = WorkflowClient(queue)
    wf = Flow("queued").then(lambda x: x, name="same").build()
    for i in range(3):
        client.submit(wf, f"q-{i}", i)
    [claim] = queue.claim("w1", [wf._inner.definition_hash], [], 1, 30.0)
    assert claim.instance_id == "q-0"
    assert claim.waited is not None
    assert claim.waited >= 0.0


@pytest.mark.parametrize("queue", ["memory", "postgres"], indirect=True)
def test_both_queue_gauges_cost_one_read_per_collection(queue: Any) -> None:
    if not hasattr(queue, "queue_stats"):
        pytest.skip("needs RunQueries.queue_stats on PostgreSQL (issue 14, console-data)")
    WorkflowClient(queue).submit(Flow("g").then(lambda x: x, name="same").build(), "g-1", 1)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    gauges = QueueGauges(queue.queue_stats, provider.get_meter("t"), min_interval=0.0)
    for n in (1, 2):
        data = reader.get_metrics_data()
        assert gauges.reads == n  # two gauges read, one query
        assert data is not None
        [scope] = data.resource_metrics[0].scope_metrics
        values = {m.name: getattr(m.data.data_points[0], "value", None) for m in scope.metrics}
        assert values["sayiir.queue.depth"] == 1
        assert values["sayiir.queue.oldest_ready_age"] is not None
        assert values["sayiir.queue.oldest_ready_age"] >= 0.0
    cached = QueueGauges(queue.queue_stats, provider.get_meter("u"), min_interval=3600.0)
    reader.get_metrics_data()
    reader.get_metrics_data()
    assert cached.reads == 1  # at most once per interval, however often it is scraped
    provider.shutdown()


def test_the_prometheus_endpoint_serves_runs_tasks_and_the_queue() -> None:
    backend = InMemoryBackend()
    server = serve_metrics(0, backend, addr="127.0.0.1", scrape_interval=0.0)
    try:
        DurableEngine(backend).run(shop, "order-p", ORDER)
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
    finally:
        server.close()
        uninstrument()
    lines = body.splitlines()
    assert 'sayiir_tasks_completed_total{task_id="pack",workflow_id="shop"} 1.0' in lines
    assert 'sayiir_tasks_retried_total{task_id="reserve",workflow_id="shop"} 1.0' in lines
    assert 'sayiir_runs_completed_total{workflow_id="shop"} 1.0' in lines
    # seconds buckets (the SDK's defaults are meant for milliseconds: 0, 5, 10, 25, ...)
    assert any(line.startswith('sayiir_task_duration_seconds_bucket{le="0.001"') for line in lines)
    assert "sayiir_queue_depth 0.0" in lines
    assert "order-p" not in body  # never an instance id


def test_sayiir_and_task_log_records_carry_the_ids(otel: Otel) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(TaskContextFilter())
    log = logging.getLogger("tests.shop")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    @task
    def note(x: int) -> int:
        ctx = get_task_context()
        assert ctx is not None
        log.info("noting %s (attempt %s)", x, ctx.attempt)
        return x

    try:
        DurableEngine(InMemoryBackend()).run(Flow("logs").then(note).build(), "log-1", 5)
        log.info("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = records
    [span] = [s for s in otel.spans() if s["name"] == "sayiir.task note"]
    assert (inside.sayiir_instance_id, inside.sayiir_task_id, inside.sayiir_attempt) == (  # type: ignore[attr-defined]
        "log-1", "note", 1,
    )  # fmt: skip
    assert inside.sayiir_workflow_id == "logs"  # type: ignore[attr-defined]
    assert (inside.sayiir_trace_id, inside.sayiir_span_id) == (span["trace_id"], span["span_id"])  # type: ignore[attr-defined]
    assert outside.sayiir_instance_id is None  # type: ignore[attr-defined]
    assert outside.sayiir_trace_id is None  # type: ignore[attr-defined]
