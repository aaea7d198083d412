"""Test your workflows fast and deterministically: virtual time, crash injection, task
mocks, history export and replay. See ``docs/testing.md``.

>>> from sayiir import Flow, InMemoryBackend, resume_workflow, run_durable_workflow, task
>>> from sayiir.testing import SimulatedCrash, crash_after, record_tasks, virtual_time
>>> @task
... def charge(order: dict) -> str:
...     return f"charged {order['total']}"
>>> @task
... def ship(receipt: str) -> str:
...     return f"shipped ({receipt})"
>>> wf = Flow("doc-order").then(charge).delay("cool_off", "10m").then(ship).build()
>>> backend = InMemoryBackend()
>>> with virtual_time() as clock, record_tasks() as calls:
...     run_durable_workflow(wf, "o-1", {"total": 39.0}, backend=backend).status
...     [s.status for s in clock.advance("10m")]  # the timer falls due: the run goes on
...     calls.counts()
'waiting'
['completed']
{'charge': 1, 'ship': 1}
>>> with virtual_time(), crash_after("charge"):
...     try:
...         run_durable_workflow(wf, "o-2", {"total": 5.0}, backend=backend)
...     except SimulatedCrash as crash:
...         print(crash)
...     resume_workflow(wf, "o-2", backend).output  # the delay passes at once (auto_skip)
simulated crash at after:charge (sayiir.testing)
'shipped (charged 5.0)'

The pytest plugin (``sayiir.testing.pytest_plugin``, registered as an entry point)
adds the fixtures ``sayiir_backend``, ``virtual_clock`` and ``crash_point`` and the
marker ``sayiir_crash_points``.
"""

from __future__ import annotations

from sayiir.testing._child import ChildOutcome, run_in_child
from sayiir.testing._clock import VirtualClock, to_seconds, virtual_time
from sayiir.testing._crash import (
    CrashPoint,
    SimulatedCrash,
    crash_after,
    crash_at_write,
    crash_before,
    crash_during,
    crash_points,
)
from sayiir.testing._history import Drift, export_history, replay
from sayiir.testing._mock import TaskCalls, TaskMock, mock_task, record_tasks

__all__ = [
    "ChildOutcome",
    "CrashPoint",
    "Drift",
    "SimulatedCrash",
    "TaskCalls",
    "TaskMock",
    "VirtualClock",
    "crash_after",
    "crash_at_write",
    "crash_before",
    "crash_during",
    "crash_points",
    "export_history",
    "mock_task",
    "record_tasks",
    "replay",
    "run_in_child",
    "to_seconds",
    "virtual_time",
]
