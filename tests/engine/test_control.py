"""Cancel, pause, unpause and resume (spec §9.3) on every backend."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sayiir import (
    BackendError,
    DurableEngine,
    Flow,
    WorkflowClient,
    WorkflowError,
    cancel_workflow,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    unpause_workflow,
)


def two_steps(ledger: Any, gate: threading.Event | None = None, started: Any = None) -> Any:
    def first(x):
        ledger.add("first")
        if started is not None:
            started.set()
        if gate is not None:
            assert gate.wait(5), "test gate never opened"
        return x + 1

    def second(x):
        ledger.add("second")
        return x * 10

    return Flow("two").then(first).then(second).build()


def parked(ledger: Any) -> Any:
    def first(x):
        ledger.add("first")
        return x + 1

    def second(x):
        ledger.add("second")
        return x * 10

    return Flow("parked").then(first).delay("nap", 0.15).then(second).build()


def run_in_thread(fn: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(fn(*args, **kwargs))
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=target)
    t.start()
    return t, box


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["cancel", "pause", "unpause"])
def test_control_of_unknown_instance(backend, op):
    missing = "no-such-instance-xyz"
    with pytest.raises(BackendError) as info:
        if op == "cancel":
            cancel_workflow(missing, backend)
        elif op == "pause":
            pause_workflow(missing, backend)
        else:
            unpause_workflow(missing, backend)
    assert str(info.value) == f"Snapshot not found: {missing}"
    assert "not found" in str(info.value)


def test_cancel_or_pause_completed_instance_is_refused(backend, iid, ledger):
    wf = two_steps(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    with pytest.raises(BackendError, match=r"^Cannot cancel workflow in state: Completed"):
        cancel_workflow(iid, backend)
    with pytest.raises(BackendError, match=r"^Cannot pause workflow in state: Completed"):
        pause_workflow(iid, backend)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 20


def test_cancel_failed_instance_is_refused(backend, iid):
    def boom(x):
        raise ValueError("x")

    run_durable_workflow(Flow("f").then(boom).build(), iid, 1, backend=backend)
    with pytest.raises(BackendError, match=r"^Cannot cancel workflow in state: Failed"):
        cancel_workflow(iid, backend)


def test_unpause_not_paused_is_refused(backend, iid, ledger):
    run_durable_workflow(parked(ledger), iid, 1, backend=backend)
    with pytest.raises(BackendError):
        unpause_workflow(iid, backend)
    run_durable_workflow(two_steps(ledger), iid + "-done", 1, backend=backend)
    with pytest.raises(BackendError):
        unpause_workflow(iid + "-done", backend)


def test_cancel_twice_is_a_noop(backend, iid, ledger):
    wf = parked(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    cancel_workflow(iid, backend, reason="first", cancelled_by="a")
    cancel_workflow(iid, backend, reason="second", cancelled_by="b")
    status = resume_workflow(wf, iid, backend)
    assert status.status == "cancelled"
    assert (status.reason, status.cancelled_by) == ("first", "a")


def test_pause_cancelled_instance_is_refused(backend, iid, ledger):
    run_durable_workflow(parked(ledger), iid, 1, backend=backend)
    cancel_workflow(iid, backend)
    with pytest.raises(BackendError):
        pause_workflow(iid, backend)


# -- parked instances -------------------------------------------------------------------------


def test_cancel_parked_instance(backend, iid, ledger):
    wf = parked(ledger)
    assert run_durable_workflow(wf, iid, 1, backend=backend).status == "waiting"
    cancel_workflow(iid, backend, reason="not needed", cancelled_by="ops")
    client_status = WorkflowClient(backend).status(iid)
    # Applied at once (ours) or at the next resume of the parked instance (reference).
    assert client_status.status in ("cancelled", "waiting", "in_progress")
    if client_status.status == "cancelled":
        assert client_status.reason == "not needed" and client_status.cancelled_by == "ops"
    time.sleep(0.2)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "cancelled" and status.is_cancelled()
    assert status.reason == "not needed" and status.cancelled_by == "ops"
    assert status.output is None and status.paused_by is None
    assert ledger.entries == ["first"]


def test_pause_parked_then_unpause_and_resume(backend, iid, ledger):
    wf = parked(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    pause_workflow(iid, backend, reason="maintenance", paused_by="ops")
    time.sleep(0.2)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "paused" and status.is_paused()
    assert status.reason == "maintenance" and status.paused_by == "ops"
    assert ledger.entries == ["first"], "a paused instance does not run"
    unpause_workflow(iid, backend)
    assert ledger.entries == ["first"], "unpause does not run it either"
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 20
    assert ledger.entries == ["first", "second"]


def test_cancel_paused_instance(backend, iid, ledger):
    wf = parked(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    pause_workflow(iid, backend)
    cancel_workflow(iid, backend, reason="give up")
    status = resume_workflow(wf, iid, backend)
    assert status.status == "cancelled" and status.reason == "give up"


def test_pause_twice_is_not_an_error(backend, iid, ledger):
    wf = parked(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    pause_workflow(iid, backend, reason="one", paused_by="a")
    pause_workflow(iid, backend, reason="two", paused_by="b")
    status = resume_workflow(wf, iid, backend)
    # Which request wins is not specified; the pair must stay consistent.
    assert status.status == "paused"
    assert (status.reason, status.paused_by) in (("one", "a"), ("two", "b"))
    assert ledger.entries == ["first"]


# -- running instances ------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["cancel", "pause"])
def test_request_while_task_runs_in_another_thread(backend, iid, ledger, op):
    gate, started = threading.Event(), threading.Event()
    wf = two_steps(ledger, gate, started)
    thread, box = run_in_thread(run_durable_workflow, wf, iid, 1, backend=backend)
    assert started.wait(5)
    if op == "cancel":
        cancel_workflow(iid, backend, reason="stop", cancelled_by="me")
    else:
        pause_workflow(iid, backend, reason="hold", paused_by="me")
    gate.set()
    thread.join(5)
    status = box[0]
    assert not isinstance(status, BaseException), status
    # The running task was not interrupted: it finished and was checkpointed, then the run stopped.
    assert ledger.entries == ["first"]
    assert WorkflowClient(backend).get_task_result(iid, "first") == 2
    if op == "cancel":
        assert status.status == "cancelled"
        assert (status.reason, status.cancelled_by) == ("stop", "me")
        again = resume_workflow(wf, iid, backend)
        assert again.status == "cancelled" and ledger.entries == ["first"]
    else:
        assert status.status == "paused"
        assert (status.reason, status.paused_by) == ("hold", "me")
        unpause_workflow(iid, backend)
        done = resume_workflow(wf, iid, backend)
        assert done.status == "completed" and done.output == 20
        assert ledger.entries == ["first", "second"]


def test_cancel_from_inside_a_running_task(backend, iid, ledger):
    def first(x):
        ledger.add("first")
        cancel_workflow(iid, backend, reason="self", cancelled_by="task")
        return x + 1

    def second(x):
        ledger.add("second")
        return x

    wf = Flow("selfcancel").then(first).then(second).build()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    assert status.status == "cancelled"
    assert (status.reason, status.cancelled_by) == ("self", "task")
    assert ledger.entries == ["first"]
    assert WorkflowClient(backend).get_task_result(iid, "first") == 2


def test_pause_from_inside_then_unpause_then_resume_runs_next_task(backend, iid, ledger):
    seen: list[Any] = []

    def first(x):
        ledger.add("first")
        pause_workflow(iid, backend, reason="self")
        return {"from": "first", "x": x}

    def second(x):
        ledger.add("second")
        seen.append(x)
        return "end"

    wf = Flow("selfpause").then(first).then(second).build()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    assert status.status == "paused" and status.reason == "self"
    unpause_workflow(iid, backend)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == "end"
    assert ledger.entries == ["first", "second"]
    assert seen == [{"from": "first", "x": 1}]


def test_cancel_from_inside_the_last_task(backend, iid, ledger):
    def only(x):
        ledger.add("only")
        cancel_workflow(iid, backend)
        return x

    status = run_durable_workflow(Flow("last").then(only).build(), iid, 1, backend=backend)
    # The request arrives while the last task runs: either it still applies, or the run completes.
    assert status.status in ("cancelled", "completed")
    assert ledger.entries == ["only"]
    stored = WorkflowClient(backend).status(iid)
    assert stored.status == status.status


def test_pending_cancel_is_not_downgraded_by_pause(backend, iid, ledger):
    def first(x):
        ledger.add("first")
        cancel_workflow(iid, backend, reason="c")
        pause_workflow(iid, backend, reason="p")
        return x

    wf = Flow("order").then(first).then(lambda x: x, name="second").build()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    assert status.status == "cancelled" and status.reason == "c"


def test_cancel_inside_fork_branch_stops_before_join(backend, iid, ledger):
    def a(x):
        ledger.add("a")
        cancel_workflow(iid, backend, reason="in branch")
        return 1

    def b(x):
        ledger.add("b")
        return 2

    def join(d):
        ledger.add("join")
        return d

    wf = Flow("fcancel").fork().branch(a).branch(b).join(join).build()
    status = run_durable_workflow(wf, iid, 0, backend=backend)
    assert status.status == "cancelled" and status.reason == "in branch"
    assert "join" not in ledger.entries


def test_run_workflow_with_instance_id_raises_when_cancelled(backend, iid, ledger):
    def first(x):
        cancel_workflow(iid, backend)
        return x

    wf = Flow("rw").then(first).then(lambda x: x, name="second").build()
    with pytest.raises(WorkflowError, match=r"status=cancelled"):
        run_workflow(wf, 1, instance_id=iid, backend=backend)


@pytest.mark.parametrize("status_name", ["waiting", "awaiting_signal", "paused"])
def test_run_workflow_with_instance_id_raises_for_parked(backend, iid, ledger, status_name):
    if status_name == "waiting":
        wf = Flow("p").delay("d", 30).build()
    elif status_name == "awaiting_signal":
        wf = Flow("p").wait_for_signal("s").build()
    else:

        def pause_me(x):
            pause_workflow(iid, backend)
            return x

        wf = Flow("p").then(pause_me).then(lambda x: x, name="after").build()
    with pytest.raises(WorkflowError) as info:
        run_workflow(wf, 1, instance_id=iid, backend=backend)
    assert str(info.value) == (
        f"Workflow did not complete (status={status_name}). "
        "Use run_durable_workflow() to inspect the full status."
    )


# -- engine and client forms ------------------------------------------------------------------


def test_engine_and_client_control_methods(backend, iid, ledger):
    wf = parked(ledger)
    engine = DurableEngine(backend)
    client = WorkflowClient(backend)
    assert engine.run(wf._inner, iid, 1, wf._task_registry).status == "waiting"
    client.pause(iid, reason="r1", paused_by="client")
    st = client.status(iid)
    assert st.status == "paused" and st.reason == "r1" and st.paused_by == "client"
    client.unpause(iid)
    assert client.status(iid).status in ("waiting", "in_progress")
    engine.pause(iid, "r2", "engine")
    # Applied now or at the next resume (spec §9.3): either way the resume reports it.
    st = engine.resume(wf._inner, iid, wf._task_registry)
    assert st.status == "paused" and st.reason == "r2" and st.paused_by == "engine"
    assert client.status(iid).paused_by == "engine"
    engine.unpause(iid)
    engine.cancel(iid, "r3", "engine")
    st = engine.resume(wf._inner, iid, wf._task_registry)
    assert st.status == "cancelled" and st.reason == "r3" and st.cancelled_by == "engine"
    st = client.status(iid)
    assert st.status == "cancelled" and st.reason == "r3" and st.cancelled_by == "engine"
    assert ledger.entries == ["first"]
    other = iid + "-2"
    engine.run(wf._inner, other, 1, wf._task_registry)
    client.cancel(other, reason="r4", cancelled_by="client")
    st = engine.resume(wf._inner, other, wf._task_registry)
    assert st.status == "cancelled" and st.cancelled_by == "client"


def test_client_control_options_are_keyword_only(backend):
    client = WorkflowClient(backend)
    with pytest.raises(TypeError):
        client.cancel("x", "reason")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        client.pause("x", "reason")  # type: ignore[call-arg]
