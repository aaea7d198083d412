"""Step throughput with task limits on vs off, on PostgreSQL and on SQLite.

    python -m benchmarks.task_limits --backend postgres --url postgresql://postgres@127.0.0.1/postgres
    python -m benchmarks.task_limits --backend sqlite
    python -m benchmarks.task_limits --backend both --runs 1000 --rounds 3

As benchmarks/limits.py (whose rounds it reuses): for each backend and mode
(benchmarks/task_limits_app.py), fresh tables, RUNS 4-step runs submitted up front, WORKERS
worker processes drain them; steps per second between the first task's start and the last
run's end; rounds interleave the modes; the table prints the median of the rounds and its
cost against ``off`` (negative: slower). The limits never bind here: this is their overhead.
Their correctness is tested by tests/distributed/test_task_limits_processes.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.limits import STEPS, _measure, _Postgres, _Sqlite
from benchmarks.task_limits_app import FLOWS

APP = "benchmarks.task_limits_app:workflows"


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
    with tempfile.TemporaryDirectory(prefix="sayiir-task-limits-") as tmp:
        for _ in range(args.rounds):
            for kind in kinds:
                for mode in FLOWS:
                    store = _Postgres(args.url) if kind == "postgres" else _Sqlite(Path(tmp))
                    steps = _measure(store, mode, args.runs, args.workers, FLOWS, APP)
                    results[kind, mode].append(steps)
    print(f"{args.workers} workers, {args.runs} runs of {STEPS} steps, median of {args.rounds} "
          "rounds (modes interleaved)")  # fmt: skip
    print(f"{'backend':<9} {'mode':<15} {'steps/s':>9} {'vs off':>8}   rounds")
    for kind in kinds:
        base = statistics.median(results[kind, "off"])
        for mode in FLOWS:
            values = results[kind, mode]
            median = statistics.median(values)
            each = " ".join(f"{v:.0f}" for v in values)
            print(f"{kind:<9} {mode:<15} {median:>9.0f} {median / base - 1:>+8.1%}   {each}")


if __name__ == "__main__":
    main()
