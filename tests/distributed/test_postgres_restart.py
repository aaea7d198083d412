"""PostgreSQL restarted under running work: the run and the workers wait, then go on.

These restart the real server (``pg_ctlcluster ... restart``), so they only run where
that is allowed: CI sets SAYIIR_TEST_PG_RESTART=1 (the suite runs serially there). A
restart breaks every connection of the server, including other tests' — never run them
beside other PostgreSQL work.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sayiir import Flow, PostgresBackend, WorkflowClient, run_durable_workflow, task

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
workerapp: Any = importlib.import_module("workerapp")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("SAYIIR_TEST_PG_RESTART") != "1" or shutil.which("pg_ctlcluster") is None,
        reason="restarts the PostgreSQL server: set SAYIIR_TEST_PG_RESTART=1 (CI does)",
    ),
]


def restart_postgres(down_secs: float = 1.0) -> None:
    """Stop the cluster, stay down ``down_secs``, start it, wait until it accepts connections."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]
    subprocess.run([*ctl, "stop", "-m", "fast"], check=True, capture_output=True)
    time.sleep(down_secs)
    subprocess.run([*ctl, "start"], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError("PostgreSQL did not come back within 60 s")
        time.sleep(0.2)


ran: list[str] = []
entered = threading.Event()


@task
def one(x: int) -> int:
    ran.append("one")
    return x + 1


@task
def long_step(x: int) -> int:
    ran.append("long_step")
    entered.set()
    time.sleep(2.0)  # the server restarts meanwhile
    return x * 10


@task
def three(x: int) -> int:
    ran.append("three")
    return x + 5


def test_a_run_waits_out_a_restart_and_completes(pg_dsn: str) -> None:
    wf = Flow("restart").then(one).then(long_step).then(three).build()
    backend = PostgresBackend(pg_dsn, retry_timeout_secs=60)
    result: dict[str, Any] = {}

    def run() -> None:
        result["status"] = run_durable_workflow(wf, "through-restart", 1, backend=backend)

    thread = threading.Thread(target=run)
    thread.start()
    assert entered.wait(10)
    restart_postgres(down_secs=1.5)
    thread.join(90)
    status = result["status"]
    assert status.status == "completed" and status.output == 25
    assert ran == ["one", "long_step", "three"]  # nothing redone, nothing lost
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT task_key, count(*) FROM sayiir_task_executions "
            "WHERE instance_id = 'through-restart' AND status = 'completed' GROUP BY 1"
        ).fetchall()
    assert dict(rows) == {"one": 1, "long_step": 1, "three": 1}
    backend.close()


def test_workers_survive_a_restart_and_finish_the_work(pg_dsn: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    backend = PostgresBackend(pg_dsn, retry_timeout_secs=60)
    client = WorkflowClient(backend)
    runs = [f"fan-{i}" for i in range(20)]
    env = {**os.environ, "SAYIIR_TEST_LEDGER": str(ledger), "SAYIIR_TEST_TASK_SECS": "0.2"}
    command = [
        sys.executable, "-m", "sayiir.cli", "worker", "workerapp:workflows", "--url", pg_dsn,
        "--poll-interval", "0.5", "--claim-ttl", "5", "--concurrency", "2",
    ]  # fmt: skip
    log = (tmp_path / "workers.log").open("wb")  # worker output, kept for debugging
    procs = [
        subprocess.Popen(
            [*command, "--id", f"w{n}"], cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        for n in range(2)
    ]
    try:
        for i, run in enumerate(runs):
            client.submit(workerapp.fan, run, i)
        time.sleep(1.0)  # work in flight
        restart_postgres(down_secs=2.0)
        deadline = time.monotonic() + 90
        while not all(client.status(r).is_completed() for r in runs):
            assert time.monotonic() < deadline, "runs did not complete after the restart"
            assert all(p.poll() is None for p in procs), "a worker exited during the outage"
            time.sleep(0.2)
        for i, run in enumerate(runs):
            assert client.status(run).output == (3 * i + 6) * 10
        with psycopg.connect(pg_dsn) as conn:
            twice = conn.execute(
                "SELECT instance_id, task_key FROM sayiir_task_executions "
                "WHERE status = 'completed' GROUP BY 1, 2 HAVING count(*) > 1"
            ).fetchall()
        assert twice == []
        executions = Counter(line.split()[1] for line in ledger.read_text().splitlines())
        assert executions["finish"] == len(runs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
        log.close()
        backend.close()
