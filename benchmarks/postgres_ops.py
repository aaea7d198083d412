"""Microseconds per PostgreSQL storage operation, next to ``pgbench -N -c 1`` on the same server.

Each storage write is one statement in autocommit, so its floor is one round trip plus one
WAL flush: the same floor as one pgbench transaction. This script prints both::

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
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from sayiir.backends.postgres import PostgresBackend
from sayiir.core.records import AttemptRecord, FinalState, InstanceRecord, Status, StepRecord


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
    tps = None
    if not args.no_pgbench:
        with scratch_database(args.url, "sayiir_bench_pgbench") as url:
            tps = bench_pgbench(url, args.pgbench_seconds)

    print(f"{'operation':<24} {'mean µs':>10} {'median µs':>10}")
    for name, mean, median in rows:
        print(f"{name:<24} {mean:>10.0f} {median:>10.0f}")
    if tps is not None:
        print(f"{'pgbench -N -c 1':<24} {1e6 / tps:>10.0f} {'':>10}   ({tps:.0f} tps)")


if __name__ == "__main__":
    main()
