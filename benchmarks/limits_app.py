"""The workflows of benchmarks/limits.py: one 4-step linear flow, without and with run limits.

Served by the worker processes (``sayiir worker benchmarks.limits_app:workflows``)."""

from __future__ import annotations

from typing import Any

from sayiir import Flow


def _inc(x: dict[str, Any]) -> dict[str, Any]:
    return {**x, "v": x["v"] + 1}


def _linear(name: str, **limits: Any) -> Any:
    flow = Flow(name, **limits)
    for i in range(4):
        flow = flow.then(_inc, name=f"s{i}")
    return flow.build()


FLOWS = {
    # No limit: the baseline.
    "off": _linear("limits-off"),
    # A key per run: every run takes a slot, the limit never makes one wait (pure overhead).
    "per-run-key": _linear("limits-run-key", concurrency_key=lambda x: x["n"], max_concurrent=1),
    # Twenty keys, one run each at a time: the limit binds now and then, never starves.
    "20-keys": _linear("limits-20-keys", concurrency_key=lambda x: x["n"] % 20, max_concurrent=1),
    # One limit for the workflow, as high as the workers' parallelism.
    "workflow-cap": _linear("limits-cap", max_concurrent_runs=2),
}

workflows = list(FLOWS.values())
