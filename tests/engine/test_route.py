"""Conditional branching with ``route`` (spec §6.5)."""

from __future__ import annotations

from typing import Any

import pytest

from sayiir import Flow, RetryPolicy, resume_workflow, run_durable_workflow, run_workflow, task
from sayiir.errors import DeserializationError


def kind(order: dict[str, Any]) -> str:
    return str(order["kind"])


def handle_a(order: dict[str, Any]) -> str:
    return f"A:{order['n']}"


def handle_b(order: dict[str, Any]) -> str:
    return f"B:{order['n']}"


def shout(s: str) -> str:
    return s.upper() + "!"


def fallback(order: dict[str, Any]) -> str:
    return f"default:{order['kind']}"


def routed(default: bool = False) -> Flow:
    builder = Flow("route").route(kind, keys=["a", "b"]).branch("a", handle_a, shout)
    builder = builder.branch("b", handle_b)
    if default:
        builder = builder.default_branch(fallback)
    return builder.done()


def test_output_is_branch_and_result(path):
    out = path.run(routed().build(), {"kind": "a", "n": 1})
    assert out.ok, out.error
    assert out.value == {"branch": "a", "result": "A:1!"}


def test_other_key_runs_other_branch(path):
    out = path.run(routed().build(), {"kind": "b", "n": 2})
    assert out.ok and out.value == {"branch": "b", "result": "B:2"}


def test_chain_receives_the_route_input_not_the_key(path):
    seen: list[Any] = []

    def record(x):
        seen.append(x)
        return x

    wf = Flow("input").route(lambda x: "k", keys=["k"]).branch("k", record).done().build()
    out = path.run(wf, {"v": 1})
    assert out.ok
    assert seen == [{"v": 1}]


def test_default_branch_reports_the_returned_key(path):
    wf = routed(default=True).build()
    out = path.run(wf, {"kind": "q", "n": 3})
    assert out.ok, out.error
    assert out.value == {"branch": "q", "result": "default:q"}


def test_default_branch_with_missing_declared_key(path):
    wf = (
        Flow("partial")
        .route(kind, keys=["a", "b"])
        .branch("a", handle_a)
        .default_branch(fallback)
        .done()
        .build()
    )
    out = path.run(wf, {"kind": "b", "n": 0})
    assert out.ok and out.value == {"branch": "b", "result": "default:b"}


def test_second_default_branch_replaces_the_first(path):
    wf = (
        Flow("two-defaults")
        .route(kind, keys=["a"])
        .branch("a", handle_a)
        .default_branch(handle_b)
        .default_branch(fallback)
        .done()
        .build()
    )
    out = path.run(wf, {"kind": "z", "n": 0})
    assert out.ok and out.value == {"branch": "z", "result": "default:z"}


def test_unmatched_key_without_default_fails(path, ledger):
    def after(x):
        ledger.add("after")
        return x

    wf = routed().then(after).build()
    out = path.run(wf, {"kind": "zz", "n": 0})
    assert not out.ok
    assert out.error == "Branch node 'branch_0': no branch matches key 'zz'"
    assert ledger.entries == []


def test_unmatched_key_plain_raises_task_error():
    from sayiir import TaskError

    with pytest.raises(TaskError, match="Branch node 'branch_0': no branch matches key 'zz'"):
        run_workflow(routed().build(), {"kind": "zz", "n": 0})


def test_non_string_key_fails(path):
    wf = Flow("nonstr").route(lambda x: 1, keys=["1"]).branch("1", handle_a).done().build()
    out = path.run(wf, {"n": 0})
    assert not out.ok
    assert out.error is not None and "expected String (branch key)" in out.error


def test_non_string_key_plain_raises_deserialization_error():
    wf = Flow("nonstr").route(lambda x: None, keys=["a"]).branch("a", handle_a).done().build()
    with pytest.raises(DeserializationError, match="Failed to decode input for task 'branch_0"):
        run_workflow(wf, {"n": 0})


def test_route_then_continues_with_branch_dict(path):
    wf = routed().then(lambda r: f"{r['branch']}={r['result']}").build()
    out = path.run(wf, {"kind": "b", "n": 9})
    assert out.ok and out.value == "b=B:9"


def test_two_routes_get_sequential_ids(path):
    wf = (
        Flow("two")
        .route(lambda x: "x", keys=["x"])
        .branch("x", lambda v: v + 1)
        .done()
        .then(lambda r: r["result"])
        .route(lambda x: "y", keys=["y"])
        .branch("y", lambda v: v * 2)
        .done()
        .build()
    )
    ids = [n.id for n in wf.iter_nodes() if n.kind == "branch"]
    assert ids == ["branch_0", "branch_1"]
    out = path.run(wf, 1)
    assert out.ok and out.value == {"branch": "y", "result": 4}


def test_route_chain_tasks_are_retried(path, ledger):
    @task(retries=RetryPolicy(max_retries=1, initial_delay_secs=0.01, backoff_multiplier=1.0))
    def flaky(x):
        ledger.add("flaky")
        if ledger.count("flaky") == 1:
            raise ValueError("once")
        return "ok"

    wf = Flow("retry").route(lambda x: "a", keys=["a"]).branch("a", flaky).done().build()
    out = path.run(wf, 0)
    assert out.ok and out.value == {"branch": "a", "result": "ok"}
    assert ledger.count("flaky") == 2


def test_route_key_function_is_not_retried(path, ledger):
    @task(retries=RetryPolicy(max_retries=3, initial_delay_secs=0.01, backoff_multiplier=1.0))
    def key(x):
        ledger.add("key")
        raise ValueError("key broke")

    wf = Flow("key-fail").route(key, keys=["a"]).branch("a", handle_a).done().build()
    out = path.run(wf, {"n": 1})
    assert not out.ok
    assert out.error == "ValueError: key broke"
    assert ledger.count("key") == 1


def test_keys_none_accepts_any_key(path):
    wf = Flow("open").route(lambda x: x["k"]).branch("p", lambda x: "P").done().build()
    out = path.run(wf, {"k": "p"})
    assert out.ok and out.value == {"branch": "p", "result": "P"}


# -- durable ----------------------------------------------------------------------------------


def test_durable_route_key_not_recomputed_on_resume(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def key(x):
        ledger.add("key")
        return "a"

    def first(x):
        ledger.add("first")
        return x + 1

    def second(x):
        ledger.add("second")
        if crashes:
            raise crashes.pop()
        return x * 100

    wf = Flow("route-crash").route(key, keys=["a"]).branch("a", first, second).done().build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    assert ledger.entries == ["key", "first", "second"]
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed"
    assert status.output == {"branch": "a", "result": 200}
    assert ledger.entries == ["second"]
