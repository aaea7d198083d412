"""Workload shapes shared by every engine: task names, bodies, expected outputs, timing lines.

Standard library only, so the sayiir drivers (ours and the reference) and the DBOS driver
all import it. ``size`` is K in the issue's terms:

* ``linear``  K sequential tasks ``s0..s{K-1}``, each ``x + 1``              (K tasks)
* ``fanout``  K parallel branches ``b0..b{K-1}`` (``x + 1``) and a ``join`` (K + 1 tasks)
* ``signal``  ``first`` (``x + 1``), wait for signal ``go`` whose payload is the run's
  index, then K tasks ``s0..``                                               (K + 1 tasks)
* ``sleep``   ``first``, a durable delay of ``SLEEP_SECONDS``, then K tasks  (K + 1 tasks)
* ``payload`` K sequential tasks like ``linear``, but each takes and returns a ~1 KB JSON
  dict (an order with customer and line items; ``bump`` counts the step): what a real step
  stores, where ``x + 1`` measures the engine alone                         (K tasks)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

WORKLOADS = ("linear", "fanout", "signal", "sleep", "payload")
SIGNAL_NAME = "go"
SLEEP_SECONDS = 0.05
DELAY_NAME = "nap"


def tasks_per_run(workload: str, size: int) -> int:
    return size if workload in ("linear", "payload") else size + 1


def chain_names(size: int) -> list[str]:
    return [f"s{i}" for i in range(size)]


def branch_names(size: int) -> list[str]:
    return [f"b{i}" for i in range(size)]


def final_task(workload: str, size: int) -> str:
    return "join" if workload == "fanout" else f"s{size - 1}"


def order(x: int, steps: int = 0) -> dict[str, Any]:
    """The ``payload`` workload's document for run ``x`` after ``steps`` steps (~1 KB as JSON)."""
    items = [
        {"sku": f"SKU-{x % 997:04d}-{n}", "name": f"item {n} of order {x}", "qty": n + 1,
         "unit_price": round(9.99 + n, 2), "tags": ["standard", "boxed"]}
        for n in range(6)
    ]  # fmt: skip
    return {
        "order_id": f"order-{x:08d}",
        "steps": steps,
        "customer": {"id": x, "name": "Ada Lovelace", "email": f"ada{x}@example.com",
                     "address": {"street": "12 Analytical Way", "city": "London",
                                 "zip": "NW1 6XE", "country": "GB"}},
        "items": items,
        "currency": "EUR",
        "notes": "leave at the door; ring twice",
    }  # fmt: skip


def bump(doc: dict[str, Any]) -> dict[str, Any]:
    """A ``payload`` step: the document in, a new document out, one more step counted."""
    return {**doc, "steps": doc["steps"] + 1}


def initial(workload: str, x: int) -> Any:
    """The input of run number ``x``."""
    return order(x) if workload == "payload" else x


def expected(workload: str, size: int, x: int) -> Any:
    """The output of run number ``x`` (its input; the signal payload is ``x`` as well)."""
    if workload == "payload":
        return order(x, size)
    if workload == "linear":
        return x + size
    if workload == "fanout":
        return size * (x + 1)
    if workload == "signal":
        return x + size
    return x + 1 + size


def inc(x: int) -> int:
    return x + 1


def join_sum(results: dict[str, int]) -> int:
    return sum(results.values())


# -- per-task timing lines (worker mode) --------------------------------------------------


class Recorder:
    """Appends ``instance task start end`` (epoch seconds) per task to a line-buffered file."""

    def __init__(self, path: str, instance_of: Callable[[], str]) -> None:
        self._file: TextIO = open(path, "a", buffering=1)  # noqa: SIM115 -- closed in close()
        self._instance_of = instance_of

    def wrap(self, name: str, body: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def timed(x: Any) -> Any:
            start = time.time()
            out = body(x)
            end = time.time()
            self._file.write(f"{self._instance_of()} {name} {start:.6f} {end:.6f}\n")
            return out

        timed.__name__ = name
        return timed

    def close(self) -> None:
        self._file.close()


def identity_wrap(name: str, body: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return body


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50 and p99 in milliseconds."""
    p50 = percentile(seconds, 50)
    p99 = percentile(seconds, 99)
    return {
        "p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "p99_ms": None if p99 is None else round(p99 * 1000, 3),
    }
