"""One execution of a run at a time, and final states that stay final (issue 10, items 1-2).

In-process scenarios on every backend: threads stand for concurrent callers (the
multi-process forms, with SIGSTOP and SIGKILL, are in test_one_execution_processes.py).
Leases are short here (``LEASE``), so the heartbeat has work to do within a test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sayiir import (
    CheckpointingRunner,
    Flow,
    InMemoryBackend,
    WorkflowClient,
    cancel_workflow,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    unpause_workflow,
)
from sayiir.errors import RunReplacedError

LEASE = 0.6
BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
Ledger = Any  # tests/engine/conftest.py's Ledger (the `ledger` fixture)


def short_lease_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if kind == "memory":
        return InMemoryBackend(lease_secs=LEASE)
    if kind == "sqlite":
        from sayiir.backends.sqlite import SqliteBackend

        return SqliteBackend(tmp_path / "lease.db", lease_secs=LEASE)
    from sayiir import PostgresBackend

    backend = PostgresBackend(request.getfixturevalue("pg_dsn"), lease_secs=LEASE)
    backend.get_instance("warm-up")
    return backend


@pytest.fixture(params=BACKENDS)
def leased(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    b = short_lease_backend(request.param, request, tmp_path)
    try:
        yield b
    finally:
        b.close()


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def parked_after(ledger: Ledger, gate: threading.Event | None = None, started=None) -> Any:
    """first -> delay(0.2 s) -> second -> third; ``second`` may block on ``gate``."""

    def first(x: int) -> int:
        ledger.add("first")
        return x + 1

    def second(x: int) -> int:
        ledger.add("second")
        if started is not None:
            started.set()
        if gate is not None:
            assert gate.wait(60)
        return x * 10

    def third(x: int) -> int:
        ledger.add("third")
        return x + 3

    return Flow("after-delay").then(first).delay("nap", 0.2).then(second).then(third).build()


def past_wake_up(backend: Any, iid: str) -> None:
    wake = backend.get_instance(iid).wake_at
    wait_for(lambda: time.time() > wake + 0.01)


# -- one execution at a time -------------------------------------------------------------------


def test_two_concurrent_resumes_run_each_task_once(leased: Any, iid: str, ledger: Ledger) -> None:
    """Threads resume the same waiting run at once: exactly one runs the tasks; the other
    gets the status (in progress), or the completed result if it came late."""
    gate, started = threading.Event(), threading.Event()
    wf = parked_after(ledger, gate, started)
    assert run_durable_workflow(wf, iid, 1, backend=leased).status == "waiting"
    past_wake_up(leased, iid)
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def resume() -> None:
        barrier.wait(10)
        results.append(resume_workflow(wf, iid, leased))

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for t in threads:
        t.start()
    assert started.wait(30)
    wait_for(lambda: len(results) == 1)  # the loser returns at once, the winner is blocked
    assert results[0].status == "in_progress"
    gate.set()
    for t in threads:
        t.join(60)
    assert sorted(s.status for s in results) == ["completed", "in_progress"]
    assert [s.output for s in results if s.status == "completed"] == [23]
    assert (ledger.count("second"), ledger.count("third")) == (1, 1)
    final = WorkflowClient(leased).status(iid)
    assert final.status == "completed" and final.output == 23


def test_a_long_task_keeps_its_run_by_heartbeat(leased: Any, iid: str, ledger: Ledger) -> None:
    """A task three times longer than the lease: concurrent resumes never take the run over,
    because one heartbeat per process renews the lease meanwhile."""
    renewals: list[bool] = []
    renew = getattr(leased, "renew_lease", lambda *a, **k: False)

    def counting(*args: Any, **kwargs: Any) -> bool:
        ok: bool = renew(*args, **kwargs)
        if not kwargs.get("release"):
            renewals.append(ok)
        return ok

    leased.renew_lease = counting
    gate, started = threading.Event(), threading.Event()
    wf = parked_after(ledger, gate, started)
    done: list[Any] = []
    assert run_durable_workflow(wf, iid, 1, backend=leased).status == "waiting"
    past_wake_up(leased, iid)
    runner = threading.Thread(target=lambda: done.append(resume_workflow(wf, iid, leased)))
    runner.start()
    try:
        assert started.wait(30)
        begun = time.monotonic()
        attempts = 0
        while time.monotonic() - begun < 3 * LEASE or renewals.count(True) < 3:
            status = resume_workflow(wf, iid, leased)
            assert status.status == "in_progress", status
            attempts += 1
            time.sleep(LEASE / 5)
    finally:
        gate.set()
        runner.join(60)
    assert [s.status for s in done] == ["completed"]
    assert ledger.count("second") == 1 and ledger.count("third") == 1
    assert attempts >= 5
    # (a renewal may find nothing to renew: that of a concurrent resume that lost)
    assert renewals.count(True) >= 3, renewals


def test_a_taken_over_execution_stops_and_records_nothing(
    leased: Any, iid: str, ledger: Ledger
) -> None:
    """The heartbeat of a stalled execution is gone (here: it is stopped from renewing);
    after its lease a resume takes the run over and completes it; the stalled one's task
    then finishes, its write is refused, and it runs nothing more."""
    gate, started = threading.Event(), threading.Event()
    calls: list[int] = []

    def first(x: int) -> int:
        calls.append(1)
        ledger.add("first")
        if len(calls) == 1:  # the first execution stalls here
            started.set()
            assert gate.wait(60)
            return -1000
        return x + 1

    def last(x: int) -> int:
        ledger.add("last")
        return x * 2

    wf = Flow("stall").then(first).then(last).build()
    renew = getattr(leased, "renew_lease", lambda *a, **k: False)
    leased.renew_lease = lambda *a, **k: False if not k.get("release") else renew(*a, **k)
    box: list[Any] = []

    def stalled() -> None:
        try:
            box.append(run_durable_workflow(wf, iid, 1, backend=leased))
        except Exception as exc:
            box.append(exc)

    t = threading.Thread(target=stalled)
    t.start()
    try:
        assert started.wait(30)
        deadline = time.monotonic() + 30
        while (status := resume_workflow(wf, iid, leased)).status == "in_progress":
            assert time.monotonic() < deadline
            time.sleep(LEASE / 4)
        assert status.status == "completed" and status.output == 4
    finally:
        leased.renew_lease = renew
        gate.set()
        t.join(60)
    [outcome] = box
    assert isinstance(outcome, RunReplacedError), outcome
    assert "took it over" in str(outcome) and "discarded" in str(outcome)
    assert ledger.entries == ["first", "first", "last"]  # the stalled one never reached last
    final = WorkflowClient(leased).status(iid)
    assert final.status == "completed" and final.output == 4
    assert WorkflowClient(leased).get_task_result(iid, "first") == 2


def test_async_runner_holds_its_run_too(leased: Any, iid: str, ledger: Ledger) -> None:
    """CheckpointingRunner: one heartbeat task per event loop keeps a long task's run."""

    async def slow(x: int) -> int:
        ledger.add("slow")
        await asyncio.sleep(3 * LEASE)
        return x

    slow_wf = Flow("async-slow").then(slow).then(slow, name="again").build()

    async def main() -> tuple[Any, list[Any]]:
        runner = CheckpointingRunner(leased)
        run = asyncio.ensure_future(runner.run(slow_wf, iid, 1))
        seen = []
        while not run.done():
            await asyncio.sleep(LEASE / 3)
            seen.append(await asyncio.to_thread(resume_workflow, slow_wf, iid, leased))
        return await run, seen

    result, seen = asyncio.run(main())
    assert result.status == "completed"
    assert ledger.count("slow") == 2  # each task once: no concurrent resume took over
    assert seen and {s.status for s in seen[:-1]} <= {"in_progress"}


