"""How fork branches run in one process (``sayiir.engine._drive``): the calling thread runs
the branches one by one, and a watchdog brings pool threads in as soon as a branch blocks.

Whatever the branches do, what users see must not change: blocking branches run side by
side (nested forks too, and after the watchdog went idle), a branch's failure or timeout
fails the run, a cancel stops every branch at its next step boundary. Speed is measured in
``benchmarks/`` (fan-out rows), not here.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from sayiir import (
    Flow,
    InMemoryBackend,
    cancel_workflow,
    run_durable_workflow,
    task,
)
from sayiir.engine import _drive, _runs

WAIT = 30.0  # a barrier that breaks after this long means the branches ran one by one


def _meeting(size: int, name: str) -> tuple[Any, threading.Barrier]:
    meet = threading.Barrier(size, timeout=WAIT)

    def wait(x: int) -> int:
        meet.wait()
        return x + 1

    wait.__name__ = name
    return wait, meet


def test_nested_forks_with_blocking_branches_all_run_side_by_side(path):
    # Four outer branches, the last one a fork of four more: the eight tasks meet at one
    # barrier, which opens only when the eight run at the same time.
    meet = threading.Barrier(7, timeout=WAIT)

    def nap(x: int) -> int:
        meet.wait()
        return x

    def nested(x: int) -> int:
        return x

    outer = Flow("outer").fork()
    for i in range(3):
        outer = outer.branch(nap, name=f"o{i}")
    inner = Flow("inner").then(nested, name="nested").fork()
    for i in range(4):
        inner = inner.branch(nap, name=f"i{i}")
    inner_flow = inner.join(lambda d: sum(d.values()), name="inner_join").build()
    wf = outer.branch(inner_flow, name="nested").join(lambda d: sorted(d), name="join").build()
    out = path.run(wf, 1)
    assert out.ok, f"blocking branches did not run side by side: {out.error}"
    assert out.value == ["nested", "o0", "o1", "o2"]


def test_blocking_branches_get_threads_again_after_the_watchdog_went_idle(monkeypatch):
    monkeypatch.setattr(_drive, "_IDLE_TICKS", 2)
    for round_ in range(2):
        wait_a, _ = _meeting(3, "a")
        flow = Flow(f"idle{round_}").fork()
        for i in range(3):
            flow = flow.branch(wait_a, name=f"b{i}")
        wf = flow.join(lambda d: sum(d.values()), name="join").build()
        out = run_durable_workflow(wf, f"idle-{round_}", 1, backend=InMemoryBackend())
        assert out.status == "completed", out.error
        assert out.output == 6
        deadline = time.monotonic() + WAIT
        while not _drive._watchdog.parked:  # it blocks once no fork ran for a while
            assert time.monotonic() < deadline, "the watchdog never went idle"
            time.sleep(0.01)


def test_a_failing_branch_fails_the_run_while_others_block(path, ledger):
    release = threading.Event()

    def waits(x: int) -> int:
        ledger.add("waits")
        release.wait(WAIT)
        return x

    def fails(x: int) -> int:
        release.set()  # only reached if this branch got a thread while ``waits`` blocks
        raise ValueError("branch broke")

    wf = (
        Flow("fail").fork().branch(waits).branch(fails)
        .join(lambda d: ledger.add("join"), name="join").build()
    )  # fmt: skip
    out = path.run(wf, 0)
    assert not out.ok
    assert "ValueError: branch broke" in out.error
    assert ledger.count("join") == 0
    assert release.is_set()


def test_a_branch_timeout_fails_the_run_while_other_branches_block(path):
    @task(timeout="0.2s")
    def slow(x: int) -> int:
        time.sleep(3)
        return x

    meet, _ = _meeting(2, "meet")
    wf = (
        Flow("timeout").fork().branch(meet, name="meet_a").branch(slow)
        .branch(meet, name="meet_b")
        .join(lambda d: d, name="join").build()
    )  # fmt: skip
    out = path.run(wf, 0)
    assert not out.ok
    assert "slow" in out.error and "timed out" in out.error.lower()


def test_cancel_stops_every_blocked_branch_at_its_next_step(ledger):
    backend = InMemoryBackend()
    started = threading.Barrier(3, timeout=WAIT)  # both branches and the test
    go = threading.Event()

    def first_a(x: int) -> int:
        started.wait()
        go.wait(WAIT)
        return x

    def first_b(x: int) -> int:
        started.wait()
        go.wait(WAIT)
        return x

    def second_a(x: int) -> int:
        ledger.add("second_a")
        return x

    def second_b(x: int) -> int:
        ledger.add("second_b")
        return x

    wf = (
        Flow("cancel").fork()
        .branch(first_a, second_a)
        .branch(first_b, second_b)
        .join(lambda d: ledger.add("join"), name="join").build()
    )  # fmt: skip
    result: list[Any] = []
    runner = threading.Thread(
        target=lambda: result.append(run_durable_workflow(wf, "c-1", 0, backend=backend))
    )
    runner.start()
    started.wait()  # both branches run, side by side
    cancel_workflow("c-1", backend, reason="stop", cancelled_by="test")
    go.set()
    runner.join(WAIT)
    assert result and result[0].status == "cancelled", result
    assert ledger.entries == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_execution_tokens_of_its_own():
    parent = [_runs.new_token() for _ in range(3)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first token, exit without pytest's cleanup
        try:
            os.write(write, _runs.new_token().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(set(parent)) == 3
    assert child[:24] != parent[0][:24]  # its own random prefix, not the parent's counter
    assert child not in parent
