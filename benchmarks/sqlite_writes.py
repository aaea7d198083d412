"""Where a step goes on SQLite: serial in-process runs against a queue worker, counted per
write transaction (issue 16, item 6: why 2 workers stay near 0.65x of serial).

    python -m benchmarks.sqlite_writes --runs 500

SQLite has one writer: workers on one file share its write lock, so their steps/s are bounded
by the write time per step, whatever the number of workers. This measures that time: every
``Database.write`` of the backend is timed (lock wait, statements and commit) and counted by
what it does, for RUNS 4-step runs run serially with ``run_durable_workflow``, then submitted
and drained by one in-process worker. The ratio of the write times per step is the bound
the queue can reach against serial runs.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sayiir import Flow, Worker, WorkflowClient, run_durable_workflow
from sayiir.backends.sqlite import SqliteBackend, _connection

_counts: collections.Counter[str] = collections.Counter()
_spent: collections.Counter[str] = collections.Counter()


def _timed(write: Callable[..., Any]) -> Callable[..., Any]:
    def timed(self: Any, what: str, fn: Any) -> Any:
        start = time.perf_counter()
        try:
            return write(self, what, fn)
        finally:
            kind = what.split("(")[0]
            _counts[kind] += 1
            _spent[kind] += time.perf_counter() - start

    return timed


def _inc(x: int) -> int:
    return x + 1


def _report(label: str, runs: int, wall: float) -> float:
    steps = runs * 4
    writes = {k: v for k, v in _counts.items() if not k.startswith("applying migration")}
    per_step = sum(_spent[k] for k in writes) / steps
    print(f"{label}: {steps / wall:,.0f} steps/s, {wall / steps * 1e6:,.0f} µs/step wall, "
          f"{per_step * 1e6:,.0f} µs/step in write transactions")  # fmt: skip
    print(f"    {'write':<18} {'per run':>8} {'µs each':>8}")
    for kind, n in sorted(writes.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:<18} {n / runs:>8.2f} {_spent[kind] / n * 1e6:>8.0f}")
    _counts.clear()
    _spent.clear()
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    runs = args.runs
    _connection.Database.write = _timed(_connection.Database.write)  # type: ignore[method-assign]
    flow = Flow("sqlite_writes")
    for name in "abcd":
        flow = flow.then(_inc, name=name)
    wf = flow.build()
    with tempfile.TemporaryDirectory(prefix="sayiir-sqlite-writes-") as tmp:
        serial = SqliteBackend(Path(tmp) / "serial.db")
        run_durable_workflow(wf, "warm", 1, backend=serial)  # migrations out of the count
        _counts.clear()
        _spent.clear()
        start = time.perf_counter()
        for i in range(runs):
            run_durable_workflow(wf, f"s{i}", 1, backend=serial)
        serial_write = _report("serial run_durable_workflow", runs, time.perf_counter() - start)
        queued = SqliteBackend(Path(tmp) / "queue.db")
        client = WorkflowClient(queued)
        _counts.clear()
        _spent.clear()
        start = time.perf_counter()
        for i in range(runs):
            client.submit(wf, f"w{i}", 1)
        handle = Worker("w", queued, poll_interval=0.01, max_concurrent_tasks=1).start([wf])
        try:
            while not all(client.status(f"w{i}").is_completed() for i in range(runs - 1, -1, -1)):
                time.sleep(0.01)
        finally:
            handle.shutdown()
            handle.join()
        worker_write = _report("submit + 1 worker", runs, time.perf_counter() - start)
        serial.close()
        queued.close()
    print(f"bound for any number of workers (one writer): serial / worker write time per step "
          f"= {serial_write / worker_write:.2f}x of serial steps/s")  # fmt: skip


if __name__ == "__main__":
    main()
