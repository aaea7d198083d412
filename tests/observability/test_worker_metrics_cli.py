"""``sayiir worker --metrics-port``: a real worker process serves its metrics to Prometheus."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sayiir import PostgresBackend, WorkflowClient
from tests.observability.otelflows import ORDER, shop

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.postgres


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body: bytes = r.read()
            return body.decode()
    except OSError:
        return None  # not listening yet


def test_a_worker_process_serves_its_metrics(pg_dsn: str) -> None:
    port = free_port()
    cmd = [
        sys.executable, "-m", "sayiir.cli", "worker", "tests.observability.otelflows:shop",
        "--url", pg_dsn, "--id", "metrics-1", "--poll-interval", "0.2",
        "--metrics-port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        with PostgresBackend(pg_dsn) as backend:
            client = WorkflowClient(backend)
            client.submit(shop, "order-m", ORDER)
            deadline = time.monotonic() + 60
            while not client.status("order-m").is_completed():
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, client.status("order-m")
                time.sleep(0.05)
        body = scrape(port)
        assert body is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = body.splitlines()
    for task_id in ("reserve", "pack", "bill", "merge", "ship"):
        assert (
            f'sayiir_tasks_completed_total{{task_id="{task_id}",workflow_id="shop"}} 1.0' in lines
        )
    assert 'sayiir_tasks_retried_total{task_id="reserve",workflow_id="shop"} 1.0' in lines
    assert 'sayiir_runs_completed_total{workflow_id="shop"} 1.0' in lines
    assert any(line.startswith("sayiir_task_schedule_to_start_seconds_count") for line in lines)
    assert "order-m" not in body
