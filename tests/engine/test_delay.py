"""Delays (spec §6.2, §9.2, §11): in-memory sleeps, durable runs park and resume."""

from __future__ import annotations

import contextvars
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from sayiir import Flow, WorkflowClient, resume_workflow, run_durable_workflow, run_workflow
from sayiir.engine._runs import WAIT_OUT_SECS
from sayiir.testing import virtual_time


def test_in_memory_delay_sleeps_and_passes_input_through(ledger):
    def before(x):
        ledger.add("before")
        return x + 1

    def after(x):
        ledger.add("after")
        return x * 2

    wf = Flow("d").then(before).delay("pause", 0.2).then(after).build()
    with virtual_time() as clock:  # the delay moves the clock by its length, no more
        t0 = clock()
        assert run_workflow(wf, 1) == 4
        assert clock() - t0 == pytest.approx(0.2, abs=1e-3)
    assert ledger.entries == ["before", "after"]


@pytest.mark.parametrize("duration", ["150ms", 0.15, timedelta(milliseconds=150)])
def test_in_memory_delay_duration_forms(duration):
    wf = Flow("d").delay("pause", duration).build()
    with virtual_time() as clock:
        t0 = clock()
        assert run_workflow(wf, "x") == "x"
        assert clock() - t0 == pytest.approx(0.15, abs=1e-3)


def test_zero_delay_is_allowed_in_memory():
    wf = Flow("z").then(lambda x: x + 1).delay("now", 0).then(lambda x: x * 3).build()
    assert run_workflow(wf, 1) == 6


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_bad_durations_rejected_at_build(bad):
    with pytest.raises(ValueError, match="delay duration must be a finite non-negative number"):
        Flow("bad").delay("d", bad)


def test_durable_delay_parks_with_status_fields(backend, iid, ledger, parse_wake_at):
    def before(x):
        ledger.add("before")
        return x + 1

    def after(x):
        ledger.add("after")
        return x * 2

    wf = Flow("d").then(before).delay("wait_a_bit", 3600).then(after).build()
    t0 = time.time()
    # A delay that blocked the caller would hold it an hour: pytest-timeout fails the test.
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    t1 = time.time()
    assert status.status == "waiting" and status.is_waiting()
    assert status.delay_id == "wait_a_bit"
    assert status.wake_at is not None
    wake = parse_wake_at(status.wake_at)
    assert t0 + 3600 - 0.01 <= wake <= t1 + 3600 + 0.01
    assert status.output is None and status.error is None
    assert status.signal_id is None and status.signal_name is None
    assert ledger.entries == ["before"]


def test_durable_delay_resume_early_stays_waiting_then_continues(
    backend, iid, ledger, same_wake_at
):
    def before(x):
        ledger.add("before")
        return x + 1

    def after(x):
        ledger.add("after")
        return x * 2

    wf = Flow("d").then(before).delay("nap", 0.3).then(after).build()
    # A clock that moves only when told: "early" is early however slow this machine is.
    with virtual_time(auto_skip=False) as clock:
        first = run_durable_workflow(wf, iid, 1, backend=backend)
        assert first.status == "waiting"
        early = resume_workflow(wf, iid, backend)
        assert early.status == "waiting"
        assert same_wake_at(early.wake_at, first.wake_at)
        assert early.delay_id == "nap"
        assert ledger.entries == ["before"]
        clock.advance(0.35)
        done = resume_workflow(wf, iid, backend)
    assert done.status == "completed", done
    assert done.output == 4
    assert ledger.entries == ["before", "after"]


def test_resume_just_before_the_deadline_waits_to_it_and_continues(backend, iid, parse_wake_at):
    seen: list[int] = []

    def after(x: int) -> int:
        seen.append(x)
        return x + 1

    wf = Flow("d").delay("nap", 0.3).then(after).build()
    with virtual_time(auto_skip=False) as clock:
        first = run_durable_workflow(wf, iid, 1, backend=backend)
        wake = parse_wake_at(first.wake_at)
        clock.advance(wake - clock() - WAIT_OUT_SECS / 2)  # inside the wait-out window
        box: list[Any] = []
        context = contextvars.copy_context()  # the virtual clock is installed in it
        resumer = threading.Thread(
            target=context.run, args=(lambda: box.append(resume_workflow(wf, iid, backend)),)
        )
        resumer.start()
        # It sleeps to the deadline (a manual clock blocks it there) instead of parking again.
        clock.wait_for_sleepers(1)
        assert seen == []  # the delay never ends early
        clock.advance(WAIT_OUT_SECS)  # (this resumes the due run too: one of the two runs it)
        resumer.join(60)
    assert box and box[0].status in ("completed", "in_progress"), box
    final = resume_workflow(wf, iid, backend)
    assert final.status == "completed" and final.output == 2
    assert seen == [1]  # exactly once


