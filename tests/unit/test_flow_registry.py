"""The task registry (spec §8.2, §15.3) and workflows used as steps (our extension).

Registry entries are called directly here; running whole workflows is the engine's tests' job.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pydantic  # the dev extra has it: a missing pydantic is an error, not a skip
import pytest

from sayiir.core.nodes import ChildNode, ForkNode, LoopNode, RouteNode, TaskNode, walk_nodes
from sayiir.decorators import task
from sayiir.flow import Flow, Workflow
from sayiir.loop_result import LoopResult


class Order(pydantic.BaseModel):
    id: int
    total: float = 0.0


def a(x: Any) -> Any:
    return x


def b(x: Any) -> Any:
    return x


def j(x: Any) -> Any:
    return x


def ids(wf: Workflow) -> list[str]:
    return [i.id for i in wf.iter_nodes()]


def registry(flow: Flow) -> dict[str, Any]:
    return flow.build()._task_registry


# -- plain entries ------------------------------------------------------------------------------


def test_plain_callables_are_registered_unwrapped() -> None:
    @task("t")
    def decorated(x: int) -> int:
        return x

    upper = str.upper
    reg = registry(Flow().then(a).then(upper).then(decorated))
    assert reg == {"a": a, "upper": upper, "t": decorated}


def test_non_model_annotations_are_not_wrapped() -> None:
    def typed(x: dict[str, int]) -> list[Order]:
        return []

    assert registry(Flow().then(typed))["typed"] is typed


# -- loop wrapper -------------------------------------------------------------------------------


@task("body", retries=2)
def sync_body(x: int) -> LoopResult[int]:
    return LoopResult.done(x) if x >= 3 else LoopResult.again(x + 1)


@task("abody")
async def async_body(x: int) -> LoopResult[int]:
    return LoopResult.again(x + 1)


def test_sync_loop_body_returns_the_wire_dict() -> None:
    fn = registry(Flow().loop(sync_body))["body"]
    assert not inspect.iscoroutinefunction(fn)
    assert fn(1) == {"_loop": "again", "value": 2}
    assert fn(3) == {"_loop": "done", "value": 3}


def test_loop_body_returning_the_wire_dict_passes_through() -> None:
    wire = {"_loop": "done", "value": 1}
    fn = registry(Flow().loop(lambda x: wire))["lambda_0"]
    assert fn(0) is wire


def test_async_loop_body_returns_the_wire_dict() -> None:
    fn = registry(Flow().loop(async_body))["abody"]
    assert inspect.iscoroutinefunction(fn)
    assert asyncio.run(fn(1)) == {"_loop": "again", "value": 2}


def test_loop_wrapper_keeps_task_attributes() -> None:
    fn = registry(Flow().loop(sync_body))["body"]
    assert fn._task_id == "body"
    assert fn._metadata is sync_body._metadata  # type: ignore[attr-defined]
    assert fn._input_type is int
    assert fn._output_type == LoopResult[int]
    assert fn.__wrapped__ is sync_body


def test_sync_callable_returning_an_awaitable_is_converted_when_awaited() -> None:
    class AsyncBody:
        async def __call__(self, x: int) -> LoopResult[int]:
            return LoopResult.done(x)

    fn = registry(Flow().loop(AsyncBody(), name="obj"))["obj"]
    result = fn(4)
    assert inspect.isawaitable(result)
    assert asyncio.run(result) == {"_loop": "done", "value": 4}  # type: ignore[arg-type]


# -- pydantic wrapper ---------------------------------------------------------------------------


@task("price")
def price(order: Order) -> Order:
    assert isinstance(order, Order)
    return Order(id=order.id, total=order.total + 1)


@task("aprice")
async def aprice(order: Order) -> Order:
    assert isinstance(order, Order)
    return Order(id=order.id, total=2.5)


def test_sync_pydantic_task_validates_and_dumps() -> None:
    fn = registry(Flow().then(price))["price"]
    assert fn is not price
    assert not inspect.iscoroutinefunction(fn)
    assert fn({"id": 1, "total": 1.0}) == {"id": 1, "total": 2.0}
    assert (fn._task_id, fn._metadata, fn._input_type) == ("price", price._metadata, Order)  # type: ignore[attr-defined]


def test_async_pydantic_task_validates_and_dumps() -> None:
    fn = registry(Flow().then(aprice))["aprice"]
    assert inspect.iscoroutinefunction(fn)
    assert asyncio.run(fn({"id": 7})) == {"id": 7, "total": 2.5}


def test_validation_failure_raises_from_the_call() -> None:
    fn = registry(Flow().then(price))["price"]
    with pytest.raises(pydantic.ValidationError):
        fn({"id": "not a number"})
    afn = registry(Flow().then(aprice))["aprice"]
    with pytest.raises(pydantic.ValidationError):
        asyncio.run(afn({}))


def test_undecorated_functions_are_wrapped_too() -> None:
    def load(order: Order) -> dict[str, Any]:
        return {"seen": type(order).__name__}

    def make(x: int) -> Order:
        return Order(id=x)

    reg = registry(Flow().then(load).then(make))
    assert reg["load"]({"id": 1}) == {"seen": "Order"}
    assert reg["make"](3) == {"id": 3, "total": 0.0}


def test_only_model_outputs_are_dumped() -> None:
    def maybe(x: int) -> Order:
        return {"raw": x}  # type: ignore[return-value]

    assert registry(Flow().then(maybe))["maybe"](1) == {"raw": 1}


def test_route_key_function_gets_the_pydantic_wrapper() -> None:
    def key(order: Order) -> str:
        return "big" if order.total > 10 else "small"

    reg = registry(
        Flow().route(key, keys=["big", "small"]).branch("big", a).branch("small", b).done()
    )
    assert reg["branch_0::key_fn"]({"id": 1, "total": 50}) == "big"


def test_pydantic_loop_body_gets_both_wrappers() -> None:
    @task("grow")
    async def grow(order: Order) -> LoopResult[dict[str, Any]]:
        return LoopResult.done(order.model_dump())

    fn = registry(Flow().loop(grow))["grow"]
    assert inspect.iscoroutinefunction(fn)
    assert asyncio.run(fn({"id": 2})) == {"_loop": "done", "value": {"id": 2, "total": 0.0}}


# -- workflows as steps (extension) -------------------------------------------------------------


def test_workflow_as_fork_branch_keys_the_join_by_child_id() -> None:
    sub = Flow("sub").then(a).then(b).build()
    wf = Flow().fork().branch(sub).branch(j, name="other").join(lambda d: d, name="merge").build()
    fork = wf._inner.nodes[0]
    assert isinstance(fork, ForkNode)
    assert fork.branch_keys == ("child_0", "other")
    assert ids(wf) == ["child_0||other", "child_0", "a", "b", "other", "merge"]
    assert {"a", "b", "other", "merge"} <= wf._task_registry.keys()


def test_name_sets_the_child_id_of_a_workflow_branch() -> None:
    sub = Flow("sub").then(a).build()
    wf = Flow().fork().branch(sub, name="payments").branch(b).join(j).build()
    assert wf._inner.nodes[0].id == "payments||b"


def test_route_inside_a_fork() -> None:
    routed = Flow("routed").route(lambda x: "k", keys=["k"]).branch("k", a).done().build()
    wf = Flow().fork().branch(routed).branch(b).join(j).build()
    assert ids(wf) == ["child_0||b", "child_0", "branch_0", "a", "b", "j"]
    assert "branch_0::key_fn" in wf._task_registry


def test_workflow_in_route_branches() -> None:
    left = Flow("left").then(a).build()
    right = Flow("right").then(b).build()
    wf = Flow().route(lambda x: "l", keys=["l", "r"]).branch("l", left).branch("r", right, j).done()
    route = wf.build()._inner.nodes[0]
    assert isinstance(route, RouteNode)
    assert [[n.id for n in chain] for _, chain in route.branches] == [["child_0"], ["child_1", "j"]]


def test_workflow_as_default_branch() -> None:
    sub = Flow("sub").then(b).build()
    wf = Flow().route(lambda x: "k").branch("k", a).default_branch(sub).done().build()
    assert ids(wf) == ["branch_0", "a", "child_0", "b"]


def test_fork_inside_a_loop_wraps_the_join() -> None:
    def finish(d: dict[str, int]) -> LoopResult[int]:
        return LoopResult.done(d["a"] + d["b"])

    body = Flow("body").fork().branch(a).branch(b).join(finish).build()
    wf = Flow().loop(body, max_iterations=5).build()
    loop = wf._inner.nodes[0]
    assert isinstance(loop, LoopNode)
    assert isinstance(loop.body[0], ChildNode)
    assert ids(wf) == ["loop_0", "child_0", "a||b", "a", "b", "finish"]
    assert wf._task_registry["finish"]({"a": 1, "b": 2}) == {"_loop": "done", "value": 3}
    # The body workflow itself is untouched: it can still run on its own.
    assert body._task_registry["finish"] is finish


def test_loop_body_workflow_ending_with_a_delay_wraps_the_task_before_it() -> None:
    body = Flow("body").then(lambda x: LoopResult.again(x), name="step").delay("d", 0).build()
    wf = Flow().loop(body).build()
    assert wf._task_registry["step"](1) == {"_loop": "again", "value": 1}


def test_async_last_task_of_a_loop_body_workflow() -> None:
    body = Flow("body").then(a).then(async_body).build()
    fn = Flow().loop(body, name="inner").build()._task_registry["abody"]
    assert ids(Flow().loop(body, name="inner").build())[:2] == ["loop_0", "inner"]
    assert inspect.iscoroutinefunction(fn)
    assert asyncio.run(fn(0)) == {"_loop": "again", "value": 1}


def test_loop_body_workflow_ending_with_a_route_is_rejected() -> None:
    body = Flow("body").route(lambda x: "k").branch("k", a).done().build()
    with pytest.raises(ValueError, match=r"cannot end with route"):
        Flow().loop(body)


def test_loop_body_workflow_ending_with_a_signal_is_accepted() -> None:
    body = Flow("body").then(a).wait_for_signal("next").build()
    wf = Flow().loop(body).build()
    assert wf._task_registry["a"] is a  # the payload is the envelope; nothing to wrap


def test_workflow_steps_count_as_uses_of_their_ids() -> None:
    sub = Flow("sub").then(a).build()
    wf = Flow().then(a).fork().branch(sub).join(j).build()
    assert [n.key for n in walk_nodes(wf._inner.nodes) if isinstance(n, TaskNode)] == [
        "a",
        "a#2",
        "j",
    ]


def test_join_must_be_a_task() -> None:
    sub = Flow("sub").then(a).build()
    with pytest.raises(TypeError):
        Flow().fork().branch(b).join(sub)  # type: ignore[arg-type]
