"""Claim throughput with run concurrency limits on vs off, on PostgreSQL and on SQLite.

    python -m benchmarks.limits --backend postgres --url postgresql://postgres@127.0.0.1/postgres
    python -m benchmarks.limits --backend sqlite
    python -m benchmarks.limits --backend both --runs 1000 --rounds 3

For each backend and mode (benchmarks/limits_app.py): fresh tables (PostgreSQL: a table
prefix of their own; SQLite: a new file), RUNS 4-step runs submitted up front, then WORKERS
worker processes (``sayiir worker``, one task at a time each) drain them. Throughput is steps
per second between the first task's start and the last run's end (read from the database:
worker start-up is not counted). Rounds interleave the modes (off, per-run-key, 20-keys,
workflow-cap, off, ...), so a load change on the machine hits every mode alike; the table
prints the median of the rounds and its cost against ``off`` (negative: slower). The limits
are checked for correctness by tests/distributed/test_limits_processes.py, not here.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.limits_app import FLOWS
from sayiir import PostgresBackend, SqliteBackend, WorkflowClient

ROOT = Path(__file__).resolve().parent.parent
STEPS = 4
# Tables a PostgreSQL round creates (dropped after it).
_PG_TABLES = (
    "workflow_instances", "task_executions", "checkpoints", "workflow_signals", "task_queue",
    "schedules", "concurrency_slots", "dedupe_keys", "workflow_definitions", "audit_log",
    "schema_migrations", "task_slots", "rate_windows", "task_waits",
)  # fmt: skip


class _Postgres:
    """A round's tables on PostgreSQL: a table prefix of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"lim{uuid.uuid4().hex[:8]}_"

    def backend(self) -> Any:
        return PostgresBackend(self.url, table_prefix=self.prefix)

    def args(self) -> list[str]:
        return ["--url", self.url, "--table-prefix", self.prefix]

    def _query(self, text: str) -> Any:
        import psycopg
        from psycopg import sql

        names = {
            n: sql.Identifier(self.prefix + n) for n in ("workflow_instances", "task_executions")
        }
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(sql.SQL(text).format(**names)).fetchone()
        assert row is not None
        return row[0]

    def completed(self) -> int:
        return int(self._query(
            "SELECT count(*) FROM {workflow_instances} WHERE status = 'completed'"))  # fmt: skip

    def span(self) -> float:
        return float(self._query(
            "SELECT extract(epoch FROM (SELECT max(completed_at) FROM {workflow_instances}) - "
            "(SELECT min(started_at) FROM {task_executions}))::float8"))  # fmt: skip

    def drop(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as conn:
            for name in _PG_TABLES:
                ident = sql.Identifier(self.prefix + name)
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(ident))


class _Sqlite:
    """A round's tables on SQLite: a new file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"lim{uuid.uuid4().hex[:8]}.db"

    def backend(self) -> Any:
        return SqliteBackend(self.path)

    def args(self) -> list[str]:
        return ["--url", f"sqlite://{self.path}"]

    def _query(self, text: str) -> Any:
        with sqlite3.connect(self.path, timeout=30) as conn:
            return conn.execute(text).fetchone()[0]

    def completed(self) -> int:
        query = "SELECT count(*) FROM sayiir_workflow_instances WHERE status = 'completed'"
        return int(self._query(query))

    def span(self) -> float:
        return float(self._query(
            "SELECT (SELECT max(completed_at) FROM sayiir_workflow_instances) - "
            "(SELECT min(started_at) FROM sayiir_task_executions)"))  # fmt: skip

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def _measure(
    store: _Postgres | _Sqlite, mode: str, runs: int, workers: int,
    flows: dict[str, Any] = FLOWS, app: str = "benchmarks.limits_app:workflows",
) -> float:  # fmt: skip
    """Steps per second of ``runs`` runs of ``flows[mode]`` drained by ``workers`` worker
    processes serving ``app`` (benchmarks/task_limits.py measures its flows with this too)."""
    flow = flows[mode]
    with store.backend() as backend:
        client = WorkflowClient(backend)
        for n in range(runs):
            client.submit(flow, f"r{n}", {"n": n, "v": 0})
    command = [
        sys.executable, "-m", "sayiir.cli", "worker", app, *store.args(),
        "--poll-interval", "0.5", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT}/src:{ROOT}"}
    procs = [
        subprocess.Popen([*command, "--id", f"b{w}"], cwd=ROOT, env=env) for w in range(workers)
    ]
    try:
        while store.completed() < runs:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker of mode {mode} exited")
            time.sleep(0.2)
        span = store.span()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
        store.drop()
    return runs * STEPS / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--url", default=os.environ.get("SAYIIR_TEST_POSTGRES_DSN"))
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, modes interleaved")
    args = parser.parse_args()
    kinds = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    if "postgres" in kinds and not args.url:
        parser.error("--url (or $SAYIIR_TEST_POSTGRES_DSN) is required for PostgreSQL")
    results: dict[tuple[str, str], list[float]] = {(k, m): [] for k in kinds for m in FLOWS}
    with tempfile.TemporaryDirectory(prefix="sayiir-limits-") as tmp:
        for _ in range(args.rounds):
            for kind in kinds:
                for mode in FLOWS:
                    store = _Postgres(args.url) if kind == "postgres" else _Sqlite(Path(tmp))
                    results[kind, mode].append(_measure(store, mode, args.runs, args.workers))
    print(f"{args.workers} workers, {args.runs} runs of {STEPS} steps, median of {args.rounds} "
          "rounds (modes interleaved)")  # fmt: skip
    print(f"{'backend':<9} {'mode':<14} {'steps/s':>9} {'vs off':>8}   rounds")
    for kind in kinds:
        base = statistics.median(results[kind, "off"])
        for mode in FLOWS:
            values = results[kind, mode]
            median = statistics.median(values)
            each = " ".join(f"{v:.0f}" for v in values)
            print(f"{kind:<9} {mode:<14} {median:>9.0f} {median / base - 1:>+8.1%}   {each}")


if __name__ == "__main__":
    main()
