"""Operator actions (``sayiir.console.actions``) on every backend: the semantics of retry and
fork, the audit trail, refusals, and bulk actions by filter with a dry run."""

from __future__ import annotations

from typing import Any

import pytest

from sayiir import Flow, RetryPolicy, resume_workflow, run_durable_workflow, task
from sayiir.console import actions
from sayiir.console.actions import ActionError
from sayiir.core.queries import RunFilter
from sayiir.core.records import FinalState, InstanceRecord, Status

Backend = Any  # the `backend` fixture: tests/contract/conftest.py


CALLS: dict[str, list[str]] = {}
BROKEN: set[str] = set()


def _step(name: str) -> Any:
    def fn(x: dict[str, Any]) -> dict[str, Any]:
        CALLS.setdefault(x["tag"], []).append(name)
        if name == "b" and x["tag"] in BROKEN:
            raise RuntimeError("b is broken")
        return {**x, name: True}

    return task(name=name, retries=RetryPolicy(max_retries=1, initial_delay_secs=0.0))(fn)


def three_steps(tag: str) -> Any:
    return Flow(f"{tag}-wf").then(_step("a")).then(_step("b")).then(_step("c")).build()


def test_retry_resumes_a_failed_run_from_its_checkpoint_with_fresh_attempts(
    backend: Backend, tag: str
) -> None:
    wf = three_steps(tag)
    BROKEN.add(tag)
    iid = f"{tag}-r"
    status = run_durable_workflow(wf, iid, {"tag": tag}, backend=backend)
    assert status.is_failed()
    assert CALLS[tag] == ["a", "b", "b"]  # two attempts of b: its retry budget is spent
    BROKEN.discard(tag)  # the bug is fixed; the operator retries

    result = actions.retry(backend, iid, actor="ops", workflows=[wf])
    assert result.message == "resumed: completed"
    assert CALLS[tag] == ["a", "b", "b", "b", "c"]  # a kept; b gets fresh attempts
    d = backend.run_detail(iid)
    assert d.run.status == "completed"
    b = next(s for s in d.steps if s.key == "b")
    assert [a.outcome for a in b.attempts] == ["completed"]
    (entry,) = [e for e in d.audit if e.action == "retry"]
    assert entry.actor == "ops" and "b is broken" in entry.detail["previous_error"]


def test_retry_without_the_workflows_leaves_the_run_runnable(backend: Backend, tag: str) -> None:
    wf = three_steps(tag)
    BROKEN.add(tag)
    iid = f"{tag}-r2"
    assert run_durable_workflow(wf, iid, {"tag": tag}, backend=backend).is_failed()
    BROKEN.discard(tag)
    assert actions.retry(backend, iid, actor="ops").message.startswith("runnable")
    assert backend.get_instance(iid).status is Status.RUNNING
    assert resume_workflow(wf, iid, backend).is_completed()  # its application resumes it


def test_retry_refuses_a_run_that_did_not_fail(backend: Backend, tag: str) -> None:
    wf = three_steps(tag)
    iid = f"{tag}-ok"
    assert run_durable_workflow(wf, iid, {"tag": tag}, backend=backend).is_completed()
    with pytest.raises(ActionError, match="it is completed, not failed") as info:
        actions.retry(backend, iid, actor="ops")
    assert not info.value.not_found
    assert backend.list_audit(iid) == []
    with pytest.raises(ActionError, match="no run") as missing:
        actions.retry(backend, f"{tag}-missing", actor="ops")
    assert missing.value.not_found


def test_a_distributed_failed_run_is_queued_again_by_retry(backend: Backend, tag: str) -> None:
    iid = f"{tag}-d"
    rec = InstanceRecord(iid, "wf", "h", Status.RUNNING, b"1", distributed=True)
    backend.create_instance(rec, replace=False)  # queued for workers...
    backend.finish(iid, FinalState(Status.FAILED, error="boom"), [])  # ...and failed: unqueued
    before = backend.queue_stats()
    assert actions.retry(backend, iid, actor="ops").message == "queued for the workers"
    after = backend.queue_stats()
    if before is not None:  # SQLite has no worker queue
        assert after.ready == before.ready + 1


