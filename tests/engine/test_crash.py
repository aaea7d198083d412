"""Real process crashes on SQLite and PostgreSQL (reliability plan §5, R2): a child process dies
in the middle of task 3 (``os._exit(137)``, or SIGKILL from the parent while task 3 sleeps); a
resume in another process must not re-run tasks 1-2, must re-run task 3 and finish correctly.

A ledger file (one fsynced line per task execution, with the pid) proves what ran where.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sayiir import WorkflowClient
from sayiir.backends.sqlite import SqliteBackend


def open_backend(db: Any) -> Any:
    """A SQLite file, or the module's PostgreSQL database (a ``postgresql://`` URL)."""
    if str(db).startswith("postgresql://"):
        from sayiir import PostgresBackend

        return PostgresBackend(str(db))
    return SqliteBackend(db)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Where the crashing run keeps its state."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_dsn")
    return tmp_path / "crash.db"


WORKER = Path(__file__).with_name("crash_worker.py")
EXPECTED = ((1 + 1) * 2 + 10) * 3  # task_1: +1, task_2: *2, task_3: +10, task_4: *3


def worker(db: Path, ledger: Path, iid: str, mode: str, **kwargs: Any) -> Any:
    args = [sys.executable, str(WORKER), str(db), str(ledger), iid, mode]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kwargs)


def ledger_lines(ledger: Path) -> list[tuple[str, int]]:
    lines = ledger.read_text(encoding="utf-8").splitlines()
    return [(name, int(pid)) for name, pid in (line.split() for line in lines)]


def assert_crashed_state(db: Path, ledger: Path, iid: str) -> int:
    """After the crash: tasks 1-3 ran once in one process; 1-2 are checkpointed, 3 is not."""
    entries = ledger_lines(ledger)
    assert [name for name, _ in entries] == ["task_1", "task_2", "task_3"]
    pids = {pid for _, pid in entries}
    assert len(pids) == 1
    backend = open_backend(db)
    try:
        client = WorkflowClient(backend)
        assert client.status(iid).status == "in_progress"
        assert client.get_task_result(iid, "task_1") == 2
        assert client.get_task_result(iid, "task_2") == 4
        assert client.get_task_result(iid, "task_3") is None
    finally:
        backend.close()
    return pids.pop()


def assert_resumed(ledger: Path, crashed_pid: int, resumed_pid: int | None) -> None:
    entries = ledger_lines(ledger)
    names = [name for name, _ in entries]
    assert names == ["task_1", "task_2", "task_3", "task_3", "task_4"]
    assert names.count("task_1") == 1 and names.count("task_2") == 1
    after = entries[3:]
    assert all(pid != crashed_pid for _, pid in after)
    if resumed_pid is not None:
        assert all(pid == resumed_pid for _, pid in after)


def test_os_exit_in_task_3_then_resume_in_another_process(store, tmp_path):
    db, ledger, iid = store, tmp_path / "ledger.txt", f"crash-exit-{os.getpid()}-{time.time_ns()}"
    crashed = worker(db, ledger, iid, "exit")
    assert crashed.returncode == 137, crashed.stderr
    assert crashed.stdout == "", "the run must not have reported a status"
    crashed_pid = assert_crashed_state(db, ledger, iid)

    resumed = worker(db, ledger, iid, "resume")
    assert resumed.returncode == 0, resumed.stderr
    status = json.loads(resumed.stdout)
    assert status == {"status": "completed", "output": EXPECTED, "error": None}
    resumed_pid = ledger_lines(ledger)[-1][1]
    assert resumed_pid not in (crashed_pid, os.getpid())
    assert_resumed(ledger, crashed_pid, resumed_pid)

    backend = open_backend(db)
    try:
        final = WorkflowClient(backend).status(iid)
        assert final.status == "completed" and final.output == EXPECTED
    finally:
        backend.close()


def test_os_exit_in_the_second_use_of_a_task_then_resume(store, tmp_path):
    """A task used twice (issue 10 item 8): the process dies in its second use; the resume,
    in another process, runs that use again (not the first one's stored result)."""
    db, ledger, iid = store, tmp_path / "ledger.txt", f"crash-rep-{os.getpid()}-{time.time_ns()}"
    crashed = worker(db, ledger, iid, "repeat-exit")
    assert crashed.returncode == 137, crashed.stderr
    resumed = worker(db, ledger, iid, "repeat-resume")
    assert resumed.returncode == 0, resumed.stderr
    status = json.loads(resumed.stdout)
    assert status == {"status": "completed", "output": (1 + 1) * 2 + 1, "error": None}
    entries = ledger_lines(ledger)
    assert [name for name, _ in entries] == ["task_1", "task_2", "task_1", "task_1"]
    assert entries[2][1] == entries[0][1] != entries[3][1]  # the last one in the new process


