"""Crash points (the run dies there, nothing after it is written, resume goes on) and
task mocks (a task's body replaced for one test, with call records)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sayiir import (
    CheckpointingRunner,
    Flow,
    RetryPolicy,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    task,
)
from sayiir.testing import (
    CrashPoint,
    SimulatedCrash,
    crash_after,
    crash_at_write,
    crash_before,
    crash_during,
    crash_points,
    mock_task,
    record_tasks,
)


@task
def charge(order: dict[str, Any]) -> str:
    return f"charged {order['total']}"


@task
def ship(receipt: str) -> str:
    return f"shipped ({receipt})"


flow = Flow("crashy").then(charge).then(ship).build()


def _steps(backend: Any, instance_id: str) -> dict[str, bytes]:
    state = backend.load(instance_id)
    return {} if state is None else dict(state.checkpoints)


def test_crash_before_a_task(sayiir_backend: Any) -> None:
    with record_tasks() as calls:
        with crash_before("ship") as point, pytest.raises(SimulatedCrash, match="before:ship"):
            run_durable_workflow(flow, "c-1", {"total": 3}, backend=sayiir_backend)
        assert point.fired
        assert list(_steps(sayiir_backend, "c-1")) == ["charge"]
        assert sayiir_backend.get_instance("c-1").status.value == "running"
        assert resume_workflow(flow, "c-1", sayiir_backend).output == "shipped (charged 3)"
    assert calls.counts() == {"charge": 1, "ship": 1}


def test_crash_during_a_task_loses_its_checkpoint(sayiir_backend: Any) -> None:
    with record_tasks() as calls:
        with crash_during("charge"), pytest.raises(SimulatedCrash):
            run_durable_workflow(flow, "c-2", {"total": 3}, backend=sayiir_backend)
        assert _steps(sayiir_backend, "c-2") == {}
        assert resume_workflow(flow, "c-2", sayiir_backend).output == "shipped (charged 3)"
    assert calls.counts() == {"charge": 2, "ship": 1}  # at-least-once: it ran again


def test_crash_after_a_task_keeps_its_checkpoint(sayiir_backend: Any) -> None:
    with record_tasks() as calls:
        with crash_after("charge"), pytest.raises(SimulatedCrash):
            run_durable_workflow(flow, "c-3", {"total": 3}, backend=sayiir_backend)
        assert list(_steps(sayiir_backend, "c-3")) == ["charge"]
        assert resume_workflow(flow, "c-3", sayiir_backend).output == "shipped (charged 3)"
    assert calls.counts() == {"charge": 1, "ship": 1}


def test_crash_at_write_n_writes_nothing_from_n_on(sayiir_backend: Any) -> None:
    probe = CrashPoint("write", 10**9)
    with probe:
        run_durable_workflow(flow, "c-probe", {"total": 1}, backend=sayiir_backend)
    assert probe.writes == 3  # create, charge's checkpoint, ship's with the final status
    with crash_at_write(1), pytest.raises(SimulatedCrash):
        run_durable_workflow(flow, "c-4", {"total": 1}, backend=sayiir_backend)
    assert sayiir_backend.get_instance("c-4") is None
    with crash_at_write(3), pytest.raises(SimulatedCrash):
        run_durable_workflow(flow, "c-5", {"total": 1}, backend=sayiir_backend)
    assert list(_steps(sayiir_backend, "c-5")) == ["charge"]
    assert sayiir_backend.get_instance("c-5").status.value == "running"


def test_a_dead_run_writes_nothing_more() -> None:
    """After the crash point fired, every storage call of that engine call raises."""
    point = CrashPoint("write", 2)

    class Storage:
        codec = None
        calls: list[str] = []  # noqa: RUF012

        def save_steps(self, *args: Any) -> None:
            self.calls.append("save_steps")

        def load(self, *args: Any) -> None:
            self.calls.append("load")

    wrapped = point.storage(Storage())
    wrapped.save_steps()
    with pytest.raises(SimulatedCrash):
        wrapped.save_steps()
    with pytest.raises(SimulatedCrash):
        wrapped.load()
    assert Storage.calls == ["save_steps"]
    point.restart()  # the next engine call is a new process
    wrapped.load()
    assert Storage.calls == ["save_steps", "load"]


def test_crash_points_of_a_workflow() -> None:
    assert crash_points(flow, writes=2) == [
        "before:charge",
        "during:charge",
        "after:charge",
        "before:ship",
        "during:ship",
        "after:ship",
        "write:1",
        "write:2",
    ]
    with pytest.raises(ValueError, match="'after:TASK'"):
        CrashPoint.parse("charge")
    with pytest.raises(ValueError, match="unknown crash point kind"):
        CrashPoint.parse("later:charge")
    with pytest.raises(ValueError, match="n >= 1"):
        CrashPoint.parse("write:x")


def test_crash_with_the_async_runner(sayiir_backend: Any) -> None:
    async def main() -> Any:
        runner = CheckpointingRunner(sayiir_backend)
        with crash_after("charge"), pytest.raises(SimulatedCrash):
            await runner.run(flow, "c-6", {"total": 2})
        return await runner.resume(flow, "c-6")

    assert asyncio.run(main()).output == "shipped (charged 2)"


def test_mock_task_replaces_the_body_and_records_calls(sayiir_backend: Any) -> None:
    with mock_task("charge", lambda order: f"fake {order['total']}") as fake:
        status = run_durable_workflow(flow, "m-1", {"total": 7}, backend=sayiir_backend)
    assert status.output == "shipped (fake 7)"
    assert fake.calls == [{"total": 7}]
    # Outside the block the real task runs again.
    assert run_workflow(flow, {"total": 7}) == "shipped (charged 7)"


_tries: list[int] = []


@task(retries=RetryPolicy(max_retries=1, initial_delay_secs=0))
def gateway(x: int) -> int:
    return x


retried = Flow("retried").then(gateway).build()


def test_a_mock_keeps_the_tasks_retry_policy(sayiir_backend: Any) -> None:
    def flaky(x: int) -> int:
        _tries.append(x)
        if len(_tries) == 1:
            raise ConnectionError("declined")
        return x + 100

    _tries.clear()
    with mock_task("gateway", flaky) as mock:
        status = run_durable_workflow(retried, "m-2", 1, backend=sayiir_backend)
    assert status.output == 101
    assert mock.call_count == 2


def test_mock_returns_raises_and_spies() -> None:
    with mock_task("charge", returns="free"):
        assert run_workflow(flow, {"total": 1}) == "shipped (free)"
    with mock_task("charge", raises=ValueError("card expired")):
        status = run_durable_workflow(flow, "m-3", {"total": 1})
    assert status.status == "failed" and status.error == "ValueError: card expired"
    with mock_task("ship") as spy:  # the real body runs, the calls are recorded
        assert run_workflow(flow, {"total": 1}) == "shipped (charged 1)"
    assert spy.calls == ["charged 1"]
    with pytest.raises(ValueError, match="one of"), mock_task("ship", lambda x: x, returns=1):
        pass


@task
async def async_charge(order: dict[str, Any]) -> str:
    return "real"


async_flow = Flow("async-mock").then(async_charge).build()


def test_mock_of_an_async_task() -> None:
    async def fake(order: dict[str, Any]) -> str:
        return "fake"

    with mock_task("async_charge", fake) as mock:
        assert run_workflow(async_flow, {}) == "fake"
    assert mock.calls == [{}]
