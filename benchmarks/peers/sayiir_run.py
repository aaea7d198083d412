"""One process runs every run of one case, serially: plain, durable-memory, sqlite, postgres.

Runs under this repo's package and under the reference ``sayiir==1.0.0``::

    python -m benchmarks.peers.sayiir_run --workload linear --size 4 --runs 1000 \
        --mode postgres --url postgresql://postgres@127.0.0.1:5432/bench_x

* linear, fanout: ``run_durable_workflow`` per run (``run_workflow`` in plain mode).
* signal: start every run (each parks at the wait), another process sends the signals
  (the same process for in-memory backends, which cannot be shared), then resume each run.
* sleep: start every run (each parks at the delay), resume each one once its delay is over.
* postgres-many (linear, payload): many runs in one process, on asyncio:
  ``CheckpointingRunner`` on ``await PostgresBackend.connect(url, max_connections=4)``, 200
  runs in flight at once (compare with ``pgbench -N -c 4``).

Prints one JSON line: ``status`` ("ok" or "n/a" with a ``reason``), ``seconds``, ``runs``,
``tasks`` and the end-to-end latency of a run (``p50_ms``, ``p99_ms``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import sayiir
from benchmarks import durability
from benchmarks.shapes import (
    SIGNAL_NAME,
    SLEEP_SECONDS,
    expected,
    initial,
    latency_summary,
    tasks_per_run,
)
from benchmarks.workloads import build
from sayiir import InMemoryBackend, resume_workflow, run_durable_workflow, run_workflow, send_signal

MODES = ("plain", "durable-memory", "sqlite", "postgres", "postgres-many")
MANY_IN_FLIGHT = 200  # postgres-many: runs in flight at once, in one process
MANY_POOL = 4  # postgres-many: connections of the async pool
WARMUP_RUNS = 20


class NotAvailable(Exception):
    """This engine cannot run this case; the message says why."""


def make_backend(mode: str, url: str, path: str) -> Any:
    if mode == "sqlite":
        try:
            from sayiir import SqliteBackend  # type: ignore[attr-defined,unused-ignore]
        except (ImportError, AttributeError) as exc:
            version = getattr(sayiir, "__version__", "?")
            raise NotAvailable(f"sayiir {version} has no SqliteBackend") from exc
        return SqliteBackend(path)
    if mode == "postgres":
        try:
            from sayiir import PostgresBackend
        except (ImportError, AttributeError) as exc:
            raise NotAvailable(f"PostgresBackend does not import: {exc}") from exc
        return PostgresBackend(url)
    return InMemoryBackend()


def check(status: Any, want: Any) -> None:
    if status.status != "completed" or status.output != want:
        raise RuntimeError(f"unexpected result {status!r} (output {status.output!r}, want {want})")


def run_plain(wf: Any, workload: str, size: int, runs: int) -> list[float]:
    if workload in ("signal", "sleep"):
        why = "signals need a durable run" if workload == "signal" else "a delay sleeps inline"
        raise NotAvailable(f"plain run_workflow: {why}")
    spans = []
    for i in range(runs):
        t0 = time.perf_counter()
        out = run_workflow(wf, initial(workload, i))
        spans.append(time.perf_counter() - t0)
        if out != expected(workload, size, i):
            raise RuntimeError(f"run {i}: output {out!r}")
    return spans


def run_serial(wf: Any, backend: Any, workload: str, size: int, runs: int, tag: str) -> list[float]:
    spans = []
    for i in range(runs):
        t0 = time.perf_counter()
        status = run_durable_workflow(wf, f"{tag}-{i}", initial(workload, i), backend=backend)
        spans.append(time.perf_counter() - t0)
        check(status, expected(workload, size, i))
    return spans


def start_parked(wf: Any, backend: Any, runs: int, tag: str, parked: str) -> list[float]:
    starts = []
    for i in range(runs):
        starts.append(time.perf_counter())
        status = run_durable_workflow(wf, f"{tag}-{i}", i, backend=backend)
        if status.status != parked:
            raise RuntimeError(f"run {i}: expected {parked!r}, got {status!r}")
    return starts


def run_signal(wf: Any, backend: Any, args: argparse.Namespace, tag: str) -> list[float]:
    signaller = None
    if args.mode in ("sqlite", "postgres"):
        cmd = [sys.executable, "-m", "benchmarks.peers.sayiir_signal", "--mode", args.mode]
        cmd += ["--url", args.url, "--path", args.path, "--prefix", tag, "--runs", str(args.runs)]
        signaller = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert signaller.stdout is not None and signaller.stdin is not None
        if signaller.stdout.readline().strip() != "ready":
            raise RuntimeError("signaller did not start")
    starts = start_parked(wf, backend, args.runs, tag, "awaiting_signal")
    if signaller is not None:
        assert signaller.stdout is not None and signaller.stdin is not None
        signaller.stdin.write("go\n")
        signaller.stdin.flush()
        if signaller.stdout.readline().strip() != "done":
            raise RuntimeError("signaller failed")
        signaller.wait()
    else:
        for i in range(args.runs):
            send_signal(f"{tag}-{i}", SIGNAL_NAME, i, backend)
    spans = []
    for i in range(args.runs):
        status = resume_workflow(wf, f"{tag}-{i}", backend)
        spans.append(time.perf_counter() - starts[i])
        check(status, expected("signal", args.size, i))
    return spans


def run_sleep(wf: Any, backend: Any, args: argparse.Namespace, tag: str) -> list[float]:
    starts = start_parked(wf, backend, args.runs, tag, "waiting")
    spans = []
    for i in range(args.runs):
        due = starts[i] + SLEEP_SECONDS
        while True:
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            status = resume_workflow(wf, f"{tag}-{i}", backend)
            if status.status != "waiting":
                break
            due = time.perf_counter() + 0.001
        spans.append(time.perf_counter() - starts[i])
        check(status, expected("sleep", args.size, i))
    return spans


def run_many(
    wf: Any, url: str, workload: str, size: int, runs: int, tag: str
) -> tuple[float, float, list[float]]:
    """``runs`` runs, ``MANY_IN_FLIGHT`` at a time, in one process on asyncio; returns the
    seconds they took (after the untimed warm-up), the CPU seconds this process spent
    meanwhile, and each run's own time."""
    import asyncio

    try:
        from sayiir import CheckpointingRunner, PostgresBackend
    except ImportError as exc:
        raise NotAvailable(f"no CheckpointingRunner: {exc}") from exc

    async def main() -> tuple[float, float, list[float]]:
        backend = await PostgresBackend.connect(url, max_connections=MANY_POOL)
        runner = CheckpointingRunner(backend)
        gate = asyncio.Semaphore(MANY_IN_FLIGHT)

        async def one(i: int) -> float:
            async with gate:
                t0 = time.perf_counter()
                status = await runner.run(wf, f"{tag}-{i}", initial(workload, i))
                check(status, expected(workload, size, i))
                return time.perf_counter() - t0

        for i in range(WARMUP_RUNS):  # untimed: the pool's connections, caches
            await runner.run(wf, f"{tag}-warm-{i}", initial(workload, i))
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        spans = await asyncio.gather(*(one(i) for i in range(runs)))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await backend.aclose()
        return elapsed, cpu, list(spans)

    return asyncio.run(main())


