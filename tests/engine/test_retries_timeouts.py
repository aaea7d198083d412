"""Retries (spec §14.1) and timeouts (§14.2) on every path."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from sayiir import (
    Flow,
    RetryPolicy,
    WorkflowClient,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    task,
)
from sayiir.testing import virtual_time


def fast(n: int, delay: float = 0.01, mult: float = 1.0) -> RetryPolicy:
    return RetryPolicy(max_retries=n, initial_delay_secs=delay, backoff_multiplier=mult)


# -- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3])
def test_attempted_n_plus_one_times_then_fails_with_last_error(path, ledger, n):
    @task(retries=fast(n))
    def flaky(x):
        ledger.add("flaky")
        raise ValueError(f"boom {ledger.count('flaky')}")

    out = path.run(Flow("retry").then(flaky).build(), 0)
    assert not out.ok
    assert ledger.count("flaky") == n + 1
    assert out.error == f"ValueError: boom {n + 1}"


def test_retries_int_zero_means_one_attempt(path, ledger):
    @task(retries=0)
    def once(x):
        ledger.add("once")
        raise ValueError("no")

    out = path.run(Flow("zero").then(once).build(), 0)
    assert not out.ok and ledger.count("once") == 1


def test_success_after_retries(path, ledger):
    @task(retries=fast(3))
    def flaky(x):
        ledger.add("flaky")
        if ledger.count("flaky") < 3:
            raise ValueError("not yet")
        return x * 2

    out = path.run(Flow("retry").then(flaky).then(lambda v: v + 1, name="next").build(), 5)
    assert out.ok, out.error
    assert out.value == 11
    assert ledger.count("flaky") == 3


def test_backoff_schedule_is_d_then_d_times_m(path):
    stamps: list[float] = []

    with virtual_time() as clock:  # the backoffs pass on it, exactly

        @task(retries=fast(2, delay=0.1, mult=2.0))
        def flaky(x):
            stamps.append(clock())
            raise ValueError("always")

        out = path.run(Flow("backoff").then(flaky).build(), 0)
    assert not out.ok
    assert len(stamps) == 3
    gap1, gap2 = stamps[1] - stamps[0], stamps[2] - stamps[1]
    assert gap1 == pytest.approx(0.1) and gap2 == pytest.approx(0.2)


def test_undecorated_tasks_are_not_retried(path, ledger):
    def plain(x):
        ledger.add("plain")
        raise ValueError("x")

    out = path.run(Flow("plain").then(plain).build(), 0)
    assert not out.ok and ledger.count("plain") == 1


def test_join_task_is_retried(path, ledger):
    @task(retries=fast(1))
    def join(d):
        ledger.add("join")
        if ledger.count("join") == 1:
            raise ValueError("join once")
        return sorted(d)

    wf = Flow("j").fork().branch(lambda x: 1, name="a").branch(lambda x: 2, name="b").join(join)
    out = path.run(wf.build(), 0)
    assert out.ok and out.value == ["a", "b"]
    assert ledger.count("join") == 2


def test_durable_retry_counter_survives_a_crash(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    @task(retries=fast(2, delay=0.02))
    def flaky(x):
        ledger.add("flaky")
        n = ledger.count("flaky")
        if n == 2 and crashes:
            raise crashes.pop()  # the process dies during attempt 2
        raise ValueError(f"boom {n}")

    wf = Flow("persisted").then(flaky).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 0, backend=backend)
    assert ledger.count("flaky") == 2
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed"
    # Attempt 1 failed and was persisted; the interrupted attempt 2 runs again, then attempt 3.
    assert ledger.count("flaky") == 4
    assert status.error == "ValueError: boom 4"


def test_durable_retry_counter_is_not_reset_by_resume(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    @task(retries=fast(2, delay=0.02))
    def flaky(x):
        ledger.add("flaky")
        n = ledger.count("flaky")
        if n == 3 and crashes:
            raise crashes.pop()  # attempts 1 and 2 failed (persisted); dies in attempt 3
        raise ValueError(f"boom {n}")

    wf = Flow("persisted2").then(flaky).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 0, backend=backend)
    assert ledger.count("flaky") == 3
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed"
    assert ledger.count("flaky") == 4, "only the interrupted last attempt may run again"
    assert status.error == "ValueError: boom 4"


# -- timeouts ---------------------------------------------------------------------------------


def test_sync_task_timeout_fails_with_message(path, ledger):
    release, finished = threading.Event(), threading.Event()

    @task(timeout="0.2s")
    def slow(x):
        ledger.add("slow")
        release.wait(30)  # held until the caller has returned
        finished.set()
        return x

    out = path.run(Flow("to").then(slow).build(), 0)
    assert not finished.is_set(), "the caller must stop waiting at the deadline"
    release.set()
    assert not out.ok
    assert out.error == "Task 'slow' timed out after 0.2s"


def test_async_task_timeout_cancels_the_coroutine(path):
    cancelled = threading.Event()

    @task(timeout=0.2)
    async def slow(x):
        try:
            await asyncio.sleep(30)  # only the timeout ends it in time
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    out = path.run(Flow("ato").then(slow).build(), 0)
    assert not out.ok
    assert out.error == "Task 'slow' timed out after 0.2s"
    assert cancelled.wait(1.0), "the coroutine was not cancelled at its deadline"


def test_timed_out_task_is_retried_per_policy(path, ledger):
    @task(timeout="0.2s", retries=fast(1))
    def sometimes_slow(x):
        ledger.add("try")
        if ledger.count("try") == 1:
            time.sleep(1)
        return x + 1

    out = path.run(Flow("to-retry").then(sometimes_slow).build(), 1)
    assert out.ok, out.error
    assert out.value == 2
    assert ledger.count("try") == 2


def test_timed_out_async_task_is_retried_and_keeps_last_error(path, ledger):
    @task(timeout="0.1s", retries=fast(2))
    async def slow(x):
        ledger.add("try")
        await asyncio.sleep(1)

    out = path.run(Flow("to-retry-a").then(slow).build(), 1)
    assert not out.ok
    assert out.error == "Task 'slow' timed out after 0.1s"
    assert ledger.count("try") == 3


def test_fast_task_with_timeout_succeeds(path):
    @task(timeout="1s")
    def quick(x):
        return x * 3

    @task(timeout="1s")
    async def aquick(x):
        return x + 1

    out = path.run(Flow("quick").then(quick).then(aquick).build(), 2)
    assert out.ok and out.value == 7


def test_late_result_of_timed_out_task_is_ignored(path, ledger):
    release = threading.Event()
    threads: list[threading.Thread] = []

    @task(timeout="0.1s")
    def late(x):
        threads.append(threading.current_thread())
        release.wait(30)  # set once the run has failed: the result comes after the deadline
        ledger.add("late-finished")
        return "late"

    def after(x):
        ledger.add("after")
        return x

    out = path.run(Flow("late").then(late).then(after).build(), 0)
    assert not out.ok
    assert out.error == "Task 'late' timed out after 0.1s"
    release.set()
    threads[0].join(30)  # the thread that ran the body, and got its late result, is done
    assert not threads[0].is_alive()
    assert ledger.entries == ["late-finished"]  # ...and nothing ran after it


def test_timeout_error_raised_as_task_error_in_memory():
    from sayiir import TaskError

    @task(timeout="0.1s")
    def slow(x):
        time.sleep(0.5)

    with pytest.raises(TaskError, match=r"Task 'slow' timed out after 0.1s"):
        run_workflow(Flow("to").then(slow).build(), 0)


def test_timeout_applies_to_branch_tasks(path):
    @task(timeout="0.1s")
    def slow_branch(x):
        time.sleep(0.5)
        return 1

    wf = Flow("fb").fork().branch(slow_branch).branch(lambda x: 2, name="quick").join(dict)
    out = path.run(wf.build(), 0)
    assert not out.ok
    assert out.error == "Task 'slow_branch' timed out after 0.1s"


def test_durable_deadline_persisted_across_crash(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    @task(timeout="0.2s", retries=fast(1))
    def guarded(x):
        ledger.add("guarded")
        if crashes:
            raise crashes.pop()  # the process dies while the attempt runs
        return x + 1

    wf = Flow("deadline").then(guarded).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    time.sleep(0.25)  # past the persisted deadline: the interrupted attempt counts as timed out
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed", status
    assert status.output == 2
    assert ledger.count("guarded") == 2


def test_durable_deadline_without_retries_fails_on_resume(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    @task(timeout="0.1s")
    def guarded(x):
        ledger.add("guarded")
        if crashes:
            raise crashes.pop()
        return x

    wf = Flow("deadline0").then(guarded).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    time.sleep(0.15)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed"
    assert status.error == "Task 'guarded' timed out after 0.1s"
    assert ledger.count("guarded") == 1
    assert WorkflowClient(backend).status(iid).status == "failed"
