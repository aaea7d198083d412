"""Retention and step throughput, plain vs partitioned PostgreSQL layout (issue 16 item 7).

    python benchmarks/partitioning.py --runs 1000000 --rounds 5 --steps-runs 100
    python benchmarks/partitioning.py --runs 20000 --private-cluster   # WAL of ours only

Two fresh databases get the same RUNS finished 4-step runs (4 checkpoints and 4 task
executions each), created over five past months, plus one run in 1,000 still in progress
(the stragglers retention must keep). The second database is then converted with
``partition_tables()`` (not timed). On each: ``delete_finished`` with a cutoff at the start
of last month, so every run finished before it: time, WAL written (server-wide LSN
difference: on a shared server other sessions' writes count too; ``--private-cluster``
runs a server of its own, with fsync on and 128 MB of shared buffers, the shared server's
settings here), size of the three tables (all partitions) right after, and dead rows left for
vacuum. Then the step throughput of both layouts: STEPS_RUNS 4-step runs in
one process (``run_durable_workflow``), layouts alternating over ROUNDS rounds, median.
Rows are loaded with ``generate_series`` (the engine would take hours for a million runs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks.pg import ADMIN_URL, fresh_database  # noqa: E402
from sayiir import Flow, PostgresBackend, run_durable_workflow  # noqa: E402

TABLES = ("workflow_instances", "task_executions", "checkpoints")
STEPS = 4
LOAD = """
INSERT INTO sayiir_workflow_instances
    (instance_id, workflow_id, definition_hash, status, input, output, created_at, updated_at,
     completed_at)
SELECT 'r' || g, 'bench', 'h', CASE WHEN g %% 1000 = 0 THEN 'running' ELSE 'completed' END,
       '1'::bytea, '5'::bytea, t, t + interval '1 second',
       CASE WHEN g %% 1000 = 0 THEN NULL ELSE t + interval '1 second' END
FROM generate_series(1, %(n)s) AS g
CROSS JOIN LATERAL (
    SELECT %(start)s::timestamptz + (g * %(span)s::float8 / %(n)s) * interval '1 second' AS t
) AS x;
INSERT INTO sayiir_checkpoints (instance_id, key, task_id, output, created_at)
SELECT i.instance_id, 's' || k, 't' || k, '{"v": 12345678}'::bytea, i.created_at
FROM sayiir_workflow_instances AS i CROSS JOIN generate_series(1, 4) AS k;
INSERT INTO sayiir_task_executions
    (instance_id, task_key, task_id, attempt, status, worker_id, started_at, finished_at,
     duration_ms)
