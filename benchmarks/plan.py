"""Which cases run: workload x mode x size, the number of runs, and the engines compared.

Sizes are steps per run (K). Runs per case shrink as K grows and as the mode gets slower,
so that every case takes seconds, not minutes, on a 2-core machine. Quick mode keeps every
workload and mode but a handful of runs: it only proves that the suite still works.

``workers-2-open`` measures latency, not throughput: 2 workers, runs submitted open-loop at
``OPEN_LOOP_RATE`` runs/s (far below either engine's capacity, so no backlog builds up), and
its figure is the first-task pickup p50/p99. ``payload`` is linear with ~1 KB JSON documents.
``postgres-many``: 200 runs in flight in one process (asyncio ``CheckpointingRunner``, a pool
of 4 connections), against ``pgbench -N -c 4``.
``sqlite-workers-N``: N worker processes on one SQLite file (no server), compared with the
serial in-process ``sqlite`` mode of the same workload: SQLite has one writer.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINES = ("ours", "ref", "dbos")
ENGINE_LABELS = {"ours": "sayiir (ours)", "ref": "sayiir 1.0.0 (ref)", "dbos": "DBOS"}
MODES = (
    "plain",
    "durable-memory",
    "sqlite",
    "postgres",
    "postgres-many",
    "workers-1",
    "workers-2",
    "workers-4",
    "workers-2-open",
    "sqlite-workers-1",
    "sqlite-workers-2",
    "sqlite-workers-4",
)
OPEN_LOOP_RATE = 10.0  # runs/s
MODE_ENGINES = {
    "plain": ("ours", "ref"),
    "durable-memory": ("ours", "ref"),
    "sqlite": ("ours", "ref", "dbos"),
    "postgres": ("ours", "ref", "dbos"),
    "postgres-many": ("ours",),
    "workers-1": ("ours", "ref"),
    "workers-2": ("ours", "ref"),
    "workers-4": ("ours", "ref"),
    "workers-2-open": ("ours", "ref"),
    # The reference has no SQLite backend; DBOS has no worker processes of its own.
    "sqlite-workers-1": ("ours",),
    "sqlite-workers-2": ("ours",),
    "sqlite-workers-4": ("ours",),
}
HEADLINE_SIZE = 4
HEADLINES = {
    "a": ("plain", "durable-memory", "sqlite"),
    "b": ("postgres",),
    "c": ("workers-2", "workers-2-open"),
}
HEADLINE_RUNS = {"plain": 10_000, "durable-memory": 10_000, "sqlite": 1_000, "postgres": 1_000}
HEADLINE_WORKER_RUNS = 2_000

# runs per (mode group, workload) and size; "workers" covers workers-1/2/4.
_FULL: dict[str, dict[str, dict[int, int]]] = {
    "memory": {
        "linear": {1: 10_000, 4: 10_000, 10: 10_000, 100: 2_000},
        "fanout": {1: 5_000, 10: 1_000, 100: 100},
        "signal": {1: 2_000, 10: 1_000, 100: 100},
        "sleep": {1: 2_000, 10: 1_000, 100: 100},
        "payload": {4: 5_000},
    },
    "sqlite": {
        "linear": {1: 1_000, 4: 1_000, 10: 500, 100: 100},
        "payload": {4: 1_000},
        "fanout": {1: 1_000, 10: 300, 100: 100},
        "signal": {1: 500, 10: 300, 100: 100},
        "sleep": {1: 500, 10: 300, 100: 100},
    },
    "postgres": {
        "linear": {1: 1_000, 4: 1_000, 10: 300, 100: 100},
        "payload": {4: 1_000},
        "fanout": {1: 500, 10: 200, 100: 100},
        "signal": {1: 300, 10: 200, 100: 100},
        "sleep": {1: 300, 10: 200, 100: 100},
    },
    "workers": {
        "linear": {1: 1_000, 4: 2_000, 10: 300},
        "payload": {4: 1_000},
        "fanout": {10: 200},
        "signal": {10: 200},
        "sleep": {10: 200},
    },
    "postgres-many": {"linear": {4: 2_000}, "payload": {4: 1_000}},
    "sqlite-workers": {
        "linear": {4: 1_000},
        "payload": {4: 500},
        "fanout": {10: 200},
    },
}
_QUICK: dict[str, dict[str, dict[int, int]]] = {
    "memory": {
        "linear": {1: 300, 4: 500, 10: 200, 100: 20},
        "fanout": {10: 100},
        "signal": {10: 50},
        "sleep": {10: 50},
        "payload": {4: 200},
    },
    "sqlite": {
        "linear": {4: 100},
        "payload": {4: 50},
        "fanout": {10: 20},
        "signal": {10: 20},
        "sleep": {10: 20},
    },
    "postgres": {
        "linear": {4: 100},
        "payload": {4: 50},
        "fanout": {10: 20},
        "signal": {10: 20},
        "sleep": {10: 20},
    },
    "workers": {"linear": {4: 100}},
    "sqlite-workers": {"linear": {4: 50}},
    "postgres-many": {"linear": {4: 100}},
}
_QUICK_WORKERS_2 = {
    "fanout": {10: 20},
    "signal": {10: 20},
    "sleep": {10: 20},
    "payload": {4: 20},
}
_OPEN_RUNS = {"full": 200, "quick": 20}


@dataclass(frozen=True)
class Case:
    workload: str
    mode: str
    size: int
    runs: int

    @property
    def engines(self) -> tuple[str, ...]:
        return MODE_ENGINES[self.mode]

    @property
    def headline(self) -> str | None:
        if self.workload != "linear" or self.size != HEADLINE_SIZE:
            return None
        return next((k for k, modes in HEADLINES.items() if self.mode in modes), None)

    @property
    def label(self) -> str:
        return f"{self.workload}/{self.mode}/K={self.size}/N={self.runs}"


def _group(mode: str) -> str:
    if mode in ("plain", "durable-memory"):
        return "memory"
    if mode.startswith("sqlite-workers"):
        return "sqlite-workers"
    return "workers" if mode.startswith("workers") else mode


def worker_count(mode: str) -> int | None:
    """The number of worker processes of a worker mode (``None``: one process, no workers)."""
    parts = mode.split("-")
    return int(parts[parts.index("workers") + 1]) if "workers" in parts else None


def build_plan(quick: bool) -> list[Case]:
    table = _QUICK if quick else _FULL
    cases: list[Case] = []
    for workload in ("linear", "payload", "fanout", "signal", "sleep"):
        for mode in MODES:
            sizes = dict(table[_group(mode)].get(workload, {}))
            if quick and mode == "workers-2":
                sizes.update(_QUICK_WORKERS_2.get(workload, {}))
            if mode == "plain" and workload in ("signal", "sleep"):
                sizes = {}  # no durable state: see docs/benchmarks.md
            if workload == "payload" and mode in ("workers-1", "workers-4"):
                sizes = {}  # one worker count is enough to see what the payload costs
            if mode == "workers-2-open":
                runs = _OPEN_RUNS["quick" if quick else "full"]
                sizes = {HEADLINE_SIZE: runs} if workload == "linear" else {}
            cases.extend(Case(workload, mode, size, runs) for size, runs in sorted(sizes.items()))
    return cases


def headline_plan(which: str) -> list[Case]:
    """The cases behind headline figure ``which`` (a, b or c) at full size."""
    cases = []
    for mode in HEADLINES[which]:
        if mode == "workers-2-open":
            runs = _OPEN_RUNS["full"]
        elif mode.startswith("workers"):
            runs = HEADLINE_WORKER_RUNS
        else:
            runs = HEADLINE_RUNS[mode]
        cases.append(Case("linear", mode, HEADLINE_SIZE, runs))
    return cases
