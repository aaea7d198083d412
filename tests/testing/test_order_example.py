"""The README's order workflow, tested the way docs/testing.md shows: a 10-minute
delay, a signal and a retry with a 10-minute backoff, on every backend, crashed at
every step (before, during and after each task, and at every storage write), always
resumed to the right output, and a finished task never run again."""

from __future__ import annotations

from typing import Any

import pytest

from sayiir import (
    Flow,
    InMemoryBackend,
    RetryPolicy,
    WorkflowStatus,
    get_task_context,
    resume_workflow,
    run_durable_workflow,
    send_signal,
    task,
)
from sayiir.errors import InstanceNotFoundError
from sayiir.testing import CrashPoint, SimulatedCrash, record_tasks, virtual_time

ORDER = {"total": 39.0}
_declined_once: set[str] = set()


@task(retries=RetryPolicy(max_retries=2, initial_delay_secs=600), timeout="30s")
def charge(order: dict[str, Any]) -> str:
    # The payment gateway declines the first try of every order: the retry must work.
    context = get_task_context()
    assert context is not None
    instance = context.instance_id
    if instance not in _declined_once:
        _declined_once.add(instance)
        raise ConnectionError("gateway timeout")
    return f"charged {order['total']}"


@task
def ship(approval: dict[str, Any]) -> str:
    return f"shipped, approved by {approval['by']}"


order = (
    Flow("order")
    .then(charge)
    .delay("cool_off", "10m")
    .wait_for_signal("approval")
    .then(ship)
    .build()
)


def place_and_approve(backend: Any, instance_id: str) -> WorkflowStatus:
    """What production does: start the run, resume it when it is due, approve it.

    Each step is safe to repeat after a crash: it starts the run only if it does not
    exist, and sends the approval only when the run waits for it.
    """
    try:
        status = resume_workflow(order, instance_id, backend)
    except InstanceNotFoundError:
        status = run_durable_workflow(order, instance_id, ORDER, backend=backend)
    for _ in range(10):
        if status.status == "completed":
            break
        if status.status == "awaiting_signal":
            send_signal(instance_id, "approval", {"by": "alice"}, backend)
        status = resume_workflow(order, instance_id, backend)  # the delay passes at once
    return status


@pytest.fixture(autouse=True)
def _fresh_gateway() -> None:
    _declined_once.clear()  # every test (and backend) sees the first decline again


def _writes_of_a_clean_run() -> int:
    probe = CrashPoint("write", 10**9)  # never reached: counts the writes
    with virtual_time(), probe:
        place_and_approve(InMemoryBackend(), "probe")
    _declined_once.clear()
    return probe.writes


WRITES = _writes_of_a_clean_run()


def test_a_clean_run_takes_no_time(sayiir_backend: Any, virtual_clock: Any) -> None:
    start = virtual_clock()
    with record_tasks() as calls:
        status = run_durable_workflow(order, "order-1", ORDER, backend=sayiir_backend)
        assert status.status == "waiting"  # charged after a 10-minute backoff, then parked
        assert virtual_clock() - start == 600
        assert [s.status for s in virtual_clock.advance("10m")] == ["awaiting_signal"]
        send_signal("order-1", "approval", {"by": "alice"}, sayiir_backend)
        status = resume_workflow(order, "order-1", sayiir_backend)
    assert status.output == "shipped, approved by alice"
    assert calls.counts() == {"charge": 2, "ship": 1}  # one decline, one success


@pytest.mark.sayiir_crash_points(workflow=order, writes=WRITES)
def test_the_order_survives_a_crash_at_every_step(
    sayiir_backend: Any, virtual_clock: Any, crash_point: CrashPoint
) -> None:
    instance_id = f"order-{crash_point.name}"
    with record_tasks() as calls:
        with crash_point, pytest.raises(SimulatedCrash):
            place_and_approve(sayiir_backend, instance_id)
        assert crash_point.fired
        finished = [t for t in ("charge", "ship") if _checkpointed(sayiir_backend, instance_id, t)]
        before = calls.counts()
        status = place_and_approve(sayiir_backend, instance_id)  # the restarted process
    assert status.status == "completed"
    assert status.output == "shipped, approved by alice"
    for task_id in finished:  # a finished task is never run again
        assert calls.count(task_id) == before[task_id], (task_id, calls)


def _checkpointed(backend: Any, instance_id: str, task_id: str) -> bool:
    return backend.get_instance(instance_id) is not None and (
        backend.get_checkpoint(instance_id, task_id) is not None
    )