def test_resume_well_before_the_deadline_does_not_wait(backend, iid, parse_wake_at):
    wf = Flow("d").delay("nap", 0.3).then(lambda x: x + 1, name="after").build()
    with virtual_time(auto_skip=False) as clock:
        first = run_durable_workflow(wf, iid, 1, backend=backend)
        wake = parse_wake_at(first.wake_at)
        clock.advance(wake - clock() - 3 * WAIT_OUT_SECS)
        before = clock()
        early = resume_workflow(wf, iid, backend)
        assert early.status == "waiting"
        assert clock() == before  # no sleep at all


def test_trailing_delay_returns_the_real_output(backend, iid):
    wf = Flow("trail").then(lambda x: {"v": x}).delay("end", 0.1).build()
    assert run_durable_workflow(wf, iid, 7, backend=backend).status == "waiting"
    time.sleep(0.15)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed"
    assert status.output == {"v": 7}
    assert WorkflowClient(backend).status(iid).output == {"v": 7}


def test_zero_delay_durable_completes_at_the_latest_on_resume(backend, iid):
    wf = Flow("z").then(lambda x: x + 1).delay("now", 0).then(lambda x: x * 3).build()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    # The reference parks even for 0 s; ours may continue at once. Either way one resume ends it.
    if status.status == "waiting":
        assert status.delay_id == "now"
        status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 6


def test_two_delays_park_twice(backend, iid, ledger):
    def mid(x):
        ledger.add("mid")
        return x + 1

    wf = Flow("dd").delay("d1", 0.1).then(mid).delay("d2", 0.1).then(lambda x: x * 2).build()
    s1 = run_durable_workflow(wf, iid, 1, backend=backend)
    assert s1.status == "waiting" and s1.delay_id == "d1"
    time.sleep(0.12)
    s2 = resume_workflow(wf, iid, backend)
    assert s2.status == "waiting" and s2.delay_id == "d2"
    assert ledger.entries == ["mid"]
    time.sleep(0.12)
    s3 = resume_workflow(wf, iid, backend)
    assert s3.status == "completed" and s3.output == 4
    assert ledger.entries == ["mid"]


def test_client_status_of_parked_delay(backend, iid, same_wake_at):
    wf = Flow("d").delay("nap", 10).build()
    engine_status = run_durable_workflow(wf, iid, 1, backend=backend)
    st = WorkflowClient(backend).status(iid)
    # Spec §11: "in_progress" (reference) or the precise parked status (allowed).
    assert st.status in ("waiting", "in_progress")
    if st.status == "waiting":
        assert st.delay_id == "nap"
        assert same_wake_at(st.wake_at, engine_status.wake_at)


def test_resume_of_far_delay_does_not_block(backend, iid):
    wf = Flow("d").delay("nap", 3600).then(lambda x: x).build()
    run_durable_workflow(wf, iid, 1, backend=backend)
    box: list[Any] = []
    resumer = threading.Thread(
        target=lambda: box.append(resume_workflow(wf, iid, backend)), daemon=True
    )
    resumer.start()
    resumer.join(60)  # generous: blocking would mean the hour-long delay
    assert not resumer.is_alive(), "resume slept through the delay instead of returning"
    assert box[0].status == "waiting"


def test_two_delays_with_the_same_name(backend, iid):
    wf = (
        Flow("same-name")
        .delay("wait", 0.05)
        .then(lambda x: x + 1, name="a")
        .delay("wait", 0.05)
        .then(lambda x: x * 2, name="b")
        .build()
    )
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    for _ in range(5):
        if status.status != "waiting":
            break
        time.sleep(0.06)
        status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 4


def test_wake_at_is_stable_across_reads(backend, iid):
    wf = Flow("stable").delay("nap", 60).build()
    client = WorkflowClient(backend)
    mismatches = []
    for n in range(100):
        parked = run_durable_workflow(wf, f"{iid}-{n}", n, backend=backend)
        again = resume_workflow(wf, f"{iid}-{n}", backend)
        stored = client.status(f"{iid}-{n}")
        if not parked.wake_at == again.wake_at == stored.wake_at:
            mismatches.append((parked.wake_at, again.wake_at, stored.wake_at))
    assert mismatches == []


def test_deadline_passing_between_the_check_and_the_wait_does_not_break_the_resume(
    backend, iid, monkeypatch
):
    """The resume asks ``reached`` (not yet), then reads the clock again to know how long to
    wait: the deadline can pass in between on a busy machine. It used to sleep a negative
    time (``ValueError: sleep length must be non-negative``, seen in the benchmark)."""
    from sayiir.engine import _runs

    wf = Flow("d").delay("nap", 0.01).then(lambda x: x + 1, name="after").build()
    assert run_durable_workflow(wf, iid, 1, backend=backend).status == "waiting"
    time.sleep(0.05)  # the deadline is past ...
    monkeypatch.setattr(_runs, "reached", lambda clock, at: False)  # ... after the check
    done = resume_workflow(wf, iid, backend)
    assert done.status == "completed" and done.output == 2, done
