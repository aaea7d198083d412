"""The four workloads as sayiir flows, written once against the public API.

Imported by the drivers in ``benchmarks/peers`` under this repo's package and under the
reference ``sayiir==1.0.0`` alike (same import name, separate virtual environments).
Only ``Flow`` and task callables are used here: nothing that differs between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.shapes import (
    DELAY_NAME,
    SIGNAL_NAME,
    SLEEP_SECONDS,
    branch_names,
    bump,
    chain_names,
    identity_wrap,
    inc,
    join_sum,
)
from sayiir import Flow

Wrap = Callable[[str, Callable[[Any], Any]], Callable[[Any], Any]]


def _chain(flow: Any, size: int, wrap: Wrap, body: Callable[[Any], Any] = inc) -> Any:
    for name in chain_names(size):
        flow = flow.then(wrap(name, body), name=name)
    return flow


def build(workload: str, size: int, wrap: Wrap = identity_wrap) -> Any:
    """The workflow for ``workload`` with ``size`` steps; ``wrap`` may add timing to tasks."""
    flow = Flow(f"bench-{workload}-{size}")
    if workload == "linear":
        return _chain(flow, size, wrap).build()
    if workload == "payload":
        return _chain(flow, size, wrap, bump).build()
    if workload == "fanout":
        fork = flow.fork()
        for name in branch_names(size):
            fork = fork.branch(wrap(name, inc), name=name)
        return fork.join(wrap("join", join_sum), name="join").build()
    flow = flow.then(wrap("first", inc), name="first")
    if workload == "signal":
        flow = flow.wait_for_signal(SIGNAL_NAME)
    elif workload == "sleep":
        flow = flow.delay(DELAY_NAME, SLEEP_SECONDS)
    else:
        raise ValueError(f"unknown workload {workload!r}")
    return _chain(flow, size, wrap).build()
