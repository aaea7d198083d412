"""The operator console at scale: PostgreSQL seeded with 1,000,000 runs and a 10,000-step run.

Seeds a scratch database with set-based SQL (2 % failed, 20 workflows, one run a second over
~11.5 days, plus one run of 10,000 checkpointed steps), then times the backend calls behind
the console's pages (``RunQueries``: what the server does before the first paint) and prints
a table of p50/p95 against the targets of issue 14, and the EXPLAIN (ANALYZE, BUFFERS) of
each query::

    python benchmarks/console_scale.py                       # 1,000,000 runs
    python benchmarks/console_scale.py --runs 100000 --keep  # smaller; keep the database

The URL comes from --url, else $SAYIIR_BENCH_PG / $SAYIIR_TEST_POSTGRES_DSN. The scratch
database is dropped afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pg import ADMIN_URL, fresh_database
from sayiir.backends._runlist import list_sql
from sayiir.backends.postgres import PostgresBackend
from sayiir.backends.postgres._console import _dialect
from sayiir.backends.postgres._sql import compile_sql
from sayiir.core.queries import RunFilter, RunSort, decode_cursor

BIG_RUN = "big-run-10k"

SEED_RUNS = """
INSERT INTO sayiir_workflow_instances
    (instance_id, workflow_id, definition_hash, status, input, output, error,
     created_at, updated_at, completed_at)
SELECT 'run-' || lpad(g::text, 8, '0'),
       'wf-' || (g %% 20),
       'hash-' || (g %% 20),
       CASE WHEN g %% 50 = 0 THEN 'failed'
            WHEN g %% 50 = 1 THEN 'running'
            WHEN g %% 50 = 2 THEN 'awaiting_signal'
            ELSE 'completed' END,
       '{"order": 1}'::bytea,
       CASE WHEN g %% 50 > 2 THEN '"ok"'::bytea END,
       CASE WHEN g %% 50 = 0 THEN 'RuntimeError: card declined' END,
       now() - make_interval(secs => %(n)s - g),
       now() - make_interval(secs => %(n)s - g) + interval '2 seconds',
       CASE WHEN g %% 50 > 2 OR g %% 50 = 0
            THEN now() - make_interval(secs => %(n)s - g) + interval '2 seconds' END
