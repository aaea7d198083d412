"""The retry backoff schedule, asserted exactly: a virtual clock instead of wall-clock bounds.

The engine takes its clock as a parameter and asks its driver to ``Sleep``; the driver here
advances a virtual clock instead of sleeping, so every backoff is known to the microsecond:
the waits asked for, the ``next_retry_at`` each backend stored, and where a resumed run (or a
worker) picks the schedule up. A loose wall-clock window (0.1 s could pass for 0.2 s) cannot
tell ``initial * multiplier ** (k - 1)`` from ``initial * multiplier ** k``; these tests can.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sayiir import Flow, InMemoryBackend, RetryPolicy, WorkflowClient, cancel_workflow, task
from sayiir.engine import _runs
from sayiir.engine._effects import Call, Sleep, Store, Yielding
from sayiir.engine._interpreter import WorkerMode
from sayiir.engine._invoke import call_sync
from sayiir.engine.engines import resolve

# A start time in the past (a worker claims what falls due at once) whose sums with the
# delays below are exact in binary floating point and in whole microseconds (what every
# backend stores).
T0 = 1_700_000_000.0
POLICY = RetryPolicy(max_retries=3, initial_delay_secs=2.0, backoff_multiplier=3.0)
SCHEDULE = [2.0, 6.0, 18.0]  # before retries 1, 2, 3: 2 * 3 ** (k - 1)


class VirtualClock:
    """Time that moves only when the driver sleeps (and by a tick per task, if asked)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Driver:
    """Performs the interpreter's effects on ``backend``; a ``Sleep`` advances the clock.

    Before each sleep it records what was asked for and the attempt state the backend
    stored just before (``load(...).attempts``), so the test reads both exactly.
    """

    def __init__(
        self,
        backend: Any,
        clock: VirtualClock,
        instance_id: str,
        during_sleep: Callable[[], None] = lambda: None,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.instance_id = instance_id
        self.during_sleep = during_sleep
        self.sleeps: list[tuple[float, float]] = []  # (asked at, seconds)
        self.stored_next_retry: list[float | None] = []

    def run(self, gen: Yielding) -> Any:
        result: Any = None
        while True:
            try:
                eff = gen.send(result)
            except StopIteration as stop:
                return stop.value
            if isinstance(eff, Store):
                result = getattr(self.backend, eff.op)(*eff.args, **eff.kwargs)
            elif isinstance(eff, Sleep):
                state = self.backend.load(self.instance_id)
                [attempt] = state.attempts.values()
                self.stored_next_retry.append(attempt.next_retry_at)
                self.sleeps.append((self.clock.now, eff.seconds))
                self.clock.now += eff.seconds
                self.during_sleep()
                result = None
            else:
                assert isinstance(eff, Call)
                result = call_sync(eff.fn, eff.arg, eff.ctx, eff.timeout)


def failing_then_ok(failures: int, calls: list[float], clock: VirtualClock) -> Any:
    @task(retries=POLICY)
    def flaky(x: int) -> int:
        calls.append(clock.now)
        if len(calls) <= failures:
            raise ValueError(f"failure {len(calls)}")
        return x + 1

    return flaky


def test_delay_for_is_initial_times_multiplier_to_the_retry_minus_one() -> None:
    assert [POLICY.delay_for(k) for k in (1, 2, 3)] == SCHEDULE
    assert RetryPolicy(initial_delay_secs=0.5).delay_for(1) == 0.5
    assert RetryPolicy(initial_delay_secs=0.5, backoff_multiplier=0.0).delay_for(1) == 0.5


def test_backoffs_and_stored_next_retry_times_follow_the_schedule_exactly(backend, iid) -> None:
    clock = VirtualClock()
    calls: list[float] = []
    wf = Flow("retry-exact").then(failing_then_ok(3, calls, clock)).build()
    definition, registry = resolve(wf, None)
    driver = Driver(backend, clock, iid)
    op = _runs.start_run(
        definition, registry, backend.codec, iid, 41, "fail", inline=True, clock=clock
    )
    status = driver.run(op)
    assert (status.status, status.output) == ("completed", 42)
    assert [seconds for _, seconds in driver.sleeps] == SCHEDULE
    # Each failed attempt stored when its retry is due: failure time + the delay, exactly.
    assert driver.stored_next_retry == [at + seconds for at, seconds in driver.sleeps]
    # The attempts ran when the backoffs ended: T0, T0+2, T0+8, T0+26.
    assert calls == [T0, T0 + 2.0, T0 + 8.0, T0 + 26.0]


def test_a_resumed_run_keeps_the_stored_schedule(backend, iid) -> None:
    """A process that died in a backoff: the resumed run waits until the stored
    next_retry_at, and the next failure waits the next delay of the schedule."""
    clock = VirtualClock()
    calls: list[float] = []
    wf = Flow("retry-resume").then(failing_then_ok(2, calls, clock)).build()
    definition, registry = resolve(wf, None)
    driver = Driver(backend, clock, iid)
    op = _runs.start_run(
        definition, registry, backend.codec, iid, 1, "fail", inline=True, clock=clock
    )
    eff: Any = next(op)
    while not isinstance(eff, Sleep):  # up to the first backoff: the process dies there
        eff = op.send(getattr(backend, eff.op)(*eff.args, **eff.kwargs))
    op.close()
    assert calls == [T0]
    [state] = backend.load(iid).attempts.values()
    assert state.next_retry_at == T0 + SCHEDULE[0]
    # The dead process's execution lease runs out (lease_secs later, on the backend's clock):
    # only then may a resume take the run over.
    assert backend.renew_lease(iid, backend.get_instance(iid).token, release=True)
    clock.now = T0 + 0.5  # restarted half a second later
    resumed = _runs.resume_run(definition, registry, backend.codec, iid, inline=True, clock=clock)
    status = driver.run(resumed)
    assert (status.status, status.output) == ("completed", 2)
    assert [seconds for _, seconds in driver.sleeps] == [1.5, SCHEDULE[1]]
    assert calls == [T0, T0 + 2.0, T0 + 8.0]


def test_a_cancel_asked_for_during_a_backoff_stops_the_run_before_the_next_attempt(
    backend, iid
) -> None:
    clock = VirtualClock()
    calls: list[float] = []
    wf = Flow("retry-cancel").then(failing_then_ok(3, calls, clock)).build()
    definition, registry = resolve(wf, None)

    def cancel() -> None:
        cancel_workflow(iid, backend, reason="enough", cancelled_by="ops")

    driver = Driver(backend, clock, iid, during_sleep=cancel)
    op = _runs.start_run(
        definition, registry, backend.codec, iid, 1, "fail", inline=True, clock=clock
    )
    status = driver.run(op)
    assert (status.status, status.reason, status.cancelled_by) == ("cancelled", "enough", "ops")
    assert calls == [T0]  # no attempt after the backoff
    assert [seconds for _, seconds in driver.sleeps] == [SCHEDULE[0]]


@pytest.mark.parametrize("kind", ["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_worker_queues_the_retry_due_exactly_after_the_backoff(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """On a worker the backoff is not slept: the task goes back to the queue, due at the
    failure time plus the delay of the schedule, as stored in the attempt record."""
    if kind == "memory":
        backend: Any = InMemoryBackend()
    else:
        import uuid

        from sayiir import PostgresBackend

        dsn = request.getfixturevalue("pg_dsn")
        backend = PostgresBackend(dsn, table_prefix=f"r{uuid.uuid4().hex[:10]}_")
    try:
        clock = VirtualClock()
        calls: list[float] = []
        wf = Flow("retry-worker").then(failing_then_ok(3, calls, clock)).build()
        definition, registry = resolve(wf, None)
        WorkflowClient(backend).submit(wf, "w", 5)
        due: list[float | None] = []
        for k in range(3):
            [claim] = backend.claim("w1", [definition.definition_hash], [], 1, 60.0)
            mode = WorkerMode(claim, 60.0, lambda: False)
            op = _runs.work_claim(definition, dict(registry), backend.codec, mode, clock=clock)
            assert Driver(backend, clock, "w").run(op) is None  # suspended: queued for later
            [state] = backend.load("w").attempts.values()
            assert state.failures == k + 1
            due.append(state.next_retry_at)
            clock.now = state.next_retry_at or 0.0
        assert calls == [T0, T0 + 2.0, T0 + 8.0]
        assert due == [T0 + 2.0, T0 + 8.0, T0 + 26.0]
    finally:
        backend.close()
