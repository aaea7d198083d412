"""Real ``sayiir worker`` processes that must not die silently nor loop forever.

- a task raising ``SystemExit`` fails its run; the worker process serves on;
- a task that SIGKILLs its worker on every claim is dead-lettered after
  ``--max-claim-attempts`` claims (5 by default), and no worker claims it again;
- a wrong password (a real role of a cluster of the module's own, ``pg_cluster``) and
  an unreachable server end the worker with exit status 1 after ``--outage-timeout``, with
  a clear message that never shows the password.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sayiir import PostgresBackend, WorkflowClient
from tests.pgcluster import PrivateCluster

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
app: Any = importlib.import_module("survivalapp")  # the module the workers serve

pytestmark = pytest.mark.postgres

SECRET = "pw-Zq8!never-shown"


def worker_command(url: str, worker_id: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "sayiir.cli", "worker", "survivalapp:workflows", "--url", url,
        "--id", worker_id, "--poll-interval", "0.3", *extra,
    ]  # fmt: skip


class Workers:
    """``sayiir worker`` processes on the module's database; each logs to a file of its own."""

    def __init__(self, dsn: str, tmp: Path) -> None:
        self.dsn = dsn
        self.tmp = tmp
        self.ledger = tmp / "ledger.txt"
        self.backend = PostgresBackend(dsn)
        self.client = WorkflowClient(self.backend)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, worker_id: str, *extra: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "SAYIIR_TEST_LEDGER": str(self.ledger)}
        with (self.tmp / f"{worker_id}.log").open("wb") as log:
            proc = subprocess.Popen(
                worker_command(self.dsn, worker_id, *extra),
                cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def log(self, worker_id: str) -> str:
        return (self.tmp / f"{worker_id}.log").read_text()

    def ledger_lines(self, instance: str, task_id: str) -> list[tuple[int, str]]:
        if not self.ledger.exists():
            return []
        out = []
        for line in self.ledger.read_text().splitlines():
            inst, task, pid, event = line.split()
            if (inst, task) == (instance, task_id):
                out.append((int(pid), event))
        return out

    def queue_rows(self, instance: str) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM sayiir_task_queue WHERE instance_id = %s", (instance,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        self.backend.close()


@pytest.fixture
def workers(pg_dsn: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(pg_dsn, tmp_path)
    yield w
    w.close()


def wait_until(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def test_a_worker_process_whose_task_raises_system_exit_serves_on(workers: Workers) -> None:
    proc = workers.start("w1", "--log-level", "warning")
    client = workers.client
    client.submit(app.exit_flow, "exit-1", 2)  # plain adds 1: exit code 3
    for i in range(3):
        client.submit(app.plain_flow, f"plain-{i}", i)
    wait_until(lambda: client.status("exit-1").status == "failed", what="the exit run failed")
    wait_until(
        lambda: all(client.status(f"plain-{i}").is_completed() for i in range(3)),
        what="the other runs completed",
    )
    assert (client.status("exit-1").error or "").startswith("SystemExit: 3")
    assert proc.poll() is None, workers.log("w1")  # the process lives, and so does its thread
    client.submit(app.plain_flow, "plain-late", 10)
    wait_until(lambda: client.status("plain-late").is_completed(), what="a later run completed")
    assert "run 'exit-1' failed: SystemExit: 3" in workers.log("w1")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_a_run_that_kills_its_worker_on_every_claim_is_dead_lettered(workers: Workers) -> None:
    n = 5  # the default --max-claim-attempts
    client = workers.client
    client.submit(app.poison_flow, "poison", 1)
    options = ("--claim-ttl", "1", "--log-level", "warning")
    started: list[subprocess.Popen[bytes]] = []
    # Restart a worker whenever the last one died, as a process manager would.
    for k in range(n + 3):
        proc = workers.start(f"k{k}", *options)
        started.append(proc)

        def ended(p: subprocess.Popen[bytes] = proc) -> bool:
            return p.poll() is not None or client.status("poison").status == "failed"

        wait_until(ended, what=f"worker k{k} killed, or the run dead-lettered")
        if client.status("poison").status == "failed":
            break
        assert proc.returncode == -signal.SIGKILL
    status = client.status("poison")
    assert status.status == "failed", "the poison run was redelivered forever"
    killed = [p for p in started if p.poll() is not None]
    assert len(killed) == n and len(started) == n + 1
    survivor = started[-1]
    assert survivor.poll() is None  # the worker that dead-lettered it serves on
    runs = workers.ledger_lines("poison", "poison")
    assert runs == [(p.pid, "start") for p in killed]  # once per killed worker, no more
    assert status.error is not None
    assert status.error.startswith(
        f"dead-lettered after {n} attempts: worker 'k{n - 1}' stopped renewing its lease "
        f"during attempt {n} (the process died or was killed, or stalled past claim_ttl) "
        f"[task 'poison' of run 'poison' was claimed {n} times without an outcome; "
        f"max_claim_attempts={n}]"
    ), status.error
    assert workers.queue_rows("poison") == 0
    assert f"run 'poison' dead-lettered after {n} attempts" in workers.log(f"k{n}")
    # No worker ever claims it again; the survivor and a new worker serve other runs.
    workers.start("fresh", *options)
    for i in range(4):
        client.submit(app.plain_flow, f"after-{i}", i)
    wait_until(lambda: all(client.status(f"after-{i}").is_completed() for i in range(4)))
    assert workers.ledger_lines("poison", "poison") == runs
    assert workers.ledger_lines("poison", "plain") == [(killed[0].pid, "run")]  # checkpointed
    assert client.status("poison").error == status.error


# -- the database refuses or is gone: exit 1 after the budget -----------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def app_role(pg_cluster: PrivateCluster) -> PrivateCluster:
    """A role of a cluster of the module's own that logs in with a password (the shared
    test server trusts everyone, so a wrong password cannot fail there)."""
    pg_cluster.execute(f"CREATE ROLE sayiir_app LOGIN PASSWORD 'right-{SECRET}'")
    return pg_cluster


def run_worker_until_exit(url: str, *extra: str, timeout: float = 90.0) -> tuple[int, str, float]:
    env = {**os.environ, "SAYIIR_TEST_LEDGER": os.devnull}
    started = time.monotonic()
    done = subprocess.run(
        worker_command(url, "w-auth", *extra), cwd=HERE, env=env, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_a_worker_with_a_wrong_password_exits_1_after_its_budget(
    app_role: PrivateCluster,
) -> None:
    url = app_role.url(user="sayiir_app", password=SECRET)
    code, output, took = run_worker_until_exit(url, "--outage-timeout", "3")
    assert code == 1, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(
        "sayiir worker: error: worker 'w-auth' gave up: the database kept failing for "
    ), output
    assert "(outage_timeout=3s); last error: cannot connect to PostgreSQL at 127.0.0.1:" in last
    assert 'password authentication failed for user "sayiir_app"' in last
    assert "cannot claim work" in output  # each failed try was logged while it retried
    assert SECRET not in output
    assert took >= 3.0  # it retried for its whole budget first


def test_a_worker_whose_database_is_unreachable_exits_1_after_its_budget() -> None:
    url = f"postgresql://app:{SECRET}@127.0.0.1:{free_port()}/app?connect_timeout=2"
    code, output, took = run_worker_until_exit(url, "--outage-timeout", "2")
    assert code == 1, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("sayiir worker: error: worker 'w-auth' gave up"), output
    assert "Connection refused" in last or "connection refused" in last.lower(), output
    assert SECRET not in output
    assert took >= 2.0
