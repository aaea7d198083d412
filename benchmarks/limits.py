"""Claim throughput with run concurrency limits on vs off, on PostgreSQL.

    python -m benchmarks.limits --url postgresql://postgres@127.0.0.1/postgres --runs 1000

For each mode (benchmarks/limits_app.py): fresh tables (a table prefix of their own), RUNS
4-step runs submitted up front, then WORKERS worker processes (``sayiir worker``, one task at
a time each) drain them. Throughput is steps per second between the first task's start and
the last run's end (read from the database: worker start-up is not counted). Prints a
table; the cost of a mode is its throughput against ``off``. Also a stress check of the
limit: with ``--check``, the 20-keys mode verifies from the task records that no two runs of
one key overlapped (tests/distributed/test_limits_processes.py does it in the suite).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks.limits_app import FLOWS
from sayiir import PostgresBackend, WorkflowClient

ROOT = Path(__file__).resolve().parent.parent
STEPS = 4


def _measure(url: str, mode: str, runs: int, workers: int) -> float:
    prefix = f"lim{uuid.uuid4().hex[:8]}_"
    flow = FLOWS[mode]
    with PostgresBackend(url, table_prefix=prefix) as backend:
        client = WorkflowClient(backend)
        for n in range(runs):
            client.submit(flow, f"r{n}", {"n": n, "v": 0})
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sayiir.cli",
                "worker",
                "benchmarks.limits_app:workflows",
                "--url",
                url,
                "--table-prefix",
                prefix,
                "--id",
                f"b{w}",
                "--poll-interval",
                "0.5",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}/src:{ROOT}"},
        )
        for w in range(workers)
    ]
    instances = sql.Identifier(prefix + "workflow_instances")
    executions = sql.Identifier(prefix + "task_executions")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE status = 'completed'").format(instances)
                ).fetchone()
                if row is not None and row[0] == runs:
                    break
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a worker of mode {mode} exited")
                time.sleep(0.2)
            span = conn.execute(
                sql.SQL(
                    "SELECT extract(epoch FROM (SELECT max(completed_at) FROM {}) - "
                    "(SELECT min(started_at) FROM {}))::float8"
                ).format(instances, executions)
            ).fetchone()
            assert span is not None
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        with psycopg.connect(url, autocommit=True) as conn:
            for name in ("workflow_instances", "task_executions", "checkpoints",
                         "workflow_signals", "task_queue", "schedules", "concurrency_slots",
                         "schema_migrations"):  # fmt: skip
                conn.execute(
                    sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(prefix + name))
                )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
    return runs * STEPS / float(span[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SAYIIR_TEST_POSTGRES_DSN"))
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="rounds, modes interleaved")
    args = parser.parse_args()
    if not args.url:
        parser.error("--url (or $SAYIIR_TEST_POSTGRES_DSN) is required")
    results: dict[str, list[float]] = {mode: [] for mode in FLOWS}
    for _ in range(args.rounds):
        for mode in FLOWS:
            results[mode].append(_measure(args.url, mode, args.runs, args.workers))
    base = max(results["off"])
    print(f"{args.workers} workers, {args.runs} runs of {STEPS} steps, best of {args.rounds}")
    print(f"{'mode':<14} {'steps/s':>9} {'vs off':>8}")
    for mode, values in results.items():
        best = max(values)
        print(f"{mode:<14} {best:>9.0f} {best / base - 1:>+8.1%}")


if __name__ == "__main__":
    main()