def test_sigkill_while_task_3_sleeps_then_resume_in_process(store, tmp_path):
    db, ledger, iid = store, tmp_path / "ledger.txt", f"crash-kill-{os.getpid()}-{time.time_ns()}"
    sigkill_at(db, ledger, iid, "sleep", "IN_TASK_3")
    crashed_pid = assert_crashed_state(db, ledger, iid)

    # Resume in this process, with the worker's workflow definition and task code.
    module = load_worker()
    module.LEDGER, module.MODE = str(ledger), "resume"
    backend = open_backend(db)
    try:
        status = module.resume_when_free(module.build(), iid, backend)
        assert status.status == "completed", status
        assert status.output == EXPECTED
    finally:
        backend.close()
    assert_resumed(ledger, crashed_pid, os.getpid())


def test_resume_twice_after_crash_runs_nothing_more(tmp_path):
    db, ledger, iid = tmp_path / "twice.db", tmp_path / "ledger.txt", "crash-twice"
    assert worker(db, ledger, iid, "exit").returncode == 137
    first = worker(db, ledger, iid, "resume")
    assert first.returncode == 0, first.stderr
    second = worker(db, ledger, iid, "resume")
    assert second.returncode == 0, second.stderr
    assert json.loads(first.stdout)["output"] == EXPECTED
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert [name for name, _ in ledger_lines(ledger)].count("task_4") == 1


def sigkill_at(
    db: Any,
    ledger: Any,
    iid: str,
    mode: str,
    marker: str,
    until: Callable[[], bool] | None = None,
) -> None:
    """Run the worker in ``mode``; SIGKILL it once it printed ``marker`` and ``until()``
    (a condition on the database) holds."""
    args = [sys.executable, str(WORKER), str(db), str(ledger), iid, mode]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == marker, proc.stderr.read() if proc.stderr else line
        deadline = time.monotonic() + 60
        while until is not None and not until():
            assert time.monotonic() < deadline, f"{mode}: the condition to kill at never held"
            assert proc.poll() is None, "the worker ended before the kill"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL


def _failures(db: Any, iid: str) -> int:
    """Failed attempts of task_3 stored so far."""
    backend = open_backend(db)
    try:
        state = backend.load(iid)
        attempt = None if state is None else state.attempts.get("task_3")
        return 0 if attempt is None else attempt.failures
    finally:
        backend.close()


def load_worker() -> Any:
    spec = importlib.util.spec_from_file_location("sayiir_crash_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigkill_during_retry_backoff_keeps_the_attempt_counter(tmp_path):
    db, ledger, iid = tmp_path / "backoff.db", tmp_path / "ledger.txt", "crash-backoff"
    # Killed once the failed attempt is in the database: the process sleeps its 30 s backoff.
    sigkill_at(db, ledger, iid, "backoff", "FAILED_ONCE", until=lambda: _failures(db, iid) == 1)
    assert [name for name, _ in ledger_lines(ledger)] == ["task_1", "task_2", "task_3"]
    # The resumed run may retry once more (max_retries=1): attempt 2 fails, so the run fails.
    resumed = worker(db, ledger, iid, "resume-failing")
    assert resumed.returncode == 0, resumed.stderr
    status = json.loads(resumed.stdout)
    assert status["status"] == "failed"
    assert status["error"] == "ValueError: task_3 attempt 2"
    names = [name for name, _ in ledger_lines(ledger)]
    assert names == ["task_1", "task_2", "task_3", "task_3"], "retries must not be reset"


def test_integrity_after_sigkill(tmp_path):
    import sqlite3

    db, ledger, iid = tmp_path / "integrity.db", tmp_path / "ledger.txt", "crash-integrity"
    args = [sys.executable, str(WORKER), str(db), str(ledger), iid, "sleep"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "IN_TASK_3"
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


def test_several_processes_share_one_sqlite_file(tmp_path):
    db, ledger = tmp_path / "shared.db", tmp_path / "ledger.txt"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(db), str(ledger), f"proc{n}", "many"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "15", err
    assert len(ledger_lines(ledger)) == 60
    backend = open_backend(db)
    try:
        client = WorkflowClient(backend)
        assert {client.status(f"proc{p}-{n}").status for p in range(4) for n in range(15)} == {
            "completed"
        }
    finally:
        backend.close()