def test_fork_reuses_the_checkpoints_before_the_step(backend: Backend, tag: str) -> None:
    wf = three_steps(tag)
    src = f"{tag}-src"
    assert run_durable_workflow(wf, src, {"tag": tag}, backend=backend).is_completed()
    CALLS[tag].clear()
    result = actions.fork(backend, src, "b", actor="ops", new_id=f"{tag}-new")
    assert result.new_instance_id == f"{tag}-new"
    assert resume_workflow(wf, f"{tag}-new", backend).output == {
        "tag": tag, "a": True, "b": True, "c": True,
    }  # fmt: skip
    assert CALLS[tag] == ["b", "c"]  # a came from the source's checkpoint
    source = backend.run_detail(src)
    assert [c.instance_id for c in source.children] == [f"{tag}-new"]
    new = backend.run_detail(f"{tag}-new")
    assert new.run.parent_instance_id == src
    with pytest.raises(ActionError, match="exists already"):
        actions.fork(backend, src, "b", actor="ops", new_id=f"{tag}-new")
    with pytest.raises(ActionError, match="no step 'zz'"):
        actions.fork(backend, src, "zz", actor="ops")


def test_actions_are_audited_and_refusals_are_not(backend: Backend, tag: str) -> None:
    wf = Flow(f"{tag}-sig").wait_for_signal("go").then(lambda x: x, name="done").build()
    iid = f"{tag}-s"
    run_durable_workflow(wf, iid, 1, backend=backend)
    assert actions.pause(backend, iid, actor="al", reason="look").message == "paused"
    assert actions.signal(backend, iid, "go", {"x": 1}, actor="al").message == "signal 'go' sent"
    assert actions.cancel(backend, iid, actor="al").message == "cancelled"  # paused: at once
    with pytest.raises(ActionError, match="not paused"):
        actions.unpause(backend, iid, actor="al")
    with pytest.raises(ActionError, match=r"[Cc]annot pause"):
        actions.pause(backend, iid, actor="al")
    with pytest.raises(ActionError, match="no run"):
        actions.signal(backend, f"{tag}-none", "go", 1, actor="al")
    got = [(e.actor, e.action, e.detail) for e in backend.list_audit(iid)]
    assert got == [
        ("al", "cancel", {}),
        ("al", "signal", {"name": "go"}),
        ("al", "pause", {"reason": "look"}),
    ]
    other = f"{tag}-s2"
    run_durable_workflow(wf, other, 1, backend=backend)
    actions.pause(backend, other, actor="al")
    assert actions.unpause(backend, other, actor="al").message == "unpaused"
    assert backend.get_instance(other).status is Status.RUNNING


def test_bulk_by_filter_with_dry_run(backend: Backend, tag: str) -> None:
    wf = Flow(f"{tag}-bulk").wait_for_signal("go").then(lambda x: x, name="done").build()
    for i in range(4):
        run_durable_workflow(wf, f"{tag}-b{i}", i, backend=backend)
    actions.cancel(backend, f"{tag}-b3", actor="x")
    f = RunFilter(workflow_id=f"{tag}-bulk")
    preview = actions.bulk(backend, "pause", f, actor="x", dry_run=True)
    assert preview.matched == [f"{tag}-b{i}" for i in range(4)] and preview.done == []
    assert backend.get_instance(f"{tag}-b0").status is Status.AWAITING_SIGNAL
    seen: list[tuple[int, int]] = []
    result = actions.bulk(backend, "pause", f, actor="x", progress=lambda n, t: seen.append((n, t)))
    assert [r.instance_id for r in result.done] == [f"{tag}-b{i}" for i in range(3)]
    assert list(result.refused) == [f"{tag}-b3"]  # cancelled: cannot be paused
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert backend.count_runs(RunFilter(status=("paused",), workflow_id=f"{tag}-bulk")) == (
        3,
        False,
    )
    with pytest.raises(ValueError, match="unknown bulk action"):
        actions.bulk(backend, "fork", f, actor="x")
