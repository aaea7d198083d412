"""Schedules fired by real worker processes (``python -m sayiir.cli worker``), on PostgreSQL
and on SQLite, at the length the issue asks for: a tick every second for 30 s with three
workers, one SIGKILLed mid-way, starts exactly one run per tick; after every worker stopped
for 10 s, the restarted ones catch up the ticks inside the window and skip the older ones.
Seconds of real time (marked slow); the logic is tested on an explicit clock in
test_schedules.py."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sayiir import Schedule, WorkflowClient
from tests.distributed.targets import Target, target

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
workerapp: Any = importlib.import_module("workerapp")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

Start = Callable[[str], "subprocess.Popen[bytes]"]


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from target(request, tmp_path)


@pytest.fixture
def cluster(backend: Target, tmp_path: Path) -> Iterator[Start]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(worker_id: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "sayiir.cli", "worker", "workerapp:workflows", *backend.args,
            "--id", worker_id, "--poll-interval", "0.2", "--claim-ttl", "3",
            "--log-level", "warning",
        ]  # fmt: skip
        env = {**os.environ, "SAYIIR_TEST_LEDGER": str(tmp_path / "ledger")}
        proc = subprocess.Popen(cmd, cwd=HERE, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _tick(instance_id: str) -> float:
    return datetime.fromisoformat(instance_id.split("@")[1].replace("Z", "+00:00")).timestamp()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        # 0: it stopped cleanly; -SIGTERM: the signal came while it was still starting (on
        # a loaded machine, before its handler was installed): stopped as well.
        assert proc.wait(30) in (0, -signal.SIGTERM)


def test_three_workers_one_killed_every_tick_of_30_s_starts_one_run(
    backend: Target, cluster: Start
) -> None:
    client = WorkflowClient(backend.backend)
    client.schedule(
        Schedule(workerapp.duo, cron="* * * * * *", id="tick", input=1, overlap="allow_all",
                 catchup_window="30s")
    )  # fmt: skip
    workers = [cluster(f"w{i}") for i in range(3)]
    _wait(lambda: backend.count("tick@") >= 1, 60, "the first tick")
    first = _tick(backend.runs("tick@")[0][0])
    _wait(lambda: _tick(backend.runs("tick@")[-1][0]) >= first + 15, 60, "15 s of ticks")
    workers[0].kill()  # SIGKILL, whatever it was doing (deciding a tick, maybe)
    assert workers[0].wait(10) == -signal.SIGKILL
    _wait(lambda: _tick(backend.runs("tick@")[-1][0]) >= first + 30, 60, "30 s of ticks")
    client.pause_schedule("tick")
    _wait(lambda: all(r[1] == "completed" for r in backend.runs("tick@")), 60, "all runs")
    _stop(workers[1:])
    ticks = [_tick(r[0]) for r in backend.runs("tick@")]
    assert ticks == [first + i for i in range(len(ticks))]  # every second, none missing
    assert len(ticks) >= 31
    info = client.schedules()[0]
    assert info.fired == len(ticks)  # each tick decided once: one run each
    assert info.skipped == 0


def test_catch_up_after_a_10_s_stop_fires_inside_the_window_only(
    backend: Target, cluster: Start
) -> None:
    window = 5.0
    client = WorkflowClient(backend.backend)
    client.schedule(
        Schedule(workerapp.duo, cron="* * * * * *", id="catchup", input=1,
                 overlap="allow_all", catchup_window=f"{window}s")
    )  # fmt: skip
    workers = [cluster("c1"), cluster("c2")]
    _wait(lambda: backend.count("catchup@") >= 3, 60, "three ticks")
    _stop(workers)
    stopped_at = time.time()
    before = {r[0] for r in backend.runs("catchup@")}
    skipped_before = client.schedules()[0].skipped  # ticks missed while workers started
    time.sleep(10.0)  # no firer: ten ticks are missed
    workers = [cluster("c3"), cluster("c4")]
    _wait(lambda: backend.count("catchup@") >= len(before) + window + 3, 60, "ticks after")
    client.pause_schedule("catchup")
    _stop(workers)
    after = [r for r in backend.runs("catchup@") if r[0] not in before]
    first_id, _, first_created = after[0]
    first_tick = _tick(first_id)
    last_before = max(_tick(i) for i in before)
    assert last_before <= stopped_at
    # Not beyond: the tick before the first one fired after the restart was older than the
    # window when the restarted firer decided (at or before first_created), so it was
    # skipped, as were all ticks back to the stop.
    assert first_created - (first_tick - 1) > window
    assert first_tick - last_before > 10 - window - 1  # the stop lasted 10 s
    missed = first_tick - last_before - 1
    assert client.schedules()[0].skipped - skipped_before == missed
    # Within: the ticks the firer found inside the window were all fired (caught up, late
    # by at most the window), and the ticks go on every second from the first one.
    ticks = [_tick(r[0]) for r in after]
    assert ticks == [first_tick + i for i in range(len(ticks))]
    caught_up = [t for t, r in zip(ticks, after, strict=True) if t < first_created - 0.5]
    assert len(caught_up) >= window - 1
    # (+0.5 s: the run is created just after the decision, by the same firer.)
    assert all(first_created - t <= window + 0.5 for t in caught_up)
