"""``sayiir.core.graph.definition_json``: every node kind, with the keys the console colours
nodes by, and JSON that round-trips."""

from __future__ import annotations

import json

import pytest

from sayiir import Flow, LoopResult, RetryPolicy, run_durable_workflow, task
from sayiir.backends.memory import InMemoryBackend
from sayiir.core.graph import definition_json, definition_text


@task(timeout="5s", retries=RetryPolicy(max_retries=3))
def charge(x: int) -> int:
    return x


def body(x: int) -> LoopResult[int]:
    return LoopResult.done(x)


def test_every_node_kind_is_described() -> None:
    child = Flow("child").then(lambda x: x, name="inner").build()
    wf = (
        Flow("all")
        .then(charge)
        .delay("cool", "1m")
        .wait_for_signal("approve", name="approval", timeout="1h")
        .fork()
        .branch(lambda x: x, name="left")
        .branch(lambda x: x, name="right")
        .join(lambda parts: 1, name="merge")
        .route(lambda x: "a", keys=["a", "b"])
        .branch("a", lambda x: x, name="on_a")
        .branch("b", lambda x: x, name="on_b")
        .done()
        .loop(body)
        .then_flow(child)
        .build()
    )
    doc = definition_json(wf)
    assert doc["workflow_id"] == "all" and doc["definition_hash"] == wf.definition_hash
    steps = doc["root"]["steps"]
    assert [s["kind"] for s in steps] == [
        "task", "delay", "signal", "fork", "route", "loop", "child",
    ]  # fmt: skip
    task_, delay, signal, fork, route, loop, sub = steps
    assert task_ == {"kind": "task", "id": "charge", "key": "charge", "timeout": 5.0,
                     "retries": 3}  # fmt: skip
    assert (delay["key"], delay["seconds"]) == ("cool", 60.0)
    assert (signal["key"], signal["signal"], signal["timeout"]) == ("approval", "approve", 3600.0)
    assert [b["steps"][0]["key"] for b in fork["branches"]] == ["left", "right"]
    assert fork["join"]["key"] == "merge"
    assert route["key"].endswith("::key_fn") and set(route["branches"]) == {"a", "b"}
    assert route["branches"]["a"]["steps"][0]["key"] == "on_a" and route["default"] is None
    assert loop["body"]["steps"][0]["kind"] == "task" and loop["max_iterations"] == 10
    assert sub["workflow_id"] == "child" and sub["root"]["steps"][0]["key"] == "inner"
    assert json.loads(definition_text(wf)) == doc


def test_the_keys_are_the_checkpoint_keys_of_a_run() -> None:
    def inc(x: int) -> int:
        return x + 1

    wf = Flow("twice").then(inc).then(inc).build()  # one function used twice: two keys
    backend = InMemoryBackend()
    run_durable_workflow(wf, "r", 0, backend=backend)
    keys = [s["key"] for s in definition_json(wf)["root"]["steps"]]
    assert keys == ["inc", "inc#2"]
    assert all(backend.get_checkpoint("r", k) is not None for k in keys)


def test_a_non_workflow_is_refused() -> None:
    with pytest.raises(TypeError, match="expected a Workflow"):
        definition_json(object())
