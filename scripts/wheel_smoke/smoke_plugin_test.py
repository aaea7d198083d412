"""A user's test file for the pytest plugin (scripts/wheel-smoke runs it with the wheel's pytest
plugin, from a temporary directory outside the source tree; not collected by the repo's tests).
"""

from __future__ import annotations

import pytest

from sayiir import Flow, resume_workflow, run_durable_workflow, task
from sayiir.testing import CrashPoint, SimulatedCrash, VirtualClock


@task
def charge(order: dict[str, float]) -> str:
    return f"charged {order['total']}"


@task
def ship(receipt: str) -> str:
    return f"shipped ({receipt})"


order = Flow("smoke-order").then(charge).then(ship).build()
delayed = Flow("smoke-delayed").then(charge).delay("cool_off", "10m").then(ship).build()


@pytest.mark.sayiir_crash_points("after:charge", "before:ship")
def test_resume_after_crash(sayiir_backend: object, crash_point: CrashPoint) -> None:
    with crash_point, pytest.raises(SimulatedCrash):
        run_durable_workflow(order, "o-1", {"total": 5.0}, backend=sayiir_backend)
    assert crash_point.fired
    assert resume_workflow(order, "o-1", sayiir_backend).output == "shipped (charged 5.0)"


def test_delay_on_virtual_time(sayiir_backend: object, virtual_clock: VirtualClock) -> None:
    first = run_durable_workflow(delayed, "o-2", {"total": 1.0}, backend=sayiir_backend)
    assert first.status == "waiting"
    assert [s.output for s in virtual_clock.advance("10m")] == ["shipped (charged 1.0)"]


def test_without_the_plugin() -> None:
    assert 1 + 1 == 2
