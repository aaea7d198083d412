"""4-step linear workflow throughput, written against the public API only.

The same file runs under our package and under the reference ``sayiir==1.0.0``
(same import name, separate venv), so both are measured by identical code:

    python benchmarks/linear.py --mode plain --runs 20000
    python benchmarks/linear.py --mode durable-memory --runs 20000
    python benchmarks/linear.py --mode sqlite --runs 2000 --path /tmp/b.db
    python benchmarks/linear.py --mode postgres --runs 500 --url postgresql://...

Prints one JSON line: mode, runs, seconds, workflows_per_s, steps_per_s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from sayiir import Flow, InMemoryBackend, run_durable_workflow, run_workflow, task

STEPS = 4


@task
def step1(x: int) -> int:
    return x + 1


@task
def step2(x: int) -> int:
    return x * 2


@task
def step3(x: int) -> int:
    return x - 3


@task
def step4(x: int) -> int:
    return x + 10


def build() -> Any:
    return Flow("linear4").then(step1).then(step2).then(step3).then(step4).build()


def expected(i: int) -> int:
    return (i + 1) * 2 - 3 + 10


def make_backend(args: argparse.Namespace) -> Any:
    if args.mode == "sqlite":
        from sayiir import SqliteBackend

        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(args.path + suffix):
                os.remove(args.path + suffix)
        return SqliteBackend(args.path)
    if args.mode == "postgres":
        from sayiir import PostgresBackend

        return PostgresBackend(args.url)
    return InMemoryBackend()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--mode", choices=["plain", "durable-memory", "sqlite", "postgres"], required=True
    )
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--path", default="/tmp/sayiir-bench.db")
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--prefix", default="b")
    args = parser.parse_args(argv)
    wf = build()
    if args.mode == "plain":
        for i in range(args.warmup):
            run_workflow(wf, i)
        start = time.perf_counter()
        for i in range(args.runs):
            out = run_workflow(wf, i)
        elapsed = time.perf_counter() - start
        assert out == expected(args.runs - 1), out
    else:
        backend = make_backend(args)
        tag = f"{args.prefix}-{os.getpid()}-{time.time_ns()}"
        for i in range(args.warmup):
            run_durable_workflow(wf, f"{tag}-w{i}", i, backend=backend)
        start = time.perf_counter()
        for i in range(args.runs):
            status = run_durable_workflow(wf, f"{tag}-{i}", i, backend=backend)
        elapsed = time.perf_counter() - start
        assert status.status == "completed" and status.output == expected(args.runs - 1), status
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    result = {
        "mode": args.mode,
        "runs": args.runs,
        "seconds": round(elapsed, 4),
        "workflows_per_s": round(args.runs / elapsed, 1),
        "steps_per_s": round(args.runs * STEPS / elapsed, 1),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
