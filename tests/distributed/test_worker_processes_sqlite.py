"""Real worker processes sharing one SQLite file: no server, as on one machine.

Workers are started with the real command (``python -m sayiir.cli worker ... --url
sqlite:///PATH``) and really killed (SIGKILL). Tasks write a ledger line per execution
(workerapp.py); the file itself tells what was completed.
"""

from __future__ import annotations

import importlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sayiir import SqliteBackend
from tests.distributed.processes import WorkerProcesses

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
workerapp: Any = importlib.import_module("workerapp")  # the module the workers serve


class Workers(WorkerProcesses):
    """Worker processes on one SQLite file, and a client (in this process) to drive them."""

    def __init__(self, path: Path, ledger: Path) -> None:
        super().__init__(f"sqlite://{path}", SqliteBackend(path), ledger)
        self.path = path

    def start(  # type: ignore[override]
        self, worker_id: str, *, claim_ttl: float, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        return super().start(worker_id, claim_ttl=claim_ttl, concurrency=2, env=env)

    def executions(self) -> Counter[tuple[str, str]]:
        """How often each (run, task) began, from the ledger."""
        if not self.ledger.exists():
            return Counter()
        lines = [line.split() for line in self.ledger.read_text().splitlines()]
        return Counter((parts[0], parts[1]) for parts in lines)

    def query(self, sql: str) -> list[Any]:
        with sqlite3.connect(self.path) as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path / "runs.db", tmp_path / "ledger.txt")
    yield w
    w.close()


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux: its /proc fd links)."""
    fds = Path(f"/proc/{pid}/fd")
    if not Path("/proc/self/fd").exists():
        return True  # no /proc: nothing to wait for
    try:
        return any(os.readlink(fds / fd) == str(path) for fd in os.listdir(fds))
    except OSError:
        return False


def test_two_worker_processes_drain_runs_submitted_from_a_third(workers: Workers) -> None:
    """The whole point: ``sayiir worker`` on a SQLite file, a client in another process,
    no server. Fork/join runs are shared between both workers, each task runs once."""
    runs = [f"drain-{i}" for i in range(20)]
    procs = [
        workers.start(proc_id, claim_ttl=30.0, env={"SAYIIR_TEST_TASK_SECS": "0.02"})
        for proc_id in ("a", "b")
    ]
    # Both polling before the first submit: on a loaded machine one worker may take seconds
    # to start, and the other would drain every run alone meanwhile.
    wait_until(lambda: all(has_open(p.pid, workers.path) for p in procs), 60, "both polling")
    for i, run in enumerate(runs):
        workers.client.submit(workerapp.fan, run, i)
    wait_until(lambda: all(workers.client.status(r).is_completed() for r in runs), 120, "runs done")
    for i, run in enumerate(runs):
        assert workers.client.status(run).output == (3 * i + 6) * 10
    counts = workers.executions()
    assert len(counts) == len(runs) * 6 and set(counts.values()) == {1}
    pids = {line.split()[2] for line in workers.ledger.read_text().splitlines()}
    assert len(pids) == 2  # both processes took work


def test_kill_9_chaos_loses_nothing_and_completes_each_step_once(workers: Workers) -> None:
    """As the PostgreSQL chaos test (test_worker_processes.py), on one SQLite file: workers
    killed with SIGKILL at random every 1.5 s for 9 s, each restarted under the same id
    0.3 s later, while fork/join runs drain. Every run completes with the right output, no
    step is checkpointed twice, no step ran more than 3 times, no queue entry is left."""
    seed = int(os.environ.get("SAYIIR_CHAOS_SEED", str(time.time_ns() % 10_000)))
    rnd = random.Random(seed)
    env = {"SAYIIR_TEST_TASK_SECS": "0.15"}  # ~6 s of work for 6 slots: outlasts the chaos
    runs = [f"chaos-{i}" for i in range(60)]
    for i, run in enumerate(runs):
        workers.client.submit(workerapp.fan, run, i)
    ids = ["c0", "c1", "c2"]
    live = {wid: workers.start(wid, claim_ttl=1.5, env=env) for wid in ids}
    kills = 0
    chaos_ends = time.monotonic() + 9.0
    while time.monotonic() < chaos_ends:
        time.sleep(1.5)
        victim = rnd.choice(ids)
        os.kill(live[victim].pid, signal.SIGKILL)
        live[victim].wait(5)
        kills += 1
        time.sleep(0.3)
        live[victim] = workers.start(victim, claim_ttl=1.5, env=env)
    wait_until(
        lambda: all(workers.client.status(r).is_completed() for r in runs),
        120,
        f"all runs done after {kills} kills (seed {seed})",
    )
    for i, run in enumerate(runs):
        assert workers.client.status(run).output == (3 * i + 6) * 10, (run, seed)
    twice = workers.query(
        "SELECT instance_id, key, count(*) FROM sayiir_task_executions "
        "WHERE status = 'completed' GROUP BY 1, 2 HAVING count(*) > 1"
    )
    assert twice == [], seed
    executions = workers.executions()
    assert len(executions) == len(runs) * 6, seed  # every task of every run ran
    assert max(executions.values()) <= 3, (executions.most_common(3), seed)
    assert sum(executions.values()) > len(executions), seed  # kills did land mid-task
    assert workers.query("SELECT * FROM sayiir_task_queue") == [], seed
    assert workers.query("PRAGMA integrity_check") == [("ok",)]
