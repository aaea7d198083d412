"""One execution of a run at a time, with real processes (issue 10, item 1).

Two processes resume the same waiting run at once; a process stopped mid-task (SIGSTOP) is
taken over once its lease expires and, woken up (SIGCONT), is refused and runs nothing more;
killed right after its late write, it leaves the run completed. SQLite and PostgreSQL; the
child is ``execution_worker.py`` (lease 1 s). The in-process forms, on every backend, are in
test_one_execution.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sayiir import WorkflowClient

WORKER = Path(__file__).with_name("execution_worker.py")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("pg_dsn")
        return dsn
    return str(tmp_path / "runs.db")


def open_backend(db: str) -> Any:
    if db.startswith("postgresql://"):
        from sayiir import PostgresBackend

        return PostgresBackend(db)
    from sayiir.backends.sqlite import SqliteBackend

    return SqliteBackend(db)


def args(db: str, ledger: Path, iid: str, mode: str, directory: Path) -> list[str]:
    return [sys.executable, str(WORKER), db, str(ledger), iid, mode, str(directory)]


def run_child(db: str, ledger: Path, iid: str, mode: str, directory: Path) -> Any:
    done = subprocess.run(
        args(db, ledger, iid, mode, directory),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ledger_lines(ledger: Path) -> list[tuple[str, int]]:
    lines = ledger.read_text(encoding="utf-8").splitlines()
    return [(name, int(pid)) for name, pid in (line.split() for line in lines)]


def wait_for(cond: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_two_processes_resume_the_same_waiting_run_at_once(store: str, tmp_path: Path) -> None:
    """Both resumers start behind a file barrier: each task body runs exactly once; one caller
    gets the completed output, the other the run's status (in progress, or completed with
    the same output if it read the run after the winner finished)."""
    ledger, iid = tmp_path / "ledger.txt", f"race-{os.getpid()}-{time.time_ns()}"
    assert run_child(store, ledger, iid, "park", tmp_path)["status"] == "waiting"
    backend = open_backend(store)
    try:
        record = backend.get_instance(iid)
        assert record is not None and record.wake_at is not None
        wait_for(lambda: time.time() > record.wake_at + 0.05)
        procs = [
            subprocess.Popen(
                args(store, ledger, iid, "race", tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 2)
            (tmp_path / "go").touch()
            outs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(30)
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        statuses = [json.loads(out) for out, _ in outs]
        names = [name for name, _ in ledger_lines(ledger)]
        assert (names.count("first"), names.count("second"), names.count("third")) == (1, 1, 1)
        completed = [s for s in statuses if s["status"] == "completed"]
        assert completed and all(s["output"] == 23 for s in completed), statuses
        assert all(s["status"] in ("completed", "in_progress") for s in statuses), statuses
        final = WorkflowClient(backend).status(iid)
        assert final.status == "completed" and final.output == 23
    finally:
        backend.close()


@pytest.mark.parametrize("wake", ["sigcont", "sigkill-after-late-write"])
def test_a_stopped_process_is_fenced_once_another_took_its_run_over(
    store: str, tmp_path: Path, wake: str
) -> None:
    """A runs task ``slow`` and is SIGSTOPped in it; its lease expires; B resumes and completes
    the run. A is SIGCONTed: its task body finishes, its write is refused, the completed output
    is unchanged and A runs no further task. Variant: A is SIGKILLed right after its first
    late write: the run stays completed (it used to be left ``in_progress``)."""
    ledger, iid = tmp_path / "ledger.txt", f"stall-{os.getpid()}-{time.time_ns()}"
    a = subprocess.Popen(
        args(store, ledger, iid, "stall", tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert a.stdout is not None
        line = a.stdout.readline()
        assert line.strip() == "IN_SLOW", a.stderr.read() if a.stderr else line
        a.send_signal(signal.SIGSTOP)
        b = run_child(store, ledger, iid, "recover", tmp_path)  # waits out A's lease
        assert b["status"] == "completed", b
        b_pid = ledger_lines(ledger)[-1][1]
        assert b["output"] == {"slow_by": b_pid, "last_by": b_pid}
        (tmp_path / "go").touch()
        a.send_signal(signal.SIGCONT)
        if wake == "sigcont":
            out, err = a.communicate(timeout=120)
            assert a.returncode == 3, (out, err)
            assert out.startswith("REFUSED "), out
            assert "took it over" in out and "discarded" in out
        else:
            seen = a.stdout.readline()  # its first late write is refused, or (before) it ran on
            a.send_signal(signal.SIGKILL)
            a.wait(60)
            assert seen.startswith(("REFUSED", "LATE_TASK", "")), seen
    finally:
        if a.poll() is None:
            a.send_signal(signal.SIGCONT)
            a.kill()
            a.wait(60)
        for stream in (a.stdout, a.stderr):
            if stream is not None:
                stream.close()
    entries = ledger_lines(ledger)
    a_tasks = [name for name, pid in entries if pid == a.pid]
    assert a_tasks == ["begin", "slow"], entries  # A ran no further task
    assert [name for name, _ in entries].count("last") == 1
    backend = open_backend(store)
    try:
        final = WorkflowClient(backend).status(iid)
        assert final.status == "completed", final
        assert final.output == {"slow_by": b_pid, "last_by": b_pid}
        assert WorkflowClient(backend).get_task_result(iid, "slow") == {"slow_by": b_pid}
    finally:
        backend.close()