def warm_up(wf: Any, backend: Any, workload: str, tag: str) -> None:
    """A few untimed runs (imports, connections, schema, caches); linear/fanout only."""
    if workload not in ("linear", "fanout", "payload"):
        return
    for i in range(WARMUP_RUNS):
        if backend is None:
            run_workflow(wf, initial(workload, i))
        else:
            run_durable_workflow(wf, f"{tag}-warm-{i}", initial(workload, i), backend=backend)


def execute(args: argparse.Namespace) -> dict[str, Any]:
    wf = build(args.workload, args.size)
    tag = f"{args.prefix}-{os.getpid()}-{time.time_ns()}"
    if args.mode == "postgres-many":
        if args.workload not in ("linear", "payload"):
            raise NotAvailable("postgres-many runs linear workloads only")
        elapsed, cpu, spans = run_many(wf, args.url, args.workload, args.size, args.runs, tag)
        result = _result(args, elapsed, spans, None)
        result["client_cpu_us_per_step"] = round(cpu / result["tasks"] * 1e6, 1)
        return result
    backend = None if args.mode == "plain" else make_backend(args.mode, args.url, args.path)
    warm_up(wf, backend, args.workload, tag)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if backend is None:
        spans = run_plain(wf, args.workload, args.size, args.runs)
    elif args.workload == "signal":
        spans = run_signal(wf, backend, args, tag)
    elif args.workload == "sleep":
        spans = run_sleep(wf, backend, args, tag)
    else:
        spans = run_serial(wf, backend, args.workload, args.size, args.runs, tag)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    settings = sqlite_settings(backend, args.path) if args.mode == "sqlite" else None
    close = getattr(backend, "close", None)
    if close is not None:
        close()
    result = _result(args, elapsed, spans, settings)
    # This process's CPU (engine, codec, driver) per step; the rest of the wall time per step
    # is spent waiting: for the server (round trips, commits) or for SQLite's fsync.
    result["client_cpu_us_per_step"] = round(cpu / result["tasks"] * 1e6, 1)
    return result


def _result(
    args: argparse.Namespace, elapsed: float, spans: list[float], settings: dict[str, str] | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "status": "ok",
        "engine_version": getattr(sayiir, "__version__", "?"),
        "runs": args.runs,
        "tasks": args.runs * tasks_per_run(args.workload, args.size),
        "seconds": round(elapsed, 6),
        "latency": latency_summary(spans),
    }
    if settings is not None:
        result["durability"] = settings
    return result


def sqlite_settings(backend: Any, path: str) -> dict[str, str]:
    """The journal mode and ``synchronous`` of the connection the backend used."""
    cursor = getattr(getattr(backend, "_db", None), "_cur", None)
    if cursor is None:
        return {**durability.sqlite_file(path), "read_from": "a fresh connection"}
    return durability.sqlite(cursor.connection)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--path", default="/tmp/sayiir-bench.db")
    parser.add_argument("--prefix", default="b")
    args = parser.parse_args(argv)
    try:
        result = execute(args)
    except NotAvailable as exc:
        result = {"status": "n/a", "reason": str(exc)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
