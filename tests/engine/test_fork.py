"""Fork/join (spec §6.6): join input shape and order, concurrency, failures, durable replay."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sayiir import Flow, RetryPolicy, resume_workflow, run_durable_workflow, task


def step_a(x: int) -> int:
    return x + 1


def step_b(x: int) -> int:
    return x * 10


def other(x: int) -> str:
    return f"o{x}"


def test_join_receives_first_task_ids_mapped_to_last_outputs(path):
    seen: list[Any] = []

    def merge(d):
        seen.append(d)
        return d

    wf = Flow("fork").fork().branch(step_a, step_b).branch(other).join(merge).build()
    out = path.run(wf, 5)
    assert out.ok, out.error
    assert seen == [{"step_a": 60, "other": "o5"}]
    assert list(seen[0]) == ["step_a", "other"]
    assert out.value == {"step_a": 60, "other": "o5"}


def test_join_dict_order_follows_declaration_even_when_later_branch_finishes_first(path):
    def slow(x):
        time.sleep(0.1)
        return "slow"

    def fast(x):
        return "fast"

    wf = Flow("order").fork().branch(slow).branch(fast).join(lambda d: list(d)).build()
    out = path.run(wf, 0)
    assert out.ok and out.value == ["slow", "fast"]


def test_every_branch_receives_the_fork_input(path):
    seen: list[Any] = []
    lock = threading.Lock()

    def b1(x):
        with lock:
            seen.append(("b1", x))
        return 1

    def b2(x):
        with lock:
            seen.append(("b2", x))
        return 2

    wf = (
        Flow("input")
        .then(lambda x: {"v": x})
        .fork()
        .branch(b1)
        .branch(b2)
        .join(lambda d: d["b1"] + d["b2"])
        .build()
    )
    out = path.run(wf, 3)
    assert out.ok and out.value == 3
    assert sorted(seen) == [("b1", {"v": 3}), ("b2", {"v": 3})]


def test_branch_name_overrides_first_task_id_only(path):
    wf = (
        Flow("names")
        .fork()
        .branch(step_a, step_b, name="first")
        .branch(other, name="second")
        .join(lambda d: sorted(d.items()))
        .build()
    )
    assert [n.id for n in wf.iter_nodes()] == [
        "first||second",
        "first",
        "step_b",
        "second",
        "lambda_0",
    ]
    out = path.run(wf, 1)
    assert out.ok and out.value == [["first", 20], ["second", "o1"]]


def test_chain_continues_after_join(path):
    wf = (
        Flow("after")
        .fork()
        .branch(step_a)
        .branch(step_b)
        .join(lambda d: d["step_a"] + d["step_b"], name="sum")
        .then(lambda s: s * 2)
        .build()
    )
    out = path.run(wf, 2)
    assert out.ok and out.value == (3 + 20) * 2


def test_branches_run_concurrently(path):
    # Each branch waits at a barrier for the other: run one after the other, the first
    # would break it (after its generous timeout) and the run would fail.
    meet = threading.Barrier(2, timeout=30)

    def sleep_a(x):
        meet.wait()
        return "a"

    def sleep_b(x):
        meet.wait()
        return "b"

    wf = Flow("conc").fork().branch(sleep_a).branch(sleep_b).join(lambda d: d).build()
    out = path.run(wf, 0)
    assert out.ok, f"fork branches ran sequentially: {out.error}"
    assert out.value == {"sleep_a": "a", "sleep_b": "b"}


def test_many_blocking_branches_all_run_side_by_side(path):
    """The calling thread starts alone; once a branch blocks, helpers bring in helpers
    until every blocked branch has a thread: all 20 branches wait at one barrier, which
    opens only when the 20 run at the same time."""
    meet = threading.Barrier(20, timeout=30)

    def nap(x):
        meet.wait()
        return x

    flow = Flow("many").fork()
    for i in range(20):
        flow = flow.branch(nap, name=f"nap{i}")
    wf = flow.join(lambda d: sorted(d), name="join").build()
    out = path.run(wf, 1)
    assert out.ok, f"blocking branches did not run side by side: {out.error}"
    assert len(out.value) == 20


def test_async_branches_run_concurrently(path):
    import asyncio

    meet = threading.Barrier(2, timeout=30)

    async def sleep_a(x):
        await asyncio.to_thread(meet.wait)
        return "a"

    async def sleep_b(x):
        await asyncio.to_thread(meet.wait)
        return "b"

    wf = Flow("aconc").fork().branch(sleep_a).branch(sleep_b).join(lambda d: d).build()
    out = path.run(wf, 0)
    assert out.ok, f"fork branches ran sequentially: {out.error}"
    assert out.value == {"sleep_a": "a", "sleep_b": "b"}


def test_failing_branch_fails_the_run_and_join_never_runs(path, ledger):
    def good(x):
        ledger.add("good")
        return 1

    def bad(x):
        ledger.add("bad")
        raise RuntimeError("branch broke")

    def join(d):
        ledger.add("join")
        return d

    wf = Flow("fail").fork().branch(good).branch(bad).join(join).build()
    out = path.run(wf, 0)
    assert not out.ok
    assert out.error == "RuntimeError: branch broke"
    assert "join" not in ledger.entries
    assert ledger.count("bad") == 1


def test_failing_branch_is_retried_before_failing(path, ledger):
    @task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.01, backoff_multiplier=1.0))
    def flaky(x):
        ledger.add("flaky")
        if ledger.count("flaky") < 3:
            raise ValueError("not yet")
        return "ok"

    wf = Flow("retry").fork().branch(flaky).branch(other).join(lambda d: d).build()
    out = path.run(wf, 1)
    assert out.ok, out.error
    assert out.value == {"flaky": "ok", "other": "o1"}
    assert ledger.count("flaky") == 3


def test_first_failing_branch_error_wins_when_two_fail(path):
    def bad1(x):
        raise ValueError("one")

    def bad2(x):
        time.sleep(0.1)
        raise ValueError("two")

    wf = Flow("two-fail").fork().branch(bad1).branch(bad2).join(lambda d: d).build()
    out = path.run(wf, 0)
    assert not out.ok
    assert out.error == "ValueError: one"


def test_fork_with_one_branch(path):
    wf = Flow("one").fork().branch(step_a).join(lambda d: d).build()
    out = path.run(wf, 1)
    assert out.ok and out.value == {"step_a": 2}


def test_branch_output_round_trips_through_json(path):
    wf = (
        Flow("json")
        .fork()
        .branch(lambda x: (1, 2), name="tup")
        .branch(lambda x: {5: x}, name="keys")
        .join(lambda d: d)
        .build()
    )
    out = path.run(wf, 0)
    assert out.ok
    assert out.value == {"tup": [1, 2], "keys": {"5": 0}}


def test_same_first_task_in_two_branches_is_rejected_at_build():
    with pytest.raises(ValueError, match="Duplicate task id: 'step_a'"):
        Flow("dup").fork().branch(step_a).branch(step_a).join(lambda d: d).build()


# -- durable replay ---------------------------------------------------------------------------


def test_durable_fork_checkpoints_every_branch_task(backend, iid):
    from sayiir import WorkflowClient

    wf = (
        Flow("fork").fork().branch(step_a, step_b).branch(other).join(lambda d: d, name="j").build()
    )
    status = run_durable_workflow(wf, iid, 5, backend=backend)
    assert status.status == "completed"
    client = WorkflowClient(backend)
    assert client.get_task_result(iid, "step_a") == 6
    assert client.get_task_result(iid, "step_b") == 60
    assert client.get_task_result(iid, "other") == "o5"
    assert client.get_task_result(iid, "j") == {"step_a": 60, "other": "o5"}


def test_crashed_branch_resumes_without_rerunning_the_finished_branch(
    backend, iid, ledger, crash_cls
):
    def before(x):
        ledger.add("before")
        return x

    def good(x):
        ledger.add("good")
        return "g"

    def good2(x):
        ledger.add("good2")
        return x + "2"

    crashes = [crash_cls()]

    def crashy(x):
        ledger.add("crashy")
        time.sleep(0.05)
        if crashes:
            raise crashes.pop()
        return "c"

    def join(d):
        ledger.add("join")
        return d

    wf = (
        Flow("fork-crash").then(before).fork().branch(good, good2).branch(crashy).join(join).build()
    )
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    assert sorted(ledger.entries) == ["before", "crashy", "good", "good2"]
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed", status
    assert status.output == {"good": "g2", "crashy": "c"}
    assert ledger.entries == ["crashy", "join"]


def test_failed_branch_stays_failed_on_resume_and_runs_nothing(backend, iid, ledger):
    def good(x):
        ledger.add("good")
        return 1

    def bad(x):
        ledger.add("bad")
        raise ValueError("nope")

    wf = Flow("fork-fail").fork().branch(good).branch(bad).join(lambda d: d).build()
    status = run_durable_workflow(wf, iid, 0, backend=backend)
    assert status.status == "failed" and status.error == "ValueError: nope"
    ledger.clear()
    again = resume_workflow(wf, iid, backend)
    assert again.status == "failed" and again.error == "ValueError: nope"
    assert ledger.entries == []


def test_crash_in_join_reruns_only_the_join(backend, iid, ledger, crash_cls):
    def b1(x):
        ledger.add("b1")
        return 1

    def b2(x):
        ledger.add("b2")
        return 2

    crashes = [crash_cls()]

    def join(d):
        ledger.add("join")
        if crashes:
            raise crashes.pop()
        return d["b1"] + d["b2"]

    wf = Flow("join-crash").fork().branch(b1).branch(b2).join(join).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 0, backend=backend)
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 3
    assert ledger.entries == ["join"]
