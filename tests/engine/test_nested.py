"""Nested constructs (a built Workflow used as a step, spec extension in flow.py): fork inside
loop, route inside fork, loop inside a fork branch, signals and delays inside children and
branches, fork inside a child; durable replay of each with a side-effect ledger."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sayiir import (
    Flow,
    LoopResult,
    WorkflowClient,
    resume_workflow,
    run_durable_workflow,
    send_signal,
)
from sayiir.testing import virtual_time


def fork_in_loop(ledger: Any) -> Any:
    """Each iteration forks (+1 / *2), the join decides whether to loop again."""

    def plus(x):
        ledger.add(f"plus{x}")
        return x + 1

    def times(x):
        ledger.add(f"times{x}")
        return x * 2

    def decide(d):
        total = d["plus"] + d["times"]
        ledger.add(f"decide{total}")
        return LoopResult.done(total) if total > 20 else LoopResult.again(total)

    body = Flow("body").fork().branch(plus).branch(times).join(decide).build()
    return Flow("fork-in-loop").loop(body, max_iterations=5).build()


def test_fork_inside_loop(path, ledger):
    out = path.run(fork_in_loop(ledger), 1)
    # 1 -> 2+2=4 -> 5+8=13 -> 14+26=40
    assert out.ok, out.error
    assert out.value == 40
    assert sorted(e for e in ledger.entries if e.startswith("decide")) == [
        "decide13",
        "decide4",
        "decide40",
    ]


def test_fork_inside_loop_durable_resume(backend, iid, ledger, crash_cls):
    crash = [crash_cls()]

    def plus(x):
        ledger.add(f"plus{x}")
        return x + 1

    def times(x):
        ledger.add(f"times{x}")
        if x == 4 and crash:
            raise crash.pop()
        return x * 2

    def decide(d):
        total = d["plus"] + d["times"]
        ledger.add(f"decide{total}")
        return LoopResult.done(total) if total > 20 else LoopResult.again(total)

    body = Flow("body").fork().branch(plus).branch(times).join(decide).build()
    wf = Flow("fork-in-loop").loop(body, max_iterations=5).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    # Iteration 0 finished (decide4); iteration 1: plus4 done, times4 crashed.
    assert sorted(ledger.entries) == ["decide4", "plus1", "plus4", "times1", "times4"]
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed", status
    assert status.output == 40
    assert sorted(ledger.entries) == ["decide13", "decide40", "plus13", "times13", "times4"]


def test_route_inside_fork(path, ledger):
    router = (
        Flow("router")
        .route(lambda x: "neg" if x < 0 else "pos", keys=["neg", "pos"])
        .branch("neg", lambda x: -x, name="negate")
        .branch("pos", lambda x: x, name="keep")
        .done()
        .build()
    )
    wf = (
        Flow("route-in-fork")
        .fork()
        .branch(router, name="routed")
        .branch(lambda x: x * 100, name="scaled")
        .join(lambda d: d)
        .build()
    )
    out = path.run(wf, -3)
    assert out.ok, out.error
    assert out.value == {"routed": {"branch": "neg", "result": 3}, "scaled": -300}


def test_loop_inside_fork_branch(path):
    def count(x):
        return LoopResult.done(x) if x >= 5 else LoopResult.again(x + 1)

    looper = Flow("looper").loop(count).then(lambda x: x * 10, name="ten").build()
    wf = (
        Flow("loop-in-fork")
        .fork()
        .branch(looper, name="looped")
        .branch(lambda x: "other", name="plain")
        .join(lambda d: [d["looped"], d["plain"]])
        .build()
    )
    out = path.run(wf, 0)
    assert out.ok, out.error
    assert out.value == [50, "other"]


def test_fork_inside_child(path):
    child = (
        Flow("child")
        .fork()
        .branch(lambda x: x + 1, name="inc")
        .branch(lambda x: x - 1, name="dec")
        .join(lambda d: d["inc"] * d["dec"], name="mul")
        .build()
    )
    wf = Flow("parent").then(lambda x: x * 2, name="dbl").then_flow(child).build()
    out = path.run(wf, 3)
    assert out.ok, out.error
    assert out.value == 7 * 5


def test_child_inside_child_inside_fork(path):
    gc = Flow("gc").then(lambda x: x + 1000, name="gc_task").build()
    c = Flow("c").then(lambda x: x * 3, name="c_task").then_flow(gc).build()
    wf = (
        Flow("p")
        .fork()
        .branch(c, name="deep")
        .branch(lambda x: x, name="flat")
        .join(lambda d: d["deep"] - d["flat"], name="diff")
        .build()
    )
    out = path.run(wf, 2)
    assert out.ok, out.error
    assert out.value == 1004


def test_child_with_signal(backend, iid, ledger):
    def before(x):
        ledger.add("before")
        return x

    def use(payload):
        ledger.add("use")
        return {"approved_by": payload}

    child = Flow("approval").wait_for_signal("approve").then(use).build()
    wf = Flow("parent").then(before).then_flow(child).then(lambda r: r, name="end").build()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    assert status.status == "awaiting_signal"
    assert status.signal_name == "approve"
    send_signal(iid, "approve", "boss", backend)
    done = resume_workflow(wf, iid, backend)
    assert done.status == "completed", done
    assert done.output == {"approved_by": "boss"}
    assert ledger.entries == ["before", "use"]


def test_delay_inside_fork_branch(backend, iid, ledger):
    def slow_side(x):
        ledger.add("slow_side")
        return "after-delay"

    def fast_side(x):
        ledger.add("fast_side")
        return "fast"

    def join(d):
        ledger.add("join")
        return d

    delayed = Flow("delayed").delay("branch_nap", 0.15).then(slow_side).build()
    wf = (
        Flow("delay-in-fork")
        .fork()
        .branch(delayed, name="delayed")
        .branch(fast_side)
        .join(join)
        .build()
    )
    # The virtual clock in manual mode: "too early" is decided by the clock, not by how
    # fast a loaded machine gets from the first call to the second (a wall-clock 150 ms
    # could pass in between, and the early resume would then rightly complete).
    with virtual_time(auto_skip=False) as clock:
        status = run_durable_workflow(wf, iid, 0, backend=backend)
        assert status.status == "waiting", status
        assert status.delay_id == "branch_nap"
        assert ledger.entries == ["fast_side"]
        assert resume_workflow(wf, iid, backend).status == "waiting"
        ledger.clear()
        clock.advance(0.2)  # the deadline passes; advance itself resumes the parked run
    assert ledger.entries == ["slow_side", "join"]
    done = resume_workflow(wf, iid, backend)
    assert done.status == "completed", done
    assert done.output == {"delayed": "after-delay", "fast_side": "fast"}
    assert ledger.entries == ["slow_side", "join"]


def test_signal_inside_fork_branch(backend, iid, ledger):
    def other(x):
        ledger.add("other")
        return x

    waiter = Flow("waiter").wait_for_signal("go").then(lambda p: p, name="got").build()
    wf = Flow("sig-fork").fork().branch(waiter, name="w").branch(other).join(dict).build()
    status = run_durable_workflow(wf, iid, 5, backend=backend)
    assert status.status == "awaiting_signal" and status.signal_name == "go"
    send_signal(iid, "go", "hello", backend)
    done = resume_workflow(wf, iid, backend)
    assert done.status == "completed", done
    assert done.output == {"w": "hello", "other": 5}
    assert ledger.entries == ["other"]


def test_durable_child_inside_child_crash(backend, iid, ledger, crash_cls):
    crash = [crash_cls()]

    def g1(x):
        ledger.add("g1")
        return x + 1

    def g2(x):
        ledger.add("g2")
        if crash:
            raise crash.pop()
        return x * 2

    def c1(x):
        ledger.add("c1")
        return x

    gc = Flow("gc").then(g1).then(g2).build()
    child = Flow("c").then(c1).then_flow(gc).build()
    wf = Flow("p").then_flow(child).then(lambda x: x + 100, name="tail").build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 104
    assert ledger.entries == ["g2"]
    assert WorkflowClient(backend).get_task_result(iid, "g1") == 2


def test_route_inside_loop_body(path):
    def step(x):
        return LoopResult.done(x) if x > 10 else LoopResult.again(x)

    body = (
        Flow("rb")
        .route(lambda x: "even" if x % 2 == 0 else "odd", keys=["even", "odd"])
        .branch("even", lambda x: x + 3, name="add3")
        .branch("odd", lambda x: x * 2, name="dbl")
        .done()
        .then(lambda r: r["result"], name="unwrap")
        .then(step)
        .build()
    )
    wf = Flow("route-in-loop").loop(body, max_iterations=10).build()
    out = path.run(wf, 1)  # 1 -> 2 -> 5 -> 10 -> 13
    assert out.ok, out.error
    assert out.value == 13


def test_delay_inside_loop_body(backend, iid, ledger):
    def tick(x):
        ledger.add(f"tick{x}")
        return LoopResult.done(x) if x >= 2 else LoopResult.again(x + 1)

    body = Flow("b").delay("pause", 0.05).then(tick).build()
    wf = Flow("delay-loop").loop(body).build()
    status = run_durable_workflow(wf, iid, 0, backend=backend)
    rounds = 0
    while status.status == "waiting" and rounds < 20:
        assert status.delay_id == "pause"
        time.sleep(0.06)
        status = resume_workflow(wf, iid, backend)
        rounds += 1
    assert status.status == "completed", status
    assert status.output == 2
    assert ledger.entries == ["tick0", "tick1", "tick2"]
    assert rounds == 3, "each iteration parks on its own delay"
