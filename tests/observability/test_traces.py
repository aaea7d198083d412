"""Spans and metrics of runs (issue 13): exactly what really ran, one trace per run.

The SDK's in-memory span exporter and metric reader (conftest.py ``otel``); the crash is a
real one (``os._exit`` in another process, otel_child.py), and so is the resume here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sayiir import DurableEngine, InMemoryBackend, WorkflowClient, run_workflow
from sayiir.backends.sqlite import SqliteBackend
from sayiir.distributed.worker import Worker
from tests.observability.otelflows import ORDER, Otel, shop

CHILD = Path(__file__).with_name("otel_child.py")
TASKS = ["reserve", "pack", "bill", "merge", "ship"]


def task_spans(spans: list[dict[str, Any]]) -> Counter[tuple[str, int, str]]:
    """(task id, attempt, outcome) of each task span."""
    return Counter(
        (s["attributes"]["sayiir.task.id"], s["attributes"]["sayiir.task.attempt"],
         s["attributes"]["sayiir.task.outcome"])
        for s in spans
        if s["name"].startswith("sayiir.task ")
    )  # fmt: skip


ALL_ATTEMPTS = Counter(
    {("reserve", 1, "retry"): 1, ("reserve", 2, "completed"): 1, ("pack", 1, "completed"): 1,
     ("bill", 1, "completed"): 1, ("merge", 1, "completed"): 1, ("ship", 1, "completed"): 1}
)  # fmt: skip


def by_name(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def test_a_run_is_one_trace_under_the_callers_span(otel: Otel) -> None:
    with otel.tracer.start_as_current_span("checkout"):
        status = DurableEngine(InMemoryBackend()).run(shop, "order-7", ORDER)
    assert status.output == "shipped box-7"
    spans = otel.spans()
    [app] = by_name(spans, "checkout")
    [run] = by_name(spans, "sayiir.workflow shop")
    assert {s["trace_id"] for s in spans} == {app["trace_id"]}
    assert run["parent_id"] == app["span_id"]
    assert run["attributes"]["sayiir.instance.id"] == "order-7"
    assert run["attributes"]["sayiir.run.outcome"] == "completed"
    assert run["attributes"]["sayiir.workflow.definition_hash"] == shop._inner.definition_hash
    tasks = [s for s in spans if s["name"].startswith("sayiir.task ")]
    assert task_spans(spans) == ALL_ATTEMPTS
    assert {s["parent_id"] for s in tasks} == {run["span_id"]}
    [failed] = [s for s in tasks if s["attributes"]["sayiir.task.outcome"] == "retry"]
    assert failed["status"] == "ERROR"
    assert failed["events"] == ["exception"]
    assert failed["attributes"]["error.type"] == "ConnectionError"
    assert failed["attributes"]["sayiir.task.retry_delay_s"] == 0.01
    assert len(spans) == 2 + len(tasks)

    metrics = otel.metrics()
    wf = (("workflow_id", "shop"),)
    assert metrics["sayiir.runs.started"] == {wf: 1}
    assert metrics["sayiir.runs.completed"] == {wf: 1}
    assert metrics["sayiir.tasks.retried"] == {(("task_id", "reserve"), *wf): 1}
    assert metrics["sayiir.tasks.completed"] == {((("task_id", t), *wf)): 1 for t in TASKS}
    assert metrics["sayiir.run.duration"] == {(("outcome", "completed"), *wf): 1}
    assert sum(metrics["sayiir.task.duration"].values()) == 6
    assert "sayiir.tasks.failed" not in metrics
    for points in metrics.values():  # never an instance id in a label
        assert all(name in {"workflow_id", "task_id", "outcome"} for k in points for name, _ in k)


def test_a_failed_run_has_an_error_status_and_the_exception(otel: Otel) -> None:
    from sayiir import Flow, task

    @task
    def explode(x: int) -> int:
        raise ValueError(f"bad {x}")

    status = DurableEngine(InMemoryBackend()).run(Flow("bad").then(explode).build(), "b-1", 1)
    assert status.status == "failed"
    spans = otel.spans()
    [run] = by_name(spans, "sayiir.workflow bad")
    [attempt] = by_name(spans, "sayiir.task explode")
    assert (run["status"], attempt["status"]) == ("ERROR", "ERROR")
    assert run["attributes"]["sayiir.run.outcome"] == "failed"
    assert attempt["attributes"]["sayiir.task.outcome"] == "failed"
    assert attempt["events"] == ["exception"]
    assert otel.metrics()["sayiir.tasks.failed"] == {
        (("task_id", "explode"), ("workflow_id", "bad")): 1
    }
    assert otel.metrics()["sayiir.runs.failed"] == {(("workflow_id", "bad"),): 1}


def test_the_in_memory_path_has_spans_too(otel: Otel) -> None:
    with otel.tracer.start_as_current_span("app"):
        assert run_workflow(shop, ORDER) == "shipped box-7"
    spans = otel.spans()
    [app] = by_name(spans, "app")
    [run] = by_name(spans, "sayiir.workflow shop")
    assert run["parent_id"] == app["span_id"]
    assert task_spans(spans) == ALL_ATTEMPTS


def test_crash_then_resume_in_another_process_continues_the_trace(
    otel: Otel, tmp_path: Path
) -> None:
    db, span_file, parent_file = tmp_path / "runs.db", tmp_path / "spans.jsonl", tmp_path / "tp"
    done = subprocess.run(
        [sys.executable, str(CHILD), str(db), str(span_file), str(parent_file)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**_env(), "SAYIIR_TEST_CRASH_SHIP": "1"},
    )  # fmt: skip
    assert done.returncode == 17, done.stderr  # killed inside ship
    _, trace_id, app_span_id, _ = parent_file.read_text().split("-")
    before = [json.loads(line) for line in span_file.read_text().splitlines()]
    # The crashed process exported the attempts it finished; its run span never ended.
    assert task_spans(before) == ALL_ATTEMPTS - Counter({("ship", 1, "completed"): 1})
    assert len(before) == 5
    assert {s["trace_id"] for s in before} == {trace_id}
    [crashed_run] = {s["parent_id"] for s in before}

    backend = SqliteBackend(str(db), lease_secs=0.5)
    status = DurableEngine(backend).resume(shop, "order-7")
    deadline = time.monotonic() + 60
    while status.status == "in_progress":  # the dead process's lease runs out first
        assert time.monotonic() < deadline, "the crashed run was never taken over"
        time.sleep(0.05)
        status = DurableEngine(backend).resume(shop, "order-7")
    assert status.output == "shipped box-7"

    after = otel.spans()
    [run] = by_name(after, "sayiir.workflow shop")
    assert (run["trace_id"], run["parent_id"]) == (trace_id, app_span_id)
    assert run["span_id"] != crashed_run
    # Only what really ran: no span for the steps replayed from checkpoints.
    assert task_spans(after) == Counter({("ship", 1, "completed"): 1})
    [ship] = by_name(after, "sayiir.task ship")
    assert (ship["trace_id"], ship["parent_id"]) == (trace_id, run["span_id"])
    assert len(after) == 2
    metrics = otel.metrics()
    assert metrics["sayiir.tasks.completed"] == {(("task_id", "ship"), ("workflow_id", "shop")): 1}
    assert metrics["sayiir.runs.completed"] == {(("workflow_id", "shop"),): 1}
    assert "sayiir.runs.started" not in metrics  # started in the other process


def test_a_worker_run_over_postgres_is_one_trace(otel: Otel, pg_dsn: str) -> None:
    from sayiir import PostgresBackend

    with PostgresBackend(pg_dsn) as backend:
        client = WorkflowClient(backend)
        with otel.tracer.start_as_current_span("checkout") as app_span:
            client.submit(shop, "order-w", ORDER)
        handles = [
            Worker(f"w{i}", backend, poll_interval=0.05, max_concurrent_tasks=2).start([shop])
            for i in range(2)
        ]
        try:
            deadline = time.monotonic() + 60
            while not client.status("order-w").is_completed():
                assert time.monotonic() < deadline, client.status("order-w")
                time.sleep(0.02)
        finally:
            for handle in handles:
                handle.shutdown()
            for handle in handles:
                handle.join()
    app_ctx = app_span.get_span_context()
    spans = otel.spans()
    runs = by_name(spans, "sayiir.workflow shop")
    assert runs, "no execution span"
    assert {s["trace_id"] for s in spans} == {f"{app_ctx.trace_id:032x}"}
    assert {s["parent_id"] for s in runs} == {f"{app_ctx.span_id:016x}"}
    assert all(s["attributes"]["sayiir.worker.id"] in {"w0", "w1"} for s in runs)
    assert task_spans(spans) == ALL_ATTEMPTS
    run_ids = {s["span_id"] for s in runs}
    assert all(s["parent_id"] in run_ids for s in spans if s["name"].startswith("sayiir.task "))
    metrics = otel.metrics()
    wf = (("workflow_id", "shop"),)
    assert metrics["sayiir.runs.started"] == {wf: 1}
    assert metrics["sayiir.runs.completed"] == {wf: 1}
    assert metrics["sayiir.tasks.completed"] == {((("task_id", t), *wf)): 1 for t in TASKS}
    assert metrics["sayiir.tasks.retried"] == {(("task_id", "reserve"), *wf): 1}
    # Every claim of a queue entry is one queue wait (a task claimed with the previous
    # one's checkpoint never waited): the run's first entry at least, one per claim at most.
    waits = metrics["sayiir.task.schedule_to_start"][wf]
    assert 1 <= waits <= len(spans) - 1


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


@pytest.mark.parametrize("endpoint", [False, True])
def test_the_applications_tracer_provider_is_used(endpoint: bool) -> None:
    script = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import sayiir
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
sayiir.init_tracing()
ours = trace.get_tracer_provider() is provider
wf = sayiir.Flow("app").then(lambda x: x + 1, name="inc").build()
with trace.get_tracer("app").start_as_current_span("request"):
    sayiir.run_durable_workflow(wf, "r-1", 1)
sayiir.shutdown_tracing()
names = [s.name for s in exporter.get_finished_spans()]
print(json.dumps({"ours": ours, "names": names}))
"""
    env = _env()
    if endpoint:  # init_tracing would install an OTLP exporter, were no provider set
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "ours": True,
        "names": ["sayiir.task inc", "sayiir.workflow app", "request"],
    }


