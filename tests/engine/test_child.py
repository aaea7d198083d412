"""Child workflows with ``then_flow`` (spec §6.4)."""

from __future__ import annotations

import pytest

from sayiir import Flow, WorkflowClient, resume_workflow, run_durable_workflow


def inc(x: int) -> int:
    return x + 1


def times10(x: int) -> int:
    return x * 10


def minus3(x: int) -> int:
    return x - 3


def test_child_output_feeds_the_parent(path):
    child = Flow("child").then(times10).then(minus3).build()
    wf = Flow("parent").then(inc).then_flow(child).then(lambda x: x * 2, name="post").build()
    kinds = [(n.id, n.kind) for n in wf.iter_nodes()]
    assert kinds[:2] == [("inc", "task"), ("child_0", "child_workflow")]
    out = path.run(wf, 1)
    assert out.ok, out.error
    assert out.value == ((1 + 1) * 10 - 3) * 2


def test_child_as_first_and_last_step(path):
    child = Flow("child").then(times10).build()
    out = path.run(Flow("parent").then_flow(child).build(), 4)
    assert out.ok and out.value == 40


def test_two_children_numbered(path):
    c1 = Flow("c1").then(inc).build()
    c2 = Flow("c2").then(times10).build()
    wf = Flow("p").then_flow(c1).then_flow(c2).build()
    assert [n.id for n in wf.iter_nodes() if n.kind == "child_workflow"] == ["child_0", "child_1"]
    out = path.run(wf, 1)
    assert out.ok and out.value == 20


def test_child_lambda_is_not_replaced_by_parent_lambda(path):
    # Reference bug (§21.3): parent x+1 and child x*10 both called lambda_0 -> 3 instead of 20.
    child = Flow("child").then(lambda x: x * 10).build()
    try:
        wf = Flow("parent").then(lambda x: x + 1).then_flow(child).build()
    except ValueError as exc:  # detecting the collision at build time is allowed
        assert "lambda_0" in str(exc)
        return
    out = path.run(wf, 1)
    assert out.ok and out.value == 20


def test_child_inside_child(path):
    grandchild = Flow("gc").then(times10).build()
    child = Flow("c").then(inc).then_flow(grandchild).build()
    wf = Flow("p").then_flow(child).then(minus3).build()
    out = path.run(wf, 1)
    assert out.ok, out.error
    assert out.value == 17


def test_child_failure_fails_the_parent(path, ledger):
    def boom(x):
        raise ValueError("child broke")

    def after(x):
        ledger.add("after")
        return x

    child = Flow("c").then(boom).build()
    out = path.run(Flow("p").then_flow(child).then(after).build(), 1)
    assert not out.ok
    assert out.error == "ValueError: child broke"
    assert ledger.entries == []


def test_same_child_workflow_object_twice_runs_twice(path):
    child = Flow("c").then(inc).build()
    out = path.run(Flow("p").then_flow(child).then_flow(child).build(), 1)
    assert out.ok, out.error
    assert out.value == 3


def test_then_flow_requires_a_workflow():
    with pytest.raises(TypeError):
        Flow("p").then_flow(inc)  # type: ignore[arg-type]


def test_child_task_context_uses_parent_instance(backend, iid):
    from sayiir import get_task_context

    def where(x):
        ctx = get_task_context()
        assert ctx is not None
        return [ctx.workflow_id, ctx.instance_id, ctx.task_id]

    child = Flow("child").then(where).build()
    status = run_durable_workflow(Flow("parent").then_flow(child).build(), iid, 0, backend=backend)
    assert status.status == "completed"
    assert status.output[1:] == [iid, "where"]
    assert status.output[0] in ("parent", "child")


def test_durable_child_checkpoints_and_resume(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def c1(x):
        ledger.add("c1")
        return x + 1

    def c2(x):
        ledger.add("c2")
        if crashes:
            raise crashes.pop()
        return x * 2

    def p1(x):
        ledger.add("p1")
        return x

    child = Flow("c").then(c1).then(c2).build()
    wf = Flow("p").then(p1).then_flow(child).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    assert ledger.entries == ["p1", "c1", "c2"]
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 4
    assert ledger.entries == ["c2"]
    assert WorkflowClient(backend).get_task_result(iid, "c1") == 2