# -- final states are final --------------------------------------------------------------------


@pytest.mark.parametrize("op", ["cancel", "pause"])
def test_a_control_applied_after_the_resume_read_the_run_wins(
    leased: Any, iid: str, ledger: Ledger, op: str
) -> None:
    """A cancel or pause applied to the parked run between the resume's read and its first
    write: the resume runs nothing and the run stays cancelled/paused (it used to run on
    and overwrite it with completed)."""
    wf = parked_after(ledger)
    assert run_durable_workflow(wf, iid, 1, backend=leased).status == "waiting"
    past_wake_up(leased, iid)
    load = leased.load

    def load_then_control(instance_id: str) -> Any:
        state = load(instance_id)
        if op == "cancel":
            cancel_workflow(iid, leased, reason="stop")
        else:
            pause_workflow(iid, leased, reason="hold")
        return state

    leased.load = load_then_control
    status = resume_workflow(wf, iid, leased)
    leased.load = load
    expected = "cancelled" if op == "cancel" else "paused"
    assert status.status == expected
    assert ledger.entries == ["first"]
    stored = WorkflowClient(leased).status(iid)
    assert stored.status == expected and stored.output is None


@pytest.mark.parametrize("op", ["cancel", "pause"])
def test_status_is_in_progress_while_a_task_runs_after_a_delay(
    leased: Any, iid: str, ledger: Ledger, op: str
) -> None:
    """While the task after an expired delay runs, the run is in progress (not waiting), so a
    cancel or pause is a request the engine obeys at the next step: the final state is the
    one asked for, and it stays."""
    gate, started = threading.Event(), threading.Event()
    wf = parked_after(ledger, gate, started)
    assert run_durable_workflow(wf, iid, 1, backend=leased).status == "waiting"
    past_wake_up(leased, iid)
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(resume_workflow(wf, iid, leased)))
    t.start()
    try:
        assert started.wait(30)
        client = WorkflowClient(leased)
        assert client.status(iid).status == "in_progress"
        if op == "cancel":
            cancel_workflow(iid, leased, reason="stop")
        else:
            pause_workflow(iid, leased, reason="hold")
        assert client.status(iid).status == "in_progress"  # requested, obeyed at the boundary
    finally:
        gate.set()
        t.join(60)
    expected = "cancelled" if op == "cancel" else "paused"
    assert [s.status for s in box] == [expected]
    assert "third" not in ledger.entries
    assert WorkflowClient(leased).status(iid).status == expected
    if op == "pause":
        unpause_workflow(iid, leased)
        done = resume_workflow(wf, iid, leased)
        assert done.status == "completed" and done.output == 23
        assert ledger.count("second") == 1  # its checkpoint was kept with the pause
