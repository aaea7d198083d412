"""What tracing and metrics cost: the 4-step linear workflow with instrumentation on vs off.

    python -m benchmarks.otel_overhead                 # PostgreSQL, durable memory, plain
    python -m benchmarks.otel_overhead --runs 50 --rounds 41 --modes postgres

"On" is what a production setup pays: the OpenTelemetry SDK with a ``BatchSpanProcessor``
whose exporter drops the batches (a no-op endpoint: no network in the measure), and a
``MeterProvider`` whose periodic reader exports to a no-op exporter. "Off" is sayiir with
no instrumentation (the engine checks one global). Both run in the same process, in
short alternating rounds (off, on, on, off, ...); the overhead is the median over adjacent
pairs of rounds, so machine noise hits both sides alike. The table also shows the CPU time of
this process per run (what instrumentation adds, whatever the database's load). Needs the
``otel`` extra; PostgreSQL from $SAYIIR_BENCH_PG or $SAYIIR_TEST_POSTGRES_DSN (a fresh
database is created and dropped).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from benchmarks.linear import build, expected
from sayiir import InMemoryBackend, run_durable_workflow, run_workflow
from sayiir.observability import instrument, uninstrument

MODES = ("postgres", "durable-memory", "plain")
DEFAULT_RUNS = {"postgres": 25, "durable-memory": 500, "plain": 500}


class _DropSpans(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _DropMetrics(MetricExporter):
    def __init__(self) -> None:
        super().__init__()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def _providers() -> tuple[TracerProvider, MeterProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_DropSpans()))
    reader = PeriodicExportingMetricReader(_DropMetrics(), export_interval_millis=1000)
    return tracer_provider, MeterProvider(metric_readers=[reader])


def _runner(mode: str, backend: Any) -> Callable[[str, int], None]:
    wf = build()
    if mode == "plain":

        def plain(_: str, i: int) -> None:
            assert run_workflow(wf, i) == expected(i)

        return plain

    def durable(iid: str, i: int) -> None:
        status = run_durable_workflow(wf, iid, i, backend=backend)
        assert status.output == expected(i), status

    return durable


def measure(mode: str, backend: Any, runs: int, rounds: int) -> dict[str, float]:
    """Runs/s and CPU time per run with instrumentation off and on, and the overhead.

    Rounds come in adjacent pairs (off then on, or on then off, alternately): the overhead
    is the median over pairs of (on time - off time) / off time, so a slowdown of the
    machine that lasts longer than a pair weighs on both sides alike.
    """
    tracer_provider, meter_provider = _providers()
    run = _runner(mode, backend)
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    tag = f"{mode}-{time.time_ns()}"
    for i in range(50):  # warm-up, both ways
        instrument(tracer_provider, meter_provider) if i % 2 else uninstrument()
        run(f"{tag}-w{i}", i)
    for r in range(rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            if on:
                instrument(tracer_provider, meter_provider)
            else:
                uninstrument()
            start, start_cpu = time.perf_counter(), time.process_time()
            for i in range(runs):
                run(f"{tag}-{r}-{on:d}-{i}", i)
            wall[on].append(time.perf_counter() - start)
            cpu[on].append(time.process_time() - start_cpu)
    uninstrument()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    pairs = [(on - off) / off * 100 for off, on in zip(wall[False], wall[True], strict=True)]
    return {
        "off": runs / statistics.median(wall[False]),
        "on": runs / statistics.median(wall[True]),
        "overhead": statistics.median(pairs),
        "cpu_off": statistics.median(cpu[False]) / runs * 1e6,
        "cpu_on": statistics.median(cpu[True]) / runs * 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES)
    )
    parser.add_argument("--runs", type=int, help="runs per round (default per mode)")
    parser.add_argument("--rounds", type=int, default=31, help="rounds each way (31)")
    args = parser.parse_args(argv)
    rows = []
    for mode in args.modes.split(","):
        runs = args.runs or DEFAULT_RUNS[mode]
        if mode == "postgres":
            from benchmarks.pg import fresh_database, unavailable
            from sayiir import PostgresBackend

            why = unavailable()
            if why is not None:
                print(f"postgres skipped: {why}")
                continue
            with fresh_database("otel") as url, PostgresBackend(url) as backend:
                rows.append((mode, runs, measure(mode, backend, runs, args.rounds)))
        else:
            rows.append((mode, runs, measure(mode, InMemoryBackend(), runs, args.rounds)))
    print(
        f"{'mode':<16}{'runs/round':>11}{'off runs/s':>12}{'on runs/s':>12}{'overhead':>10}"
        f"{'CPU us/run off':>16}{'on':>8}"
    )
    for mode, runs, r in rows:
        print(
            f"{mode:<16}{runs:>11}{r['off']:>12.1f}{r['on']:>12.1f}{r['overhead']:>9.1f}%"
            f"{r['cpu_off']:>16.0f}{r['cpu_on']:>8.0f}"
        )


if __name__ == "__main__":
    main()
