"""Run concurrency limits with real worker processes, on PostgreSQL and on SQLite: four
workers, 1,000 runs over twenty keys with ``max_concurrent=1``: never two runs of one key at
once (the intervals the tasks record are checked), and every run completes.

``SAYIIR_TEST_LIMIT_RUNS`` sets the number of runs (default 1,000; benchmarks/limits.py
measures the cost of the limits)."""

from __future__ import annotations

import importlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sayiir import WorkflowClient
from tests.distributed.targets import Target, target

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
workerapp: Any = importlib.import_module("workerapp")

RUNS = int(os.environ.get("SAYIIR_TEST_LIMIT_RUNS", "1000"))
KEYS = 20


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from target(request, tmp_path)


def _intervals(path: Path) -> dict[str, list[tuple[float, float, str]]]:
    """key -> [(start, end, run)] of every run, from the lines the tasks appended."""
    starts: dict[str, tuple[str, float]] = {}
    out: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        run, key, event, at = line.split()
        if event == "start":
            starts[run] = (key, float(at))
        else:
            key, began = starts[run]
            out[key].append((began, float(at), run))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_four_workers_never_run_two_runs_of_one_key_at_once(
    backend: Target, tmp_path: Path
) -> None:
    intervals = tmp_path / "intervals"
    env = {**os.environ, "SAYIIR_TEST_INTERVALS": str(intervals), "SAYIIR_TEST_LEDGER": "/dev/null"}
    client = WorkflowClient(backend.backend)
    for i in range(RUNS):
        # The runs of one key are submitted together: without the limit, the workers
        # would take several of them at once (claims go oldest first).
        key = f"k{i * KEYS // RUNS}"
        client.submit(workerapp.keyed, f"keyed-{i:05d}", {"key": key, "n": i})
    command = [
        sys.executable, "-m", "sayiir.cli", "worker", "workerapp:workflows", *backend.args,
        "--poll-interval", "0.2", "--concurrency", "2", "--log-level", "warning",
    ]  # fmt: skip
    procs = [subprocess.Popen([*command, "--id", f"lw{w}"], cwd=HERE, env=env) for w in range(4)]
    try:
        deadline = time.monotonic() + 800
        while (done := backend.count("keyed-", "completed")) < RUNS:
            assert all(p.poll() is None for p in procs), "a worker died"
            assert time.monotonic() < deadline, f"only {done} of {RUNS} runs completed"
            time.sleep(0.5)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
    by_key = _intervals(intervals)
    assert sum(len(v) for v in by_key.values()) == RUNS  # every run once (no crash here)
    assert len(by_key) == KEYS
    overlaps = []
    for key, runs in by_key.items():
        runs.sort()
        for (_, end, a), (start, _, b) in itertools.pairwise(runs):
            if start < end:
                overlaps.append((key, a, b, end - start))
    assert overlaps == []
    # The limit held without serialising everything: runs of different keys overlapped.
    every = sorted((s, e) for runs in by_key.values() for s, e, _ in runs)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(every))