FROM generate_series(1, %(n)s) AS g
"""

SEED_BIG = [
    """
    INSERT INTO sayiir_workflow_instances
        (instance_id, workflow_id, definition_hash, status, input, created_at, updated_at)
    VALUES (%(id)s, 'wf-big', 'hash-big', 'running', '1'::bytea, now() - interval '3 hours',
            now())
    """,
    """
    INSERT INTO sayiir_checkpoints (instance_id, key, task_id, output, created_at)
    SELECT %(id)s, 'step-' || lpad(g::text, 5, '0'), 'step',
           convert_to('{"i": ' || g || ', "pad": "' || repeat('x', 200) || '"}', 'UTF8'),
           now() - interval '3 hours' + make_interval(secs => g)
    FROM generate_series(1, 10000) AS g
    """,
    """
    INSERT INTO sayiir_task_executions
        (instance_id, task_key, task_id, attempt, status, started_at, finished_at, duration_ms,
         error)
    SELECT %(id)s, 'step-' || lpad(g::text, 5, '0'), 'step', a,
           CASE WHEN a = 1 AND g %% 100 = 0 THEN 'failed' ELSE 'completed' END,
           now() - interval '3 hours' + make_interval(secs => g - 0.5),
           now() - interval '3 hours' + make_interval(secs => g), 500,
           CASE WHEN a = 1 AND g %% 100 = 0 THEN 'TimeoutError: upstream slow' END
    FROM generate_series(1, 10000) AS g, generate_series(1, 2) AS a
    WHERE a = 1 OR g %% 100 = 0
    """,
]


def seed(url: str, runs: int) -> float:
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED_RUNS, {"n": runs})
        for statement in SEED_BIG:
            conn.execute(statement, {"id": BIG_RUN})
        conn.execute("VACUUM ANALYZE")  # visibility map: index-only scans, fresh statistics
    return time.perf_counter() - start


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm: connection, plan cache
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, round(0.95 * len(samples)) - 1)]


def cursor_of_page(backend: PostgresBackend, f: RunFilter, page: int) -> str | None:
    cursor = None
    for _ in range(page - 1):
        cursor = backend.list_runs(f, RunSort(), cursor, 50).next_cursor
        assert cursor is not None, "not enough matching runs for that page"
    return cursor


def explain(url: str, text: str, params: dict[str, Any]) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + text, params).fetchall()
    return "\n".join(r[0] for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=ADMIN_URL)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)

    with fresh_database("console", args.url) as url:
        with PostgresBackend(url) as backend:
            backend.get_instance("migrate")  # create the tables (migrations incl. 0006)
        took = seed(url, args.runs)
        print(f"seeded {args.runs:,} runs + one of 10,000 steps in {took:.1f}s")
        rows, plans = run_cases(url, args.repeat)
        print_table(rows)
        for title, plan in plans:
            print(f"\n-- EXPLAIN {title}\n{plan}")
        if args.keep:
            print(f"\nkept: {url}")
            input("press Enter to drop the database ")
    return 0


def run_cases(url: str, repeat: int) -> tuple[list[tuple[str, float, float, float]], list[Any]]:
    rows: list[tuple[str, float, float, float]] = []
    plans: list[tuple[str, str]] = []
    failed_wf = RunFilter(status=("failed",), workflow_id="wf-0")
    done_wf = RunFilter(status=("completed",), workflow_id="wf-3")
    with PostgresBackend(url, auto_migrate=False) as b:
        dialect = _dialect("public", "sayiir_")
        for label, f in (("failed + wf-0", failed_wf), ("completed + wf-3", done_wf)):
            p50, p95 = timed(lambda f=f: b.list_runs(f, RunSort(), None, 50), repeat)
            rows.append((f"list_runs page 1 ({label})", p50, p95, 50.0))
        c50 = cursor_of_page(b, done_wf, 50)
        p50, p95 = timed(lambda: b.list_runs(done_wf, RunSort(), c50, 50), repeat)
        rows.append(("list_runs page 50 by keyset (completed + wf-3)", p50, p95, 50.0))
        p50, p95 = timed(lambda: b.list_runs(RunFilter(), RunSort(), None, 50), repeat)
        rows.append(("list_runs page 1 (no filter)", p50, p95, 50.0))
        p50, p95 = timed(lambda: b.count_runs(done_wf, 1000), repeat)
        rows.append(("count_runs capped at 1,000 ('1,000+')", p50, p95, 50.0))
        p50, p95 = timed(lambda: b.run_detail(BIG_RUN, steps_limit=500), repeat)
        rows.append(("run_detail of the 10,000-step run (500 steps)", p50, p95, 300.0))
        now = datetime.now(UTC)
        for hours in (1, 24):
            since = now - timedelta(hours=hours)
            p50, p95 = timed(lambda s=since: b.status_counts(s, now, 300), repeat)
            rows.append((f"status_counts, last {hours} h, 5-min buckets", p50, p95, 100.0))

        # The plans of the same statements, as the backend sends them.
        text, params = list_sql(dialect, failed_wf, RunSort(), None, 50)
        plans.append(("list_runs page 1 (failed + wf-0)", explain(url, text, params)))
        after = decode_cursor(c50, RunSort().tag) if c50 else None
        text, params = list_sql(dialect, done_wf, RunSort(), after, 50)
        plans.append(("list_runs page 50 (completed + wf-3)", explain(url, text, params)))
        q = {k: v.decode() for k, v in compile_sql("public", "sayiir_").queries.items()}
        params = {"id": BIG_RUN, "after_us": None, "after_key": None, "limit": 501}
        plans.append(("run_detail: step keys page", explain(url, q["select_step_keys"], params)))
        since = now - timedelta(hours=24)
        params = {"since": since.timestamp(), "until": now.timestamp(), "bucket": 300.0}
        plans.append(("status_counts 24 h", explain(url, q["status_counts"], params)))
    return rows, plans


def print_table(rows: list[tuple[str, float, float, float]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{'case':<{width}}  {'p50 ms':>8}  {'p95 ms':>8}  {'target':>8}  ok")
    for name, p50, p95, target in rows:
        ok = "yes" if p95 < target else "NO"
        print(f"{name:<{width}}  {p50:>8.2f}  {p95:>8.2f}  {'<' + format(target, 'g'):>8}  {ok}")


if __name__ == "__main__":
    raise SystemExit(main())
