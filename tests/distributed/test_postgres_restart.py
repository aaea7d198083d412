"""PostgreSQL restarted under running work: the run and the workers wait, then go on.

The server restarted is a cluster of this module's own (``pg_cluster``, see
tests/pgcluster.py), never the shared test server, so these run beside any other test.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from sayiir import Flow, PostgresBackend, WorkflowClient, run_durable_workflow, task

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
workerapp: Any = importlib.import_module("workerapp")

if TYPE_CHECKING:
    from tests.pgcluster import PrivateCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_dsn(pg_cluster: PrivateCluster) -> str:
    """A database of the module's private cluster (a plain superuser URL)."""
    return pg_cluster.url(pg_cluster.create_database())


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


def test_a_run_waits_out_a_restart_and_completes(
    pg_cluster: PrivateCluster, cluster_dsn: str
) -> None:
    wf = Flow("restart").then(one).then(long_step).then(three).build()
    backend = PostgresBackend(cluster_dsn, retry_timeout_secs=60)
    result: dict[str, Any] = {}

    def run() -> None:
        result["status"] = run_durable_workflow(wf, "through-restart", 1, backend=backend)

    thread = threading.Thread(target=run)
    thread.start()
    assert entered.wait(10)
    pg_cluster.restart(down_secs=1.5)
    thread.join(90)
    status = result["status"]
    assert status.status == "completed" and status.output == 25
    assert ran == ["one", "long_step", "three"]  # nothing redone, nothing lost
    with psycopg.connect(cluster_dsn) as conn:
        rows = conn.execute(
            "SELECT task_key, count(*) FROM sayiir_task_executions "
            "WHERE instance_id = 'through-restart' AND status = 'completed' GROUP BY 1"
        ).fetchall()
    assert dict(rows) == {"one": 1, "long_step": 1, "three": 1}
    backend.close()


def test_workers_survive_a_restart_and_finish_the_work(
    pg_cluster: PrivateCluster, cluster_dsn: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    backend = PostgresBackend(cluster_dsn, retry_timeout_secs=60)
    client = WorkflowClient(backend)
    runs = [f"fan-{i}" for i in range(20)]
    env = {**os.environ, "SAYIIR_TEST_LEDGER": str(ledger), "SAYIIR_TEST_TASK_SECS": "0.2"}
    command = [
        sys.executable, "-m", "sayiir.cli", "worker", "workerapp:workflows", "--url", cluster_dsn,
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
        pg_cluster.restart(down_secs=2.0)
        deadline = time.monotonic() + 90
        while not all(client.status(r).is_completed() for r in runs):
            assert time.monotonic() < deadline, "runs did not complete after the restart"
            assert all(p.poll() is None for p in procs), "a worker exited during the outage"
            time.sleep(0.2)
        for i, run in enumerate(runs):
            assert client.status(run).output == (3 * i + 6) * 10
        with psycopg.connect(cluster_dsn) as conn:
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
