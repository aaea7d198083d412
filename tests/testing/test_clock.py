"""The virtual clock: stored wake_at values, deadlines and backoffs follow it, on every
backend, per thread, and the real path is untouched outside a ``virtual_time`` block."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from datetime import UTC, datetime
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
from sayiir.core.status import format_wake_at
from sayiir.testing import SimulatedCrash, crash_during, to_seconds, virtual_time

START = datetime(2031, 5, 1, tzinfo=UTC)


@task
def double(x: int) -> int:
    return x * 2


@task
def add_one(x: int) -> int:
    return x + 1


delayed = Flow("delayed").then(double).delay("week", "168h").then(add_one).build()
approval = Flow("approval").then(double).wait_for_signal("approve", timeout="168h").build()


def test_durations() -> None:
    assert to_seconds("7d") == 604800
    assert to_seconds("250ms") == 0.25
    assert to_seconds(3) == 3.0
    with pytest.raises(ValueError, match="'7 days'"):
        to_seconds("7 days")
    with pytest.raises(ValueError, match=">= 0"):
        to_seconds(-1)


def test_stored_wake_at_follows_the_virtual_clock(sayiir_backend: Any) -> None:
    with virtual_time(START, auto_skip=False) as clock:
        status = run_durable_workflow(delayed, "w-1", 4, backend=sayiir_backend)
        assert status.status == "waiting"
        assert status.wake_at == format_wake_at(START.timestamp() + 7 * 86400)
        # Not due yet: a resume leaves it parked, and advancing short of it fires nothing.
        assert resume_workflow(delayed, "w-1", sayiir_backend).status == "waiting"
        assert clock.advance("6d") == []
        fired = clock.advance("1d")
    assert [s.output for s in fired] == [9]


def test_auto_skip_jumps_to_the_timer_on_resume(sayiir_backend: Any) -> None:
    with virtual_time(START) as clock:
        run_durable_workflow(delayed, "w-2", 4, backend=sayiir_backend)
        assert resume_workflow(delayed, "w-2", sayiir_backend).output == 9
        assert clock() == START.timestamp() + 7 * 86400


def test_a_signal_timeout_fires_when_the_clock_passes_it(sayiir_backend: Any) -> None:
    with virtual_time(START) as clock:
        status = run_durable_workflow(approval, "s-1", 1, backend=sayiir_backend)
        assert status.status == "awaiting_signal"
        # auto_skip does not skip signal waits: a resume still waits for the signal.
        assert resume_workflow(approval, "s-1", sayiir_backend).status == "awaiting_signal"
        (timed_out,) = clock.advance("7d")
    assert timed_out.status == "failed"
    assert timed_out.error == "Signal 'approve' timed out"


_flaky_calls: list[float] = []


@task(retries=RetryPolicy(max_retries=3, initial_delay_secs=600, backoff_multiplier=2))
def flaky(x: int) -> int:
    _flaky_calls.append(time.time())
    if len(_flaky_calls) < 4:
        raise ConnectionError("try again")
    return x


backoff = Flow("backoff").then(flaky).build()


def test_retry_backoffs_pass_at_once_in_auto_skip(sayiir_backend: Any) -> None:
    _flaky_calls.clear()
    with virtual_time(START) as clock:
        status = run_durable_workflow(backoff, "b-1", 5, backend=sayiir_backend)
    assert status.output == 5
    assert clock() - START.timestamp() == 600 + 1200 + 2400  # 70 minutes of backoff
    assert _flaky_calls[-1] - _flaky_calls[0] < 60  # not waited for (a loose bound)


def test_a_manual_clock_holds_a_backoff_until_advanced() -> None:
    _flaky_calls.clear()
    done = threading.Event()
    result: list[Any] = []
    with virtual_time(START, auto_skip=False) as clock:

        def run() -> None:
            result.append(run_workflow(backoff, 5))
            done.set()

        worker = threading.Thread(target=contextvars.copy_context().run, args=(run,))
        worker.start()
        for wait in ("10m", "20m"):  # each advance releases exactly one backoff
            clock.wait_for_sleepers(1)
            clock.advance(wait)
        clock.wait_for_sleepers(1)
        assert not done.is_set() and len(_flaky_calls) == 3
        clock.advance("40m")
        assert done.wait(60)
        worker.join(60)
    assert result == [5]


def test_the_plain_path_sleeps_on_the_virtual_clock() -> None:
    with virtual_time(START) as clock:
        assert run_workflow(delayed, 4) == 9
    assert clock() == START.timestamp() + 7 * 86400


@task(timeout="30s")
def slow(x: int) -> int:
    return x


deadline = Flow("deadline").then(slow).build()


def test_a_stored_task_deadline_follows_the_virtual_clock(sayiir_backend: Any) -> None:
    """The process dies while ``slow`` runs; 31 virtual seconds later its stored deadline
    has passed, so the resume counts that attempt as timed out (no retries: failed)."""
    with virtual_time(START) as clock:
        with crash_during("slow"), pytest.raises(SimulatedCrash):
            run_durable_workflow(deadline, "d-1", 1, backend=sayiir_backend)
        with crash_during("slow"), pytest.raises(SimulatedCrash):
            run_durable_workflow(deadline, "d-2", 1, backend=sayiir_backend)
        assert resume_workflow(deadline, "d-1", sayiir_backend).output == 1  # within 30 s
        clock.advance("31s")
        status = resume_workflow(deadline, "d-2", sayiir_backend)
    assert status.status == "failed"
    assert status.error == "Task 'slow' timed out after 30s"


def test_the_async_runner_uses_the_virtual_clock(sayiir_backend: Any) -> None:
    async def main() -> list[Any]:
        with virtual_time(START, auto_skip=False) as clock:
            runner = CheckpointingRunner(sayiir_backend)
            status = await runner.run(delayed, "a-1", 4)
            assert status.wake_at == format_wake_at(START.timestamp() + 7 * 86400)
            assert clock.advance("7d") == []  # an asyncio run needs aadvance
            return await clock.aadvance(0)

    (status,) = asyncio.run(main())
    assert status.output == 9


def test_each_thread_keeps_its_own_clock() -> None:
    """A virtual clock is per thread (and asyncio task): a test next to it is unaffected."""
    seen: list[str | None] = []
    with virtual_time(START):
        other = threading.Thread(
            target=lambda: seen.append(run_durable_workflow(delayed, "t-1", 1).wake_at)
        )
        other.start()
        other.join(60)
        mine = run_durable_workflow(delayed, "t-2", 1).wake_at
    assert mine == format_wake_at(START.timestamp() + 7 * 86400)
    real_now = format_wake_at(time.time())
    assert seen[0] is not None and real_now is not None and real_now < seen[0] < str(mine)


def test_outside_a_block_the_real_clock_is_used() -> None:
    with virtual_time(START):
        pass
    before = time.time()
    status = run_durable_workflow(delayed, "r-1", 1)
    assert status.wake_at is not None
    assert status.wake_at >= str(format_wake_at(before + 7 * 86400))