def test_without_instrumentation_opentelemetry_is_never_imported() -> None:
    script = (
        "import sys, sayiir\n"
        "wf = sayiir.Flow('p').then(lambda x: x, name='same').build()\n"
        "sayiir.run_durable_workflow(wf, 'p-1', 1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env=_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_spans_of_task_code_nest_under_the_attempt_on_every_driver(otel: Otel) -> None:
    """The attempt's span is current while the body runs: in the caller's thread, in a fork
    branch on a pool thread, in an async task on the loop and in a sync one in a thread."""
    import asyncio

    from sayiir import CheckpointingRunner, Flow, task

    tracer = otel.tracer

    @task
    def left(x: int) -> int:
        with tracer.start_as_current_span("left.work"):
            return x + 1

    @task
    async def right(x: int) -> int:
        with tracer.start_as_current_span("right.work"):
            await asyncio.sleep(0)
            return x + 2

    @task
    def join(parts: dict[str, int]) -> int:
        with tracer.start_as_current_span("join.work"):
            return parts["left"] + parts["right"]

    wf = Flow("nest").fork().branch(left).branch(right).join(join).build()
    assert DurableEngine(InMemoryBackend()).run(wf, "n-sync", 1).output == 5
    assert asyncio.run(CheckpointingRunner(InMemoryBackend()).run(wf, "n-async", 1)).output == 5
    spans = otel.spans()
    by_id = {s["span_id"]: s for s in spans}
    for work in [s for s in spans if s["name"].endswith(".work")]:
        attempt = by_id[work["parent_id"]]
        assert attempt["name"] == f"sayiir.task {work['name'].split('.')[0]}"
        run = by_id[attempt["parent_id"]]
        assert run["name"] == "sayiir.workflow nest"
        assert run["trace_id"] == work["trace_id"]
    assert len([s for s in spans if s["name"].endswith(".work")]) == 6


def test_a_timed_out_attempt_is_counted(otel: Otel) -> None:
    import threading

    from sayiir import Flow, task

    release = threading.Event()

    @task(timeout=0.05)
    def stuck(x: int) -> int:
        release.wait(60)  # never set before the deadline: the attempt times out
        return x

    try:
        status = DurableEngine(InMemoryBackend()).run(Flow("slow").then(stuck).build(), "s-1", 1)
    finally:
        release.set()
    assert status.status == "failed"
    labels = (("task_id", "stuck"), ("workflow_id", "slow"))
    metrics = otel.metrics()
    assert metrics["sayiir.tasks.timed_out"] == {labels: 1}
    assert metrics["sayiir.tasks.failed"] == {labels: 1}
    [attempt] = by_name(otel.spans(), "sayiir.task stuck")
    assert attempt["attributes"]["error.type"] == "timeout"


def test_a_resume_from_another_trace_continues_the_runs_trace_and_links_its_own(
    otel: Otel,
) -> None:
    from sayiir import Flow, task

    @task
    def prepare(x: int) -> int:
        return x

    @task
    def finish(approval: dict[str, str]) -> str:
        return f"approved by {approval['by']}"

    wf = Flow("approve").then(prepare).wait_for_signal("ok").then(finish).build()
    engine = DurableEngine(InMemoryBackend())
    with otel.tracer.start_as_current_span("request"):
        assert engine.run(wf, "a-1", 1).status == "awaiting_signal"
    engine.send_signal("a-1", "ok", {"by": "ops"})
    with otel.tracer.start_as_current_span("operator"):
        assert engine.resume(wf, "a-1").output == "approved by ops"
    spans = otel.spans()
    [request] = by_name(spans, "request")
    [operator] = by_name(spans, "operator")
    first, second = by_name(spans, "sayiir.workflow approve")
    assert first["events"] == ["sayiir.signal.wait"]
    assert first["attributes"]["sayiir.run.outcome"] == "awaiting_signal"
    assert second["events"] == ["sayiir.signal.received"]
    assert (first["parent_id"], second["parent_id"]) == (request["span_id"], request["span_id"])
    assert second["trace_id"] == request["trace_id"] != operator["trace_id"]
    assert second["links"] == [[operator["trace_id"], operator["span_id"]]]
    assert first["links"] == []  # started inside the run's own trace
    assert task_spans(spans) == Counter(
        {("prepare", 1, "completed"): 1, ("finish", 1, "completed"): 1}
    )
