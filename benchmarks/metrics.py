"""Derived metrics: throughput of one case, and worker-mode latencies from the timing files.

Pickup latency of a task = its start - the time it became ready:
first tasks (``s0``, ``b*``, ``first``) are ready when ``submit`` returned; ``join`` when its
last branch ended; after a signal, when both the previous task ended and the signal was
sent; after the delay, ``SLEEP_SECONDS`` after the previous task ended; any other task when
the previous one ended. End-to-end latency = the run's last task end - its submit time.
Pickup is also split into first tasks (ready at submit: mostly the wait behind the backlog
of submitted runs) and next tasks (ready when an earlier task of the same run ended).
The makespan ends at ``t_end``, when the driver saw the last run completed (its final
commit), not at the last task body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.shapes import (
    SLEEP_SECONDS,
    branch_names,
    chain_names,
    final_task,
    latency_summary,
)


def throughput(result: dict[str, Any]) -> dict[str, Any]:
    """workflows/s, steps/s and wall-clock microseconds per step from runs, tasks, seconds."""
    seconds = result["seconds"]
    if not seconds:
        return {}
    return {
        "workflows_per_s": round(result["runs"] / seconds, 1),
        "steps_per_s": round(result["tasks"] / seconds, 1),
        "us_per_step": round(seconds / result["tasks"] * 1e6, 2),
    }


def _read_pairs(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        instance, stamp = line.split()
        out[instance] = float(stamp)
    return out


def _read_tasks(workdir: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(instance, task) -> (start, end) of its first execution."""
    tasks: dict[tuple[str, str], tuple[float, float]] = {}
    for path in sorted(workdir.glob("timings-*.txt")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 4:
                continue
            key = (parts[0], parts[1])
            span = (float(parts[2]), float(parts[3]))
            if key not in tasks or span[0] < tasks[key][0]:
                tasks[key] = span
    return tasks


def predecessors(workload: str, size: int) -> dict[str, list[str]]:
    """Task -> the tasks it waits for (empty: ready at submit)."""
    if workload == "fanout":
        branches = branch_names(size)
        return {**{b: [] for b in branches}, "join": branches}
    chain = chain_names(size)
    preds: dict[str, list[str]] = {}
    previous: list[str] = []
    if workload in ("signal", "sleep"):
        preds["first"] = []
        previous = ["first"]
    for name in chain:
        preds[name] = previous
        previous = [name]
    return preds


def worker_metrics(
    workload: str, size: int, workdir: Path, t_go: float, t_end: float | None = None
) -> dict[str, Any]:
    submits = _read_pairs(workdir / "submits.txt")
    signals = _read_pairs(workdir / "signals.txt")
    tasks = _read_tasks(workdir)
    preds = predecessors(workload, size)
    final = final_task(workload, size)
    resumed = chain_names(size)[0]
    firsts: list[float] = []  # tasks ready at submit: queueing behind the backlog
    nexts: list[float] = []  # tasks ready when an earlier task of the run ended
    e2e: list[float] = []
    last_end = t_go
    for instance, submitted in submits.items():
        for task, before in preds.items():
            span = tasks.get((instance, task))
            if span is None:
                continue
            ends = [tasks[(instance, p)][1] for p in before if (instance, p) in tasks]
            ready = max(ends) if ends else submitted
            if workload == "sleep" and task == resumed:
                ready += SLEEP_SECONDS
            if workload == "signal" and task == resumed and instance in signals:
                ready = max(ready, signals[instance])
            (nexts if before else firsts).append(max(0.0, span[0] - ready))
        done = tasks.get((instance, final))
        if done is not None:
            e2e.append(done[1] - submitted)
            last_end = max(last_end, done[1])
    pickup = latency_summary(firsts + nexts)
    first = latency_summary(firsts)
    later = latency_summary(nexts)
    end_to_end = latency_summary(e2e)
    return {
        "seconds": round(max(last_end, t_end or 0.0) - t_go, 6),
        "pickup_p50_ms": pickup["p50_ms"],
        "pickup_p99_ms": pickup["p99_ms"],
        "pickup_first_p50_ms": first["p50_ms"],
        "pickup_first_p99_ms": first["p99_ms"],
        "pickup_next_p50_ms": later["p50_ms"],
        "pickup_next_p99_ms": later["p99_ms"],
        "e2e_p50_ms": end_to_end["p50_ms"],
        "e2e_p99_ms": end_to_end["p99_ms"],
    }