SELECT i.instance_id, 's' || k, 't' || k, 1, 'completed', 'w', i.created_at, i.created_at, 1.0
FROM sayiir_workflow_instances AS i CROSS JOIN generate_series(1, 4) AS k;
"""


def month_start(months_ago: int) -> datetime:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - months_ago
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def load(url: str, runs: int) -> None:
    """The runs, over the five months before last month (all before the cutoff)."""
    start, end = month_start(6), month_start(1)
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in LOAD.split(";\n"):
            if statement.strip():
                params = {"n": runs, "start": start, "span": (end - start).total_seconds() - 1}
                conn.execute(statement, params if "%(" in statement else None)


def settle(url: str) -> None:
    """A clean start: no dead rows, fresh statistics, a checkpoint before measuring; no
    autovacuum on the tables, so that the dead rows retention leaves are all counted."""
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
        for name in relations(conn):
            conn.execute(
                sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(
                    sql.Identifier(name)
                )
            )


def relations(conn: psycopg.Connection[Any]) -> list[str]:
    """The three tables and, when partitioned, every partition of them."""
    out: list[str] = []
    for table in TABLES:
        rows = conn.execute(
            "SELECT relid::text FROM pg_partition_tree(%s) WHERE isleaf", ("sayiir_" + table,)
        ).fetchall()
        out += [r[0] for r in rows] or ["sayiir_" + table]  # a plain table has no tree
    return out


def sizes(url: str) -> tuple[int, int]:
    """(total bytes of the tables with their indexes, dead rows) now."""
    with psycopg.connect(url, autocommit=True) as conn:
        time.sleep(1.0)  # let the statistics of the last transactions arrive
        conn.execute("SELECT pg_stat_clear_snapshot()")
        names = relations(conn)
        size = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(r::regclass)), 0)"
            " FROM unnest(%s::text[]) AS r",
            (names,),
        ).fetchone()
        dead = conn.execute(
            "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables"
            " WHERE relid = ANY (SELECT r::regclass::oid FROM unnest(%s::text[]) AS r)",
            (names,),
        ).fetchone()
    return int(size[0] if size else 0), int(dead[0] if dead else 0)


def lsn(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def wal_bytes(url: str, before: str, after: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)::int8", (after, before)).fetchone()
    return int(row[0]) if row else 0


def retention(url: str, batch_size: int) -> dict[str, float]:
    older = (datetime.now(UTC) - month_start(1)).total_seconds()
    with PostgresBackend(url) as backend:
        backend.get_instance("warm-up")  # open (and create months ahead) before the clock
        before = lsn(url)
        t0 = time.perf_counter()
        deleted = backend.delete_finished(older, batch_size)
        secs = time.perf_counter() - t0
        after = lsn(url)
        left = backend.count_finished(0)
    size, dead = sizes(url)
    return {
        "secs": secs,
        "wal": wal_bytes(url, before, after),
        "size": size,
        "dead": dead,
        "deleted": deleted,
        "left": left,
    }


WORKFLOW = (
    Flow("bench-steps")
    .then(lambda x: x + 1, name="a")
    .then(lambda x: x + 1, name="b")
    .then(lambda x: x + 1, name="c")
    .then(lambda x: x + 1, name="d")
    .build()
)


def steps_per_sec(backend: PostgresBackend, runs: int, tag: str) -> float:
    t0 = time.perf_counter()
    for n in range(runs):
        run_durable_workflow(WORKFLOW, f"{tag}-{n}", n, backend=backend)
    return STEPS * runs / (time.perf_counter() - t0)


@contextlib.contextmanager
def server(private: bool) -> Iterator[str]:
    """The admin URL: the shared server, or a cluster of our own (tests/pgcluster.py)."""
    if not private:
        yield ADMIN_URL
        return
    from tests.pgcluster import private_cluster

    with private_cluster("bench") as cluster:
        # The test clusters are small and unsynced; measure with the server defaults.
        cluster.execute("ALTER SYSTEM SET fsync = on")
        cluster.execute("ALTER SYSTEM SET shared_buffers = '128MB'")
        cluster.execute("ALTER SYSTEM SET max_wal_size = '1GB'")
        cluster.restart()
        yield cluster.url("postgres")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000, help="finished runs (20000)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (3)")
    parser.add_argument("--steps-runs", type=int, default=50, help="runs per round (50)")
    parser.add_argument("--batch-size", type=int, default=1000, help="retention batch (1000)")
    parser.add_argument(
        "--private-cluster", action="store_true", help="a PostgreSQL cluster of our own"
    )
    args = parser.parse_args(argv)
    with (
        server(args.private_cluster) as admin,
        fresh_database("part_plain", admin) as plain,
        fresh_database("part_month", admin) as month,
    ):
        t0 = time.perf_counter()
        for url in (plain, month):
            with PostgresBackend(url) as backend:
                backend.migrate()
            load(url, args.runs)
        with PostgresBackend(month) as backend:
            backend.partition_tables()
        for url in (plain, month):
            settle(url)
        print(f"loaded {args.runs:,} runs into both layouts in {time.perf_counter() - t0:.0f} s")
        results = {"plain": retention(plain, args.batch_size)}
        results["partitioned"] = retention(month, args.batch_size)
        rates: dict[str, list[float]] = {"plain": [], "partitioned": []}
        with PostgresBackend(plain) as a, PostgresBackend(month) as b:
            steps_per_sec(a, 5, "warm")
            steps_per_sec(b, 5, "warm")
            for r in range(args.rounds):
                order = [("plain", a), ("partitioned", b)]
                for name, backend in order if r % 2 == 0 else order[::-1]:
                    rates[name].append(steps_per_sec(backend, args.steps_runs, f"r{r}"))
    print(
        f"\n{args.runs:,} finished runs of {STEPS} steps ({args.runs // 1000:,} in progress);"
        f" steps/s: median of {args.rounds} rounds of {args.steps_runs} runs, alternating"
        f" ({'private cluster' if args.private_cluster else 'shared server'})\n"
    )
    header = (
        f"{'layout':<12} {'retention s':>12} {'WAL MB':>10} {'size after MB':>14}"
        f" {'dead rows':>11} {'deleted':>10} {'left':>6} {'steps/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<12} {r['secs']:>12.1f} {r['wal'] / 1e6:>10.1f} {r['size'] / 1e6:>14,.1f}"
            f" {r['dead']:>11,} {r['deleted']:>10,} {r['left']:>6} "
            f"{statistics.median(rates[name]):>9.0f}"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
