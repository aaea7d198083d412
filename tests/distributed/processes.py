"""Worker processes started with ``sayiir worker`` on one backend URL, for the process tests.

Each worker appends "run task pid event" lines to the ledger named by ``SAYIIR_TEST_LEDGER``
(see workerapp.py); the tests read it to see what ran where.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from sayiir import WorkflowClient

HERE = Path(__file__).parent


class WorkerProcesses:
    """Worker processes serving ``workerapp:workflows`` at ``url``, and a client to drive them."""

    def __init__(self, url: str, backend: Any, ledger: Path) -> None:
        self.url = url
        self.ledger = ledger
        self.backend = backend
        self.client = WorkflowClient(backend)
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        worker_id: str,
        *,
        claim_ttl: float = 5.0,
        poll: float = 0.5,
        concurrency: int = 1,
        tags: str = "",
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "sayiir.cli", "worker", "workerapp:workflows",
            "--url", self.url, "--id", worker_id, "--poll-interval", str(poll),
            "--claim-ttl", str(claim_ttl), "--concurrency", str(concurrency),
            "--tags", tags, "--log-level", "warning",
        ]  # fmt: skip
        full_env = {**os.environ, "SAYIIR_TEST_LEDGER": str(self.ledger), **(env or {})}
        proc = subprocess.Popen(
            cmd, cwd=HERE, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        self.backend.close()
