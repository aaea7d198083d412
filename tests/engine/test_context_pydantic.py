"""Task context (spec §15.2) and pydantic models (§15.3), sync and async, on every path."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from sayiir import (
    DurableEngine,
    Flow,
    RetryPolicy,
    TaskExecutionContext,
    TaskMetadata,
    get_task_context,
    run_durable_workflow,
    run_workflow,
    task,
)


def snapshot() -> dict[str, Any]:
    ctx = get_task_context()
    assert isinstance(ctx, TaskExecutionContext)
    meta = ctx.metadata
    assert isinstance(meta, TaskMetadata)
    return {
        "workflow_id": ctx.workflow_id,
        "instance_id": ctx.instance_id,
        "task_id": ctx.task_id,
        "timeout": meta.timeout_secs,
        "retries": None if meta.retries is None else meta.retries.max_retries,
        "tags": meta.tags,
        "priority": meta.priority,
        "version": meta.version,
        "display_name": meta.display_name,
        "description": meta.description,
        "workflow_metadata": ctx.workflow_metadata,
        "repr": repr(ctx),
    }


@task(
    "charge",
    timeout="30s",
    retries=RetryPolicy(max_retries=2, initial_delay_secs=0.5, backoff_multiplier=2.0),
    tags=["payments", "io"],
    priority=2,
    description="Charge the card",
)
def charge(x: Any) -> dict[str, Any]:
    return snapshot()


def test_get_task_context_is_none_outside_tasks():
    assert get_task_context() is None
    run_workflow(Flow("c").then(lambda x: x).build(), 1)
    assert get_task_context() is None


def test_context_fields_plain_path():
    wf = Flow("ctx-wf", metadata={"team": "billing", "n": 1}).then(charge).build()
    snap = run_workflow(wf, 0)
    assert snap["workflow_id"] == "ctx-wf"
    assert snap["instance_id"] == "ctx-wf"  # equals the workflow id on the in-memory path
    assert snap["task_id"] == "charge"
    assert snap["timeout"] == 30.0
    assert snap["retries"] == 2
    assert snap["tags"] == ["payments", "io"]
    assert snap["priority"] == 2
    assert snap["workflow_metadata"] == {"team": "billing", "n": 1}
    # SHOULD (§15.2): populated at runtime, unlike the reference which loses them.
    assert snap["display_name"] == "charge"
    assert snap["description"] == "Charge the card"
    assert snap["repr"] == (
        "TaskExecutionContext(workflow_id='ctx-wf', instance_id='ctx-wf', task_id='charge')"
    )
    assert get_task_context() is None


def test_context_fields_durable_path(backend, iid):
    wf = Flow("ctx-wf", metadata={"team": "billing"}).then(charge).build()
    status = run_durable_workflow(wf, iid, 0, backend=backend)
    snap = status.output
    assert snap["workflow_id"] == "ctx-wf"
    assert snap["instance_id"] == iid
    assert snap["task_id"] == "charge"
    assert snap["timeout"] == 30.0 and snap["retries"] == 2 and snap["priority"] == 2
    assert snap["tags"] == ["payments", "io"]
    assert snap["workflow_metadata"] == {"team": "billing"}
    assert get_task_context() is None


def test_undecorated_task_context_defaults(path):
    def bare(x):
        return snapshot()

    out = path.run(Flow("bare").then(bare).build(), 0)
    assert out.ok, out.error
    snap = out.value
    assert snap["task_id"] == "bare"
    assert snap["tags"] == []
    assert snap["timeout"] is None and snap["retries"] is None and snap["priority"] is None
    assert snap["workflow_metadata"] is None


def test_context_in_async_task(path):
    async def actx(x):
        await asyncio.sleep(0)
        return snapshot()

    out = path.run(Flow("actx", metadata={"k": "v"}).then(actx).build(), 0)
    assert out.ok, out.error
    assert out.value["task_id"] == "actx"
    assert out.value["workflow_metadata"] == {"k": "v"}


def test_context_of_lambda_and_named_tasks(path):
    wf = (
        Flow("ids")
        .then(lambda x: snapshot()["task_id"])
        .then(lambda x: [x, snapshot()["task_id"]], name="named")
        .build()
    )
    out = path.run(wf, 0)
    assert out.ok and out.value == ["lambda_0", "named"]


def test_context_in_fork_branches_does_not_leak(path):
    def a(x):
        time.sleep(0.05)
        return snapshot()["task_id"]

    def b(x):
        time.sleep(0.05)
        return snapshot()["task_id"]

    def join(d):
        return [d, snapshot()["task_id"]]

    out = path.run(Flow("fctx").fork().branch(a).branch(b).join(join).build(), 0)
    assert out.ok, out.error
    assert out.value == [{"a": "a", "b": "b"}, "join"]


def test_context_for_route_key_function(path):
    wf = (
        Flow("rctx")
        .route(lambda x: snapshot()["task_id"].replace("::", "-"), keys=["branch_0-key_fn"])
        .branch("branch_0-key_fn", lambda x: "ok", name="h")
        .done()
        .build()
    )
    out = path.run(wf, 0)
    assert out.ok, out.error
    assert out.value == {"branch": "branch_0-key_fn", "result": "ok"}


def test_context_in_loop_body_and_child(path):
    def body(x):
        from sayiir import LoopResult

        return LoopResult.done(snapshot()["task_id"])

    child = Flow("child").then(lambda x: [x, snapshot()["task_id"]], name="in_child").build()
    out = path.run(Flow("lctx").loop(body).then_flow(child).build(), 0)
    assert out.ok, out.error
    assert out.value == ["body", "in_child"]


def test_context_outside_task_in_other_thread_is_none(path):
    seen: list[Any] = []
    release = threading.Event()

    def probe() -> None:
        release.wait(2)
        seen.append(get_task_context())

    def task_fn(x):
        t = threading.Thread(target=probe)
        t.start()
        release.set()
        t.join()
        return x

    out = path.run(Flow("thr").then(task_fn).build(), 0)
    assert out.ok
    assert seen == [None]


def test_durable_engine_with_raw_registry_sets_context(backend, iid):
    wf = Flow("raw", metadata={"m": 1}).then(charge).build()
    status = DurableEngine(backend).run(wf._inner, iid, 0, wf._task_registry)
    assert status.output["instance_id"] == iid
    assert status.output["workflow_metadata"] == {"m": 1}


# -- pydantic ---------------------------------------------------------------------------------


class Order(BaseModel):
    id: int
    amount: float


class Receipt(BaseModel):
    order_id: int
    total: float


def pay(order: Order) -> Receipt:
    assert isinstance(order, Order)
    return Receipt(order_id=order.id, total=order.amount * 2)


async def apay(order: Order) -> Receipt:
    assert isinstance(order, Order)
    await asyncio.sleep(0)
    return Receipt(order_id=order.id, total=order.amount * 3)


class Counter(BaseModel):
    n: int


def check_receipt(r: Receipt) -> dict[str, Any]:
    assert isinstance(r, Receipt)
    return {"id": r.order_id, "total": r.total}


def test_pydantic_sync_task_validates_input_and_dumps_output(path):
    wf = Flow("pyd").then(pay).then(check_receipt).build()
    out = path.run(wf, {"id": 7, "amount": 10})
    assert out.ok, out.error
    assert out.value == {"id": 7, "total": 20.0}


def test_pydantic_async_task_validates_input_and_dumps_output(path):
    wf = Flow("apyd").then(apay).then(check_receipt).build()
    out = path.run(wf, {"id": 8, "amount": 1.5})
    assert out.ok, out.error
    assert out.value == {"id": 8, "total": 4.5}


def test_pydantic_model_output_is_plain_dict_for_next_untyped_task(path):
    seen: list[Any] = []

    def untyped(x):
        seen.append(x)
        return x

    out = path.run(Flow("pyd2").then(pay).then(untyped).build(), {"id": 1, "amount": 2})
    assert out.ok, out.error
    assert seen == [{"order_id": 1, "total": 4.0}]
    assert type(seen[0]) is dict


def test_pydantic_validation_error_is_a_task_failure_and_retried(path, ledger):
    @task(retries=RetryPolicy(max_retries=1, initial_delay_secs=0.01, backoff_multiplier=1.0))
    def strict(order: Order) -> int:
        ledger.add("strict")
        return order.id

    out = path.run(Flow("pydfail").then(strict).build(), {"id": "not-an-int", "amount": 1})
    assert not out.ok
    assert out.error is not None and out.error.startswith("ValidationError")
    assert ledger.entries == []


def test_pydantic_in_fork_and_async_join(path):
    async def join(d: dict[str, Any]) -> float:
        return float(d["pay"]["total"] + d["apay"]["total"])

    wf = Flow("pydfork").fork().branch(pay).branch(apay).join(join).build()
    out = path.run(wf, {"id": 1, "amount": 1})
    assert out.ok, out.error
    assert out.value == 5.0


def test_pydantic_route_key_function(path):
    def key(order: Order) -> str:
        return "big" if order.amount > 100 else "small"

    wf = (
        Flow("pydroute")
        .route(key, keys=["big", "small"])
        .branch("big", lambda o: "B", name="big_h")
        .branch("small", lambda o: "S", name="small_h")
        .done()
        .build()
    )
    out = path.run(wf, {"id": 1, "amount": 500})
    assert out.ok and out.value == {"branch": "big", "result": "B"}


def test_pydantic_durable_checkpoint_is_the_dump(backend, iid):
    from sayiir import WorkflowClient

    wf = Flow("pydcp").then(apay).then(check_receipt).build()
    status = run_durable_workflow(wf, iid, {"id": 3, "amount": 1}, backend=backend)
    assert status.output == {"id": 3, "total": 3.0}
    stored = WorkflowClient(backend).get_task_result(iid, "apay")
    assert stored in ({"order_id": 3, "total": 3.0}, Receipt(order_id=3, total=3.0))


def test_pydantic_model_as_workflow_input(path):
    # The reference rejects a model as input (TypeError); accepting it by dumping is allowed.
    wf = Flow("pydin").then(pay).then(check_receipt).build()
    try:
        out = path.run(wf, Order(id=5, amount=1))
    except TypeError:
        return
    assert out.ok, out.error
    assert out.value == {"id": 5, "total": 2.0}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_pydantic_loop_body(path, kind):
    from sayiir import LoopResult

    def body(c: Counter) -> Any:
        return LoopResult.done(c.n) if c.n >= 3 else LoopResult.again({"n": c.n + 1})

    async def abody(c: Counter) -> Any:
        return body(c)

    wf = Flow("pydloop").loop(body if kind == "sync" else abody, name="b").build()
    out = path.run(wf, {"n": 0})
    assert out.ok, out.error
    assert out.value == 3
