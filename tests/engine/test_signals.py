"""Signals (spec §6.3, §16): parking, buffering, FIFO, timeouts, the in-memory refusal."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sayiir import (
    BackendError,
    DurableEngine,
    Flow,
    TaskError,
    Workflow,
    WorkflowClient,
    cancel_workflow,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    send_signal,
)


def approval_flow(ledger: Any, *, timeout: Any = None, name: str | None = None) -> Workflow:
    def prepare(x):
        ledger.add("prepare")
        return {"order": x}

    def after(payload):
        ledger.add("after")
        return {"got": payload}

    return (
        Flow("approval")
        .then(prepare)
        .wait_for_signal("approved", name=name, timeout=timeout)
        .then(after)
        .build()
    )


def test_in_memory_path_refuses_signals(ledger):
    with pytest.raises(TaskError) as info:
        run_workflow(approval_flow(ledger), 1)
    assert str(info.value).startswith(
        "Cannot resume workflow: AwaitSignal 'approved' not supported in sync executor"
    )
    assert ledger.entries == ["prepare"]


def test_in_memory_refusal_names_the_node_id(ledger):
    with pytest.raises(TaskError, match="AwaitSignal 'wait_ok' not supported"):
        run_workflow(approval_flow(ledger, name="wait_ok"), 1)


def test_parks_with_awaiting_signal_status(backend, iid, ledger):
    status = run_durable_workflow(approval_flow(ledger), iid, 1, backend=backend)
    assert status.status == "awaiting_signal" and status.is_awaiting_signal()
    assert status.signal_name == "approved"
    assert status.signal_id == "approved"
    assert status.wake_at is None
    assert status.delay_id is None and status.output is None
    assert ledger.entries == ["prepare"]


def test_node_name_is_signal_id(backend, iid, ledger):
    status = run_durable_workflow(approval_flow(ledger, name="wait_ok"), iid, 1, backend=backend)
    assert status.signal_id == "wait_ok"
    assert status.signal_name == "approved"


def test_signal_then_resume_continues_with_payload(backend, iid, ledger):
    wf = approval_flow(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    still = resume_workflow(wf, iid, backend)
    assert still.status == "awaiting_signal"
    send_signal(iid, "approved", {"by": "alice", "n": (1, 2)}, backend)
    assert ledger.entries == ["prepare"], "sending never executes workflow code"
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed", status
    assert status.output == {"got": {"by": "alice", "n": [1, 2]}}
    assert ledger.entries == ["prepare", "after"]


def test_signal_sent_before_instance_exists_is_consumed(backend, iid, ledger):
    send_signal(iid, "approved", "early", backend)
    status = run_durable_workflow(approval_flow(ledger), iid, 1, backend=backend)
    assert status.status == "completed", status
    assert status.output == {"got": "early"}


def test_signal_for_other_name_or_instance_is_not_consumed(backend, iid, ledger):
    send_signal(iid, "rejected", "no", backend)
    send_signal(iid + "-other", "approved", "elsewhere", backend)
    status = run_durable_workflow(approval_flow(ledger), iid, 1, backend=backend)
    assert status.status == "awaiting_signal"


def test_fifo_with_two_waits_of_the_same_name(backend, iid):
    wf = (
        Flow("fifo")
        .wait_for_signal("ev", name="first")
        .then(lambda p: [p], name="keep")
        .wait_for_signal("ev", name="second")
        .then(lambda p: p, name="last")
        .build()
    )
    status = run_durable_workflow(wf, iid, None, backend=backend)
    assert status.status == "awaiting_signal" and status.signal_id == "first"
    send_signal(iid, "ev", "a", backend)
    send_signal(iid, "ev", "b", backend)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed", status
    assert status.output == "b"
    assert WorkflowClient(backend).get_task_result(iid, "keep") == ["a"]


def test_fifo_preserved_for_many_buffered_events(backend, iid):
    wf = (
        Flow("fifo3")
        .wait_for_signal("ev", name="w1")
        .then(lambda p: [p], name="t1")
        .wait_for_signal("ev", name="w2")
        .then(lambda p: p, name="t2")
        .wait_for_signal("ev", name="w3")
        .build()
    )
    for payload in ("x", "y", "z"):
        send_signal(iid, "ev", payload, backend)
    status = run_durable_workflow(wf, iid, None, backend=backend)
    assert status.status == "completed"
    client = WorkflowClient(backend)
    assert client.get_task_result(iid, "t1") == ["x"]
    assert client.get_task_result(iid, "t2") == "y"
    assert status.output == "z"


def test_extra_events_are_kept_for_later_waits(backend, iid, ledger):
    wf = approval_flow(ledger)
    send_signal(iid, "approved", 1, backend)
    send_signal(iid, "approved", 2, backend)
    first = run_durable_workflow(wf, iid, 0, backend=backend)
    assert first.output == {"got": 1}
    # A fresh run under the same id (terminate_existing keeps buffered events) gets the next one.
    second = run_durable_workflow(wf, iid, 0, backend=backend, conflict_policy="terminate_existing")
    assert second.output == {"got": 2}
    third = run_durable_workflow(wf, iid, 0, backend=backend, conflict_policy="terminate_existing")
    assert third.status == "awaiting_signal"


def test_trailing_signal_returns_payload(backend, iid):
    wf = Flow("trail").then(lambda x: x, name="t").wait_for_signal("go").build()
    run_durable_workflow(wf, iid, 0, backend=backend)
    send_signal(iid, "go", {"p": 1}, backend)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == {"p": 1}
    assert WorkflowClient(backend).status(iid).output == {"p": 1}


def test_timeout_sets_wake_at_and_expiry_fails(backend, iid, ledger, parse_wake_at):
    wf = approval_flow(ledger, timeout=0.15)
    t0 = time.time()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    assert status.status == "awaiting_signal"
    assert status.wake_at is not None
    assert t0 + 0.1 <= parse_wake_at(status.wake_at) <= time.time() + 0.2
    time.sleep(0.2)
    failed = resume_workflow(wf, iid, backend)
    assert failed.status == "failed", failed
    assert failed.error == "Signal 'approved' timed out"
    assert ledger.entries == ["prepare"]


def test_signal_before_timeout_wins(backend, iid, ledger):
    wf = approval_flow(ledger, timeout="2s")
    assert run_durable_workflow(wf, iid, 1, backend=backend).status == "awaiting_signal"
    send_signal(iid, "approved", "yes", backend)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == {"got": "yes"}


def test_resume_before_timeout_stays_awaiting(backend, iid, ledger, same_wake_at):
    wf = approval_flow(ledger, timeout="5s")
    first = run_durable_workflow(wf, iid, 1, backend=backend)
    again = resume_workflow(wf, iid, backend)
    assert again.status == "awaiting_signal"
    assert same_wake_at(again.wake_at, first.wake_at)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_bad_timeout_rejected_at_build(bad):
    with pytest.raises(ValueError, match="timeout must be a finite non-negative number"):
        Flow("bad").wait_for_signal("x", timeout=bad)


def test_unserializable_payload_raises_type_error(backend, iid, ledger):
    run_durable_workflow(approval_flow(ledger), iid, 1, backend=backend)
    with pytest.raises(TypeError):
        send_signal(iid, "approved", {1, 2}, backend)


def test_signal_to_finished_run_is_refused(backend, iid):
    wf = Flow("done").then(lambda x: x, name="t").build()
    run_durable_workflow(wf, iid, 1, backend=backend)
    with pytest.raises(BackendError):
        send_signal(iid, "anything", 1, backend)


def test_signal_through_engine_and_client(backend, iid, ledger):
    wf = approval_flow(ledger)
    engine = DurableEngine(backend)
    engine.run(wf._inner, iid, 1, wf._task_registry)
    engine.send_signal(iid, "approved", "e")
    assert engine.resume(wf._inner, iid, wf._task_registry).output == {"got": "e"}
    iid2 = iid + "-c"
    engine.run(wf._inner, iid2, 1, wf._task_registry)
    WorkflowClient(backend).send_signal(iid2, "approved", "c")
    assert resume_workflow(wf, iid2, backend).output == {"got": "c"}


def test_cancel_while_awaiting_signal(backend, iid, ledger):
    wf = approval_flow(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    cancel_workflow(iid, backend, reason="no answer", cancelled_by="ops")
    send_signal_ok = True
    try:
        send_signal(iid, "approved", "late", backend)
    except BackendError:
        send_signal_ok = False
    status = resume_workflow(wf, iid, backend)
    assert status.status == "cancelled"
    assert status.reason == "no answer" and status.cancelled_by == "ops"
    assert ledger.entries == ["prepare"]
    assert not send_signal_ok, "a cancelled run is finished: signals to it are refused"


def test_two_waits_same_name_without_node_names(backend, iid):
    wf = (
        Flow("fifo-plain")
        .wait_for_signal("ev")
        .then(lambda p: [p], name="keep")
        .wait_for_signal("ev")
        .then(lambda p: p, name="last")
        .build()
    )
    send_signal(iid, "ev", "a", backend)
    send_signal(iid, "ev", "b", backend)
    status = run_durable_workflow(wf, iid, None, backend=backend)
    assert status.status == "completed" and status.output == "b"
    assert WorkflowClient(backend).get_task_result(iid, "keep") == ["a"]


def test_two_waits_same_name_park_one_after_the_other(backend, iid, ledger):
    def mid(p):
        ledger.add(f"mid:{p}")
        return p

    wf = Flow("same").wait_for_signal("ev").then(mid).wait_for_signal("ev").build()
    first = run_durable_workflow(wf, iid, None, backend=backend)
    assert first.status == "awaiting_signal" and first.signal_id == "ev"
    send_signal(iid, "ev", "one", backend)
    second = resume_workflow(wf, iid, backend)
    assert second.status == "awaiting_signal"
    assert second.signal_id == "ev" and second.signal_name == "ev"
    assert ledger.entries == ["mid:one"]
    send_signal(iid, "ev", "two", backend)
    done = resume_workflow(wf, iid, backend)
    assert done.status == "completed" and done.output == "two"
    assert ledger.entries == ["mid:one"]
