"""The same workload shapes written with DBOS's own API (``@DBOS.workflow`` / ``@DBOS.step``).

Runs in the ``dbos`` peer environment, on PostgreSQL or SQLite (its system database)::

    python -m benchmarks.peers.dbos_run --workload linear --size 4 --runs 500 \
        --mode postgres --url postgresql://postgres@127.0.0.1:5432/bench_x

* linear, fanout: one workflow call per run, serially, in this process. DBOS has no fork
  construct: the K branch steps run one after the other inside the workflow, then the join.
* signal: every run is started in the background (``DBOS.start_workflow``); it runs its
  first step and blocks in ``DBOS.recv``. Another process sends the messages with
  ``DBOSClient.send``, then the driver collects every result.
* sleep: every run is started in the background; each does ``DBOS.sleep`` between steps.

Prints one JSON line, like ``sayiir_run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from importlib.metadata import version
from typing import Any

from dbos import DBOS, DBOSConfig, SetWorkflowID

from benchmarks import durability
from benchmarks.shapes import (
    SIGNAL_NAME,
    SLEEP_SECONDS,
    branch_names,
    bump,
    expected,
    inc,
    initial,
    join_sum,
    latency_summary,
    tasks_per_run,
)

WARMUP_RUNS = 20


@DBOS.step()
def step_inc(x: int) -> int:
    return inc(x)


@DBOS.step()
def step_join(results: dict[str, int]) -> int:
    return join_sum(results)


@DBOS.workflow()
def linear_wf(x: int, size: int) -> int:
    for _ in range(size):
        x = step_inc(x)
    return x


@DBOS.step()
def step_bump(doc: dict[str, Any]) -> dict[str, Any]:
    return bump(doc)


@DBOS.workflow()
def payload_wf(doc: dict[str, Any], size: int) -> dict[str, Any]:
    for _ in range(size):
        doc = step_bump(doc)
    return doc


@DBOS.workflow()
def fanout_wf(x: int, size: int) -> int:
    results = {name: step_inc(x) for name in branch_names(size)}
    return step_join(results)


@DBOS.workflow()
def signal_wf(x: int, size: int) -> int:
    step_inc(x)
    payload: int = DBOS.recv(SIGNAL_NAME, timeout_seconds=300)
    for _ in range(size):
        payload = step_inc(payload)
    return payload


@DBOS.workflow()
def sleep_wf(x: int, size: int) -> int:
    x = step_inc(x)
    DBOS.sleep(SLEEP_SECONDS)
    for _ in range(size):
        x = step_inc(x)
    return x


WORKFLOWS = {
    "linear": linear_wf,
    "fanout": fanout_wf,
    "signal": signal_wf,
    "sleep": sleep_wf,
    "payload": payload_wf,
}


def system_url(args: argparse.Namespace) -> str:
    return f"sqlite:///{args.path}" if args.mode == "sqlite" else args.url


def launch(url: str) -> None:
    config: DBOSConfig = {"name": "sayiir-bench", "system_database_url": url}
    config["log_level"] = "WARNING"
    DBOS(config=config)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)


def warm_up(args: argparse.Namespace, tag: str) -> None:
    """A few untimed runs (connections, caches); linear/fanout only, as for sayiir."""
    if args.workload not in ("linear", "fanout", "payload"):
        return
    wf = WORKFLOWS[args.workload]
    for i in range(WARMUP_RUNS):
        with SetWorkflowID(f"{tag}-warm-{i}"):
            wf(initial(args.workload, i), args.size)


def run_serial(args: argparse.Namespace, tag: str) -> list[float]:
    wf = WORKFLOWS[args.workload]
    spans = []
    for i in range(args.runs):
        t0 = time.perf_counter()
        with SetWorkflowID(f"{tag}-{i}"):
            out = wf(initial(args.workload, i), args.size)
        spans.append(time.perf_counter() - t0)
        if out != expected(args.workload, args.size, i):
            raise RuntimeError(f"run {i}: output {out!r}")
    return spans


def run_background(args: argparse.Namespace, tag: str) -> list[float]:
    wf = WORKFLOWS[args.workload]
    signaller = None
    if args.workload == "signal":
        cmd = [sys.executable, "-m", "benchmarks.peers.dbos_signal", "--url", system_url(args)]
        signaller = subprocess.Popen(
            [*cmd, "--prefix", tag, "--runs", str(args.runs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert signaller.stdout is not None and signaller.stdin is not None
        if signaller.stdout.readline().strip() != "ready":
            raise RuntimeError("signaller did not start")
    handles = []
    starts = []
    for i in range(args.runs):
        starts.append(time.perf_counter())
        with SetWorkflowID(f"{tag}-{i}"):
            handles.append(DBOS.start_workflow(wf, i, args.size))
    if signaller is not None:
        assert signaller.stdout is not None and signaller.stdin is not None
        signaller.stdin.write("go\n")
        signaller.stdin.flush()
        if signaller.stdout.readline().strip() != "done":
            raise RuntimeError("signaller failed")
        signaller.wait()
    spans = []
    for i, handle in enumerate(handles):
        out = handle.get_result()
        spans.append(time.perf_counter() - starts[i])
        if out != expected(args.workload, args.size, i):
            raise RuntimeError(f"run {i}: output {out!r}")
    return spans


def execute(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode not in ("sqlite", "postgres"):
        return {"status": "n/a", "reason": "DBOS always persists to a database"}
    if args.mode == "sqlite":
        # The same durability as ours: WAL with synchronous=FULL (DBOS sets neither; without
        # this it would use a rollback journal, with synchronous=FULL by default).
        durability.use_wal(args.path)
    launch(system_url(args))
    tag = f"{args.prefix}-{os.getpid()}-{time.time_ns()}"
    warm_up(args, tag)
    t0 = time.perf_counter()
    if args.workload in ("signal", "sleep"):
        spans = run_background(args, tag)
    else:
        spans = run_serial(args, tag)
    elapsed = time.perf_counter() - t0
    DBOS.destroy()
    result: dict[str, Any] = {
        "status": "ok",
        "engine_version": version("dbos"),
        "runs": args.runs,
        "tasks": args.runs * tasks_per_run(args.workload, args.size),
        "seconds": round(elapsed, 6),
        "latency": latency_summary(spans),
    }
    if args.mode == "sqlite":  # DBOS's connections keep what a fresh one gets
        result["durability"] = durability.sqlite_file(args.path)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--mode", required=True)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--path", default="/tmp/dbos-bench.sqlite")
    parser.add_argument("--prefix", default="d")
    args = parser.parse_args(argv)
    print(json.dumps(execute(args)), flush=True)


if __name__ == "__main__":
    main()
