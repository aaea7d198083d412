"""Loops (spec §6.7): again/done, wire dicts, max_iterations, durable iteration replay."""

from __future__ import annotations

import asyncio

import pytest

from sayiir import (
    Flow,
    LoopResult,
    OnMax,
    RetryPolicy,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    task,
    unpause_workflow,
)
from sayiir.errors import DeserializationError


def count_to_5(x: int) -> LoopResult[int]:
    return LoopResult.done(x) if x >= 5 else LoopResult.again(x + 1)


def test_again_then_done(path):
    out = path.run(Flow("loop").loop(count_to_5).build(), 0)
    assert out.ok, out.error
    assert out.value == 5


def test_body_runs_once_per_iteration(path, ledger):
    def body(x):
        ledger.add(f"body{x}")
        return LoopResult.done(x) if x >= 3 else LoopResult.again(x + 1)

    out = path.run(Flow("loop").loop(body).build(), 1)
    assert out.ok and out.value == 3
    assert ledger.entries == ["body1", "body2", "body3"]


def test_done_on_first_iteration(path):
    out = path.run(Flow("loop").loop(lambda x: LoopResult.done(x * 7)).build(), 6)
    assert out.ok and out.value == 42


def test_wire_dict_is_accepted(path):
    def body(x):
        if x >= 2:
            return LoopResult.done(x).to_dict()
        return {"_loop": "again", "value": x + 1}

    out = path.run(Flow("wire").loop(body).build(), 0)
    assert out.ok, out.error
    assert out.value == 2


def test_loop_value_round_trips_through_json(path):
    seen: list[object] = []

    def body(x):
        seen.append(x)
        if isinstance(x, list):
            return LoopResult.done({1: x})
        return LoopResult.again((x, x))

    out = path.run(Flow("json").loop(body).build(), 1)
    assert out.ok
    assert seen == [1, [1, 1]]
    assert out.value == {"1": [1, 1]}


def test_max_iterations_fail_message(path, ledger):
    def forever(x):
        ledger.add("it")
        return LoopResult.again(x + 1)

    out = path.run(Flow("max").loop(forever, max_iterations=3).build(), 0)
    assert not out.ok
    assert out.error == "Loop 'loop_0' exceeded max iterations (3)"
    assert ledger.count("it") == 3


def test_max_iterations_plain_raises_task_error():
    from sayiir import TaskError

    wf = Flow("max").loop(lambda x: LoopResult.again(x), max_iterations=2).build()
    with pytest.raises(TaskError, match=r"Loop 'loop_0' exceeded max iterations \(2\)"):
        run_workflow(wf, 0)


def test_exit_with_last_gives_three(path):
    wf = (
        Flow("exit")
        .loop(lambda x: LoopResult.again(x + 1), max_iterations=3, on_max="exit_with_last")
        .build()
    )
    out = path.run(wf, 0)
    assert out.ok, out.error
    assert out.value == 3


def test_exit_with_last_enum(path):
    wf = (
        Flow("exit")
        .loop(lambda x: LoopResult.again(x * 2), max_iterations=4, on_max=OnMax.EXIT_WITH_LAST)
        .build()
    )
    out = path.run(wf, 1)
    assert out.ok and out.value == 16


def test_done_on_last_allowed_iteration_is_not_a_failure(path):
    wf = Flow("edge").loop(count_to_5, max_iterations=6).build()
    out = path.run(wf, 0)
    assert out.ok and out.value == 5


def test_non_envelope_result_fails(path, ledger):
    def after(x):
        ledger.add("after")
        return x

    wf = Flow("bad").loop(lambda x: x + 1).then(after).build()
    out = path.run(wf, 0)
    assert not out.ok
    assert out.error is not None
    assert "missing or invalid '_loop' tag in LoopResult JSON" in out.error
    assert ledger.entries == []


def test_non_envelope_result_plain_raises_deserialization_error():
    wf = Flow("bad").loop(lambda x: {"value": x}).build()
    with pytest.raises(DeserializationError, match="expected LoopEnvelope"):
        run_workflow(wf, 0)


def test_async_loop_body(path):
    async def body(x):
        await asyncio.sleep(0)
        return LoopResult.done(x) if x >= 3 else LoopResult.again(x + 1)

    out = path.run(Flow("async").loop(body).build(), 0)
    assert out.ok, out.error
    assert out.value == 3


def test_loop_body_is_retried_per_iteration(path, ledger):
    @task(retries=RetryPolicy(max_retries=1, initial_delay_secs=0.01, backoff_multiplier=1.0))
    def body(x):
        ledger.add(f"try{x}")
        if ledger.count(f"try{x}") == 1:
            raise ValueError(f"first try of {x}")
        return LoopResult.done(x) if x >= 2 else LoopResult.again(x + 1)

    out = path.run(Flow("retry").loop(body).build(), 0)
    assert out.ok, out.error
    assert out.value == 2
    assert ledger.entries == ["try0", "try0", "try1", "try1", "try2", "try2"]


def test_loop_between_tasks(path):
    wf = (
        Flow("mid")
        .then(lambda x: x * 2, name="pre")
        .loop(count_to_5)
        .then(lambda x: x + 100, name="post")
        .build()
    )
    out = path.run(wf, 1)
    assert out.ok and out.value == 105


def test_two_loops(path):
    wf = (
        Flow("two")
        .loop(count_to_5)
        .loop(lambda x: LoopResult.done(x * 2) if x > 20 else LoopResult.again(x + 10), name="b")
        .build()
    )
    assert [n.id for n in wf.iter_nodes() if n.kind == "loop"] == ["loop_0", "loop_1"]
    out = path.run(wf, 0)
    assert out.ok and out.value == 50


# -- durable ----------------------------------------------------------------------------------


def test_durable_resume_continues_from_persisted_iteration(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def body(x):
        ledger.add(f"body{x}")
        if x == 3 and crashes:
            raise crashes.pop()
        return LoopResult.done(x) if x >= 4 else LoopResult.again(x + 1)

    def after(x):
        ledger.add("after")
        return x * 10

    wf = Flow("dloop").loop(body).then(after).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    assert ledger.entries == ["body1", "body2", "body3"]
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed", status
    assert status.output == 40
    assert ledger.entries == ["body3", "body4", "after"]


def test_durable_pause_inside_loop_then_resume_next_iteration(backend, iid, ledger):
    def body(x):
        ledger.add(f"body{x}")
        if x == 2:
            pause_workflow(iid, backend, reason="mid-loop")
        return LoopResult.done(x) if x >= 4 else LoopResult.again(x + 1)

    wf = Flow("ploop").loop(body).build()
    status = run_durable_workflow(wf, iid, 0, backend=backend)
    assert status.status == "paused", status
    assert status.reason == "mid-loop"
    assert ledger.entries == ["body0", "body1", "body2"]
    ledger.clear()
    unpause_workflow(iid, backend)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 4
    assert ledger.entries == ["body3", "body4"]


def test_durable_loop_max_iterations_fails_and_stays_failed(backend, iid, ledger):
    def forever(x):
        ledger.add("it")
        return LoopResult.again(x + 1)

    wf = Flow("max").loop(forever, max_iterations=2).build()
    status = run_durable_workflow(wf, iid, 0, backend=backend)
    assert status.status == "failed"
    assert status.error == "Loop 'loop_0' exceeded max iterations (2)"
    ledger.clear()
    assert resume_workflow(wf, iid, backend).error == status.error
    assert ledger.entries == []
