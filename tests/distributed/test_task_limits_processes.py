"""Task limits with real worker processes, on PostgreSQL and on SQLite (docs/flow-control.md,
"Task limits"): the intervals the task bodies record are checked.

- ``max_concurrent=2`` with four workers over 100 runs: never more than two bodies at once,
  and every run completes;
- ``RateLimit(4, 1s)`` with three workers over 24 runs: no more than four starts in any
  window of the period (less the time a start takes to reach the body), every run completes;
- a worker SIGKILLed while it holds the only slot of a task: the slot is free once its claim
  expires, and the runs complete on another worker, the next one only after the kill.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sayiir import WorkflowClient
from tests.distributed.targets import Target, target

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
app: Any = importlib.import_module("tasklimitsapp")


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from target(request, tmp_path)


def _lines(path: Path) -> list[tuple[str, str, str, float, int]]:
    out = []
    for line in path.read_text().splitlines():
        run, task_id, event, at, pid = line.split()
        out.append((run, task_id, event, float(at), int(pid)))
    return out


def _workers(backend: Target, n: int, env: dict[str, str], *extra: str) -> list[Any]:
    command = [
        sys.executable, "-m", "sayiir.cli", "worker", "tasklimitsapp:workflows", *backend.args,
        "--poll-interval", "0.2", "--log-level", "warning", *extra,
    ]  # fmt: skip
    return [
        subprocess.Popen([*command, "--id", f"tw{w}-{os.getpid()}"], cwd=HERE, env=env)
        for w in range(n)
    ]


def _stop(procs: list[Any]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(60)


def _wait_completed(backend: Target, procs: list[Any], prefix: str, runs: int) -> None:
    deadline = time.monotonic() + 300
    while (done := backend.count(prefix, "completed")) < runs:
        assert all(p.poll() is None for p in procs), "a worker died"
        assert backend.count(prefix, "failed") == 0
        assert time.monotonic() < deadline, f"only {done} of {runs} runs completed"
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_four_workers_never_run_more_than_max_concurrent_bodies(
    backend: Target, tmp_path: Path
) -> None:
    intervals = tmp_path / "intervals"
    env = {**os.environ, "SAYIIR_TEST_INTERVALS": str(intervals)}
    client = WorkflowClient(backend.backend)
    runs = 100
    for i in range(runs):
        client.submit(app.capped, f"capped-{i:04d}", i)
    procs = _workers(backend, 4, env, "--concurrency", "2")
    try:
        _wait_completed(backend, procs, "capped-", runs)
    finally:
        _stop(procs)
    events = sorted((at, 1 if event == "start" else -1) for _, _, event, at, _ in _lines(intervals))
    assert sum(1 for _, d in events if d == 1) == runs  # every body once (nothing crashed)
    assert sum(1 for _, d in events if d == -1) == runs
    running, peak = 0, 0
    for _, delta in events:  # an end and a start at the same instant: the end first (-1 < 1)
        running += delta
        peak = max(peak, running)
    assert peak <= 2
    assert peak == 2  # the limit binds, and lets two run side by side
    # Several processes ran the task: the limit held across processes, not in one.
    assert len({pid for *_, pid in _lines(intervals)}) > 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_rate_limit_allows_no_more_than_n_starts_per_period_across_workers(
    backend: Target, tmp_path: Path
) -> None:
    intervals = tmp_path / "intervals"
    env = {**os.environ, "SAYIIR_TEST_INTERVALS": str(intervals)}
    client = WorkflowClient(backend.backend)
    runs = 24
    for i in range(runs):
        client.submit(app.rated, f"rated-{i:04d}", i)
    procs = _workers(backend, 3, env, "--concurrency", "4")
    try:
        _wait_completed(backend, procs, "rated-", runs)
    finally:
        _stop(procs)
    starts = sorted(at for *_, at, _ in _lines(intervals))
    assert len(starts) == runs
    # A start is granted a moment before its body records it: a window shorter than the
    # period by that much (a generous bound) holds at most n recorded starts.
    window = app.RATE_PER - 0.3
    worst = max(sum(1 for t in starts if s <= t <= s + window) for s in starts)
    assert worst <= app.RATE_N
    # Without the limit the 24 starts would all lie within a fraction of a second; with it
    # they span at least (24 / 4 - 1) periods.
    assert starts[-1] - starts[0] >= (runs // app.RATE_N - 1) * app.RATE_PER


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_slot_of_a_killed_worker_is_freed_after_its_lease(
    backend: Target, tmp_path: Path
) -> None:
    intervals = tmp_path / "intervals"
    env = {**os.environ, "SAYIIR_TEST_INTERVALS": str(intervals)}
    client = WorkflowClient(backend.backend)
    client.submit(app.held, "held-0", 0)
    [hanging] = _workers(backend, 1, {**env, "SAYIIR_TEST_HANG": "1"}, "--claim-ttl", "2")
    others: list[Any] = []
    try:
        deadline = time.monotonic() + 120
        while not intervals.exists() or not intervals.read_text():
            assert hanging.poll() is None, "the worker died"
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.1)
        others = _workers(backend, 2, env, "--claim-ttl", "2")
        client.submit(app.held, "held-1", 1)  # waits for the slot the hanging body holds
        while (reason := client.waiting_reason("held-1")) is None:
            assert time.monotonic() < deadline, "held-1 never waited for the slot"
            time.sleep(0.1)
        assert reason == "waiting: task 'hold' is at its concurrency limit (1 of 1 held by held-0)"
        time.sleep(1.0)  # the other workers keep asking meanwhile, and keep being refused
        hanging.send_signal(signal.SIGKILL)
        hanging.wait(30)
        killed_at = time.time()
        _wait_completed(backend, others, "held-", 2)
    finally:
        _stop([hanging, *others])
    lines = _lines(intervals)
    first = [(event, at, pid) for run, _, event, at, pid in lines if run == "held-0"]
    assert first[0][0] == "start" and first[0][2] == hanging.pid  # the killed one held it
    # held-1 waited for the slot: its body started only after the holder was killed.
    [start_1] = [at for run, _, event, at, _ in lines if run == "held-1" and event == "start"]
    assert start_1 > killed_at
    # Both ran to the end on the other workers, never two bodies at once.
    ends = sorted((at, run) for run, _, event, at, pid in lines if pid != hanging.pid)
    bodies = sorted(
        (at, 1 if event == "start" else -1)
        for run, _, event, at, pid in lines
        if pid != hanging.pid
    )
    running = 0
    for _, delta in bodies:
        running += delta
        assert running <= 1
    assert {run for _, run in ends} == {"held-0", "held-1"}
