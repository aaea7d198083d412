"""The workflows of benchmarks/task_limits.py: one 4-step linear flow, without and with task
limits that never bind (pure overhead). Served by ``sayiir worker
benchmarks.task_limits_app:workflows``."""

from __future__ import annotations

from typing import Any

from sayiir import Flow, RateLimit, task


def _inc(x: dict[str, Any]) -> dict[str, Any]:
    return {**x, "v": x["v"] + 1}


def _linear(name: str, limited: range = range(0), **limits: Any) -> Any:
    flow = Flow(name)
    for i in range(4):
        step = task(f"{name}-s{i}", **limits)(_step(i)) if i in limited else _step(i)
        flow = flow.then(step, name=f"{name}-s{i}")
    return flow.build()


def _step(i: int) -> Any:
    def step(x: dict[str, Any]) -> dict[str, Any]:
        return _inc(x)

    step.__name__ = f"s{i}"
    return step


# Limits far above what 2 workers reach: every limited step asks, none ever waits.
_CONCURRENT = {"max_concurrent": 1000}
_RATE = {"rate_limit": RateLimit(100_000, "1s")}

FLOWS = {
    # No limit: the baseline.
    "off": _linear("tl-off"),
    # One of the four steps limited (a typical flow: the step that calls the API), both ways.
    "one-step-both": _linear("tl-one", range(1, 2), **_CONCURRENT, **_RATE),
    # Every step with max_concurrent: a slot taken and given back per step.
    "all-concurrent": _linear("tl-conc", range(4), **_CONCURRENT),
    # Every step with a rate limit: a start recorded per step.
    "all-rate": _linear("tl-rate", range(4), **_RATE),
}

workflows = list(FLOWS.values())
