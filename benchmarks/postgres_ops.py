"""Microseconds per PostgreSQL storage operation, next to ``pgbench -N -c 1`` on the same server.

Each storage write is one statement in autocommit, so its floor is one round trip plus one
WAL flush: the same floor as one pgbench transaction. This script prints both, the worker
queue operations, and what a ``Worker`` costs per step of a linear workflow (statements
sent to the server, and wall time)::

    python benchmarks/postgres_ops.py --url postgresql://postgres@127.0.0.1/postgres --n 2000

It creates (and drops) two scratch databases: one for the backend, one for pgbench
(skipped with ``--no-pgbench`` or when ``pgbench`` is not on PATH).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from sayiir import Flow, WorkflowClient, task
from sayiir.backends.postgres import PostgresBackend
from sayiir.core.records import (
    AttemptRecord,
    Claim,
    FinalState,
    InstanceRecord,
    QueueItem,
    Status,
    StepRecord,
)
from sayiir.worker import Worker


@contextmanager
def scratch_database(admin_url: str, name: str) -> Iterator[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def timed(n: int, fn: Callable[[int], object]) -> tuple[float, float]:
    """(mean, median) microseconds per call over ``n`` calls."""
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.fmean(samples), statistics.median(samples)


def bench_backend(url: str, n: int) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = []
    backend = PostgresBackend(url)
    try:
        now = time.time()
        run = uuid.uuid4().hex
        ids = [f"{run}-{i}" for i in range(n)]

        def record(i: int) -> InstanceRecord:
            return InstanceRecord(ids[i], "bench", "h", Status.RUNNING, b"1", created_at=now)

        backend.get_instance("warm-up")  # connect + migrate outside the timings
        rows.append(
            (
                "create_instance",
                *timed(n, lambda i: backend.create_instance(record(i), replace=False)),
            )
        )
        out = b'{"value": 42, "items": [1, 2, 3]}'
        one = [StepRecord("s1", out, "task_1", 1, now, now + 0.001, "w")]
        rows.append(("save_steps (1 step)", *timed(n, lambda i: backend.save_steps(ids[i], one))))
        four = [StepRecord(f"p{k}", out, f"task_{k}", 1, now, now, "w") for k in range(4)]
        rows.append(("save_steps (4 steps)", *timed(n, lambda i: backend.save_steps(ids[i], four))))
        fail = AttemptRecord("r", "task_r", 1, "failed", now, now, "boom", now + 1)
        rows.append(("record_attempt", *timed(n, lambda i: backend.record_attempt(ids[i], fail))))
        rows.append(("load (6 checkpoints)", *timed(n, lambda i: backend.load(ids[i]))))
        rows.append(("get_instance", *timed(n, lambda i: backend.get_instance(ids[i]))))
        done = FinalState(Status.COMPLETED, out)
        last = [StepRecord("s9", out, "task_9", 1, now, now, "w")]
        rows.append(("finish (+1 step)", *timed(n, lambda i: backend.finish(ids[i], done, last))))
    finally:
        backend.close()
    return rows


def bench_queue(url: str, n: int) -> list[tuple[str, float, float]]:
    """The QueueStorage calls a worker makes, one entry / one step each."""
    rows: list[tuple[str, float, float]] = []
    backend = PostgresBackend(url, table_prefix="q_")
    try:
        now = time.time()
        run = uuid.uuid4().hex
        ids = [f"{run}-{i}" for i in range(n)]
        out = b'{"value": 42, "items": [1, 2, 3]}'
        claims: list[Claim] = []
        moved: list[Claim] = []
        later = [QueueItem("b", "b", available_at=now + 3600)]
        done = FinalState(Status.COMPLETED, out)

        def create(i: int) -> None:
            rec = InstanceRecord(ids[i], "bench", "h", Status.RUNNING, b"1", distributed=True)
            backend.create_instance(rec, replace=False)

        def claim(i: int) -> None:
            claims.extend(backend.claim("w", ["h"], [], 1, 300))

        def keep(i: int) -> None:
            backend.advance(claims[i], [StepRecord("s1", out, "task_1", 1, now, now, "w")])

        def move(i: int) -> None:
            step = [StepRecord("s2", out, "task_2", 1, now, now, "w")]
            _, claim = backend.advance(claims[i], step, next_item=QueueItem("s3", "task_3"))
            assert claim is not None
            moved.append(claim)

        def final(i: int) -> None:
            last = [StepRecord("s3", out, "task_3", 1, now, now, "w")]
            backend.advance(moved[i], last, final=done)

        backend.get_instance("warm-up")
        rows.append(("create (distributed)", *timed(n, create)))
        rows.append(("claim (1 entry)", *timed(n, claim)))
        rows.append(("advance keep (1 step)", *timed(n, keep)))
        rows.append(("heartbeat (1 claim)", *timed(n, lambda i: backend.heartbeat([claims[i]], 9))))
        rows.append(("advance + next (1 step)", *timed(n, move)))
        rows.append(("enqueue (1 item)", *timed(n, lambda i: backend.enqueue(ids[i], later))))
        rows.append(("advance final (1 step)", *timed(n, final)))
    finally:
        backend.close()
    return rows


STEPS = 10


@task
def inc(x: int) -> int:
    return x + 1


def _linear() -> object:
    flow = Flow("linear10")
    for k in range(STEPS):
        flow = flow.then(inc, name=f"t{k}")
    return flow.build()


def bench_worker(url: str, runs: int) -> tuple[float, float]:
    """(statements per step, µs per step) of one Worker draining ``runs`` linear runs.

    Only the statements of the worker's task thread are counted (not the LISTEN connection,
    nor this script's status polls).
    """
    workflow: Any = _linear()
    backend = PostgresBackend(url, table_prefix="w_")
    client = WorkflowClient(backend)
    original = psycopg.Cursor.execute
    counted = [0]

    def counting(cur: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("sayiir-worker-"):
            counted[0] += 1
        return original(cur, *args, **kwargs)

    try:
        for i in range(runs):
            client.submit(workflow, f"lin-{i}", 0)
        psycopg.Cursor.execute = counting  # type: ignore[method-assign]
        start = time.perf_counter()
        handle = Worker("bench", backend, poll_interval=0.05).start([workflow])
        pending = [f"lin-{i}" for i in range(runs)]
        while pending:
            pending = [r for r in pending if not client.status(r).is_completed()]
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        handle.shutdown()
        handle.join(10)
    finally:
        psycopg.Cursor.execute = original  # type: ignore[method-assign]
        backend.close()
    return counted[0] / (runs * STEPS), elapsed * 1e6 / (runs * STEPS)


def bench_pgbench(url: str, seconds: int) -> float | None:
    if shutil.which("pgbench") is None:
        return None
    subprocess.run(["pgbench", "-i", "-q", url], check=True, capture_output=True)
    result = subprocess.run(
        ["pgbench", "-N", "-c", "1", "-T", str(seconds), url],
        check=True,
        capture_output=True,
        text=True,
    )
    match = re.search(r"tps = ([\d.]+)", result.stdout)
    return float(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="admin URL (a maintenance database)")
    parser.add_argument("--n", type=int, default=2000, help="calls per operation")
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--no-pgbench", action="store_true")
    args = parser.parse_args()

    with scratch_database(args.url, "sayiir_bench_ops") as url:
        rows = bench_backend(url, args.n)
        rows += bench_queue(url, args.n)
        per_step, us_per_step = bench_worker(url, max(10, args.n // 20))
    tps = None
    if not args.no_pgbench:
        with scratch_database(args.url, "sayiir_bench_pgbench") as url:
            tps = bench_pgbench(url, args.pgbench_seconds)

    print(f"{'operation':<24} {'mean µs':>10} {'median µs':>10}")
    for name, mean, median in rows:
        print(f"{name:<24} {mean:>10.0f} {median:>10.0f}")
    if tps is not None:
        print(f"{'pgbench -N -c 1':<24} {1e6 / tps:>10.0f} {'':>10}   ({tps:.0f} tps)")
    print(
        f"Worker, linear {STEPS}-step runs: {per_step:.2f} statements and {us_per_step:.0f} µs "
        "per step (a run: claim, load, one advance per task, the final advance)"
    )


if __name__ == "__main__":
    main()
