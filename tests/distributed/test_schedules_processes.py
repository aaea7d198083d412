"""Schedules fired by real worker processes on PostgreSQL (``python -m sayiir.cli worker``):
a tick every second with three workers, one SIGKILLed mid-way, starts exactly one run per
tick; after all workers stopped, the restarted ones catch up the ticks inside the window
only. Short on purpose (seconds of real time); the logic is tested on an explicit clock in
test_schedules.py."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sayiir import PostgresBackend, Schedule, WorkflowClient

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
workerapp: Any = importlib.import_module("workerapp")

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster(pg_dsn: str, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(worker_id: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "sayiir.cli", "worker", "workerapp:workflows", "--url", pg_dsn,
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


def _runs(dsn: str, schedule_id: str) -> list[tuple[str, str, float]]:
    """(instance id, status, created_at) of the schedule's runs, by id (= by tick)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT instance_id, status, extract(epoch FROM created_at)::float8 "
            "FROM sayiir_workflow_instances WHERE instance_id LIKE %s ORDER BY instance_id",
            (schedule_id + "@%",),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _tick(instance_id: str) -> float:
    return datetime.fromisoformat(instance_id.split("@")[1].replace("Z", "+00:00")).timestamp()


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        # 0: it stopped cleanly; -SIGTERM: the signal came while it was still starting (on
        # a loaded machine, before its handler was installed): stopped as well.
        assert proc.wait(30) in (0, -signal.SIGTERM)


def test_three_workers_one_killed_every_tick_starts_one_run(pg_dsn: str, cluster: Any) -> None:
    with PostgresBackend(pg_dsn) as backend:
        client = WorkflowClient(backend)
        client.schedule(
            Schedule(workerapp.duo, cron="* * * * * *", id="tick", input=1, overlap="allow_all",
                     catchup_window="30s")
        )  # fmt: skip
        workers = [cluster(f"w{i}") for i in range(3)]
        _wait(lambda: len(_runs(pg_dsn, "tick")) >= 3, 60, "three ticks")
        workers[0].kill()  # SIGKILL, whatever it was doing (deciding a tick, maybe)
        assert workers[0].wait(10) == -signal.SIGKILL
        killed_at = time.time()
        _wait(lambda: _tick(_runs(pg_dsn, "tick")[-1][0]) >= killed_at + 3, 60, "ticks after")
        client.pause_schedule("tick")
        _wait(lambda: all(r[1] == "completed" for r in _runs(pg_dsn, "tick")), 60, "all runs")
        _stop(workers[1:])
        runs = _runs(pg_dsn, "tick")
        ticks = [_tick(r[0]) for r in runs]
        first = ticks[0]
        assert ticks == [first + i for i in range(len(ticks))]  # every second, none missing
        assert len(ticks) >= 6
        info = client.schedules()[0]
        assert info.fired == len(ticks)  # each tick decided once
        assert info.skipped == 0


def test_catch_up_after_a_stop_fires_inside_the_window_only(pg_dsn: str, cluster: Any) -> None:
    with PostgresBackend(pg_dsn) as backend:
        client = WorkflowClient(backend)
        client.schedule(
            Schedule(workerapp.duo, cron="* * * * * *", id="catchup", input=1,
                     overlap="allow_all", catchup_window="1.5s")
        )  # fmt: skip
        workers = [cluster("c1"), cluster("c2")]
        _wait(lambda: len(_runs(pg_dsn, "catchup")) >= 2, 60, "two ticks")
        _stop(workers)
        stopped_at = time.time()
        before = {r[0] for r in _runs(pg_dsn, "catchup")}
        skipped_before = client.schedules()[0].skipped  # ticks missed while workers started
        time.sleep(4.0)  # no firer: four ticks or so are missed
        workers = [cluster("c3"), cluster("c4")]
        _wait(lambda: len(_runs(pg_dsn, "catchup")) >= len(before) + 3, 60, "ticks after restart")
        client.pause_schedule("catchup")
        _stop(workers)
        after = [r for r in _runs(pg_dsn, "catchup") if r[0] not in before]
        first_id, _, first_created = after[0]
        first_tick = _tick(first_id)
        # The first run after the restart is a tick caught up: fired after its time, by at
        # most the window; the ticks older than that (the stop lasted 4 s) were skipped.
        assert 0 < first_created - first_tick <= 1.5 + 0.01
        last_before = max(_tick(i) for i in before)
        assert last_before <= stopped_at
        assert first_tick - last_before >= 2  # the ticks in between were not fired
        missed = first_tick - last_before - 1
        assert client.schedules()[0].skipped - skipped_before == missed
