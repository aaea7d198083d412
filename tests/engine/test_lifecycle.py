"""Starting and resuming instances: conflict policies (§9.4), the resume table (§9.2),
definition mismatch, instance id rules (§9.1) and ``WorkflowStatus`` (§11)."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import pytest

from sayiir import (
    BackendError,
    DurableEngine,
    Flow,
    InstanceAlreadyExistsError,
    WorkflowClient,
    WorkflowError,
    WorkflowStatus,
    cancel_workflow,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    send_signal,
)

PREDICATES = (
    "is_completed",
    "is_failed",
    "is_cancelled",
    "is_paused",
    "is_waiting",
    "is_awaiting_signal",
    "is_in_progress",
)
FIELDS = (
    "status",
    "output",
    "error",
    "reason",
    "cancelled_by",
    "paused_by",
    "wake_at",
    "delay_id",
    "signal_id",
    "signal_name",
)


def counted(ledger: Any, name: str = "wf") -> Any:
    def first(x):
        ledger.add("first")
        return x + 1

    def second(x):
        ledger.add("second")
        return x * 10

    return Flow(name).then(first).then(second).build()


def with_delay(ledger: Any, seconds: float = 0.15) -> Any:
    def first(x):
        ledger.add("first")
        return x + 1

    def second(x):
        ledger.add("second")
        return x * 10

    return Flow("delayed").then(first).delay("nap", seconds).then(second).build()


def check_shape(status: WorkflowStatus) -> None:
    for field in FIELDS:
        assert hasattr(status, field), field
    truths = [name for name in PREDICATES if getattr(status, name)()]
    assert truths == [f"is_{status.status}"], (status.status, truths)


# -- conflict policies ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [None, "fail"])
def test_fail_policy_raises_instance_already_exists(backend, iid, ledger, policy):
    wf = counted(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    ledger.clear()
    with pytest.raises(InstanceAlreadyExistsError) as info:
        run_durable_workflow(wf, iid, 2, backend=backend, conflict_policy=policy)
    assert str(info.value) == f"Workflow instance already exists: {iid}"
    assert isinstance(info.value, WorkflowError)
    assert ledger.entries == []
    assert resume_workflow(wf, iid, backend).output == 20


def test_use_existing_returns_stored_completed_status(backend, iid, ledger):
    wf = counted(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    ledger.clear()
    status = run_durable_workflow(wf, iid, 99, backend=backend, conflict_policy="use_existing")
    assert status.status == "completed" and status.output == 20
    assert ledger.entries == []


def test_use_existing_does_not_advance_parked_instance(backend, iid, ledger, same_wake_at):
    wf = with_delay(ledger, 0.1)
    first = run_durable_workflow(wf, iid, 1, backend=backend)
    time.sleep(0.15)
    ledger.clear()
    status = run_durable_workflow(wf, iid, 5, backend=backend, conflict_policy="use_existing")
    assert status.status in ("waiting", "in_progress")
    if status.status == "waiting":
        assert same_wake_at(status.wake_at, first.wake_at) and status.delay_id == "nap"
    assert ledger.entries == []
    done = resume_workflow(wf, iid, backend)
    assert done.output == 20, "the original input is kept"


def test_use_existing_returns_failed_status(backend, iid):
    def boom(x):
        raise ValueError("old failure")

    wf = Flow("f").then(boom).build()
    run_durable_workflow(wf, iid, 1, backend=backend)
    status = run_durable_workflow(wf, iid, 1, backend=backend, conflict_policy="use_existing")
    assert status.status == "failed" and status.error == "ValueError: old failure"


def test_use_existing_without_existing_instance_runs(backend, iid, ledger):
    status = run_durable_workflow(
        counted(ledger), iid, 1, backend=backend, conflict_policy="use_existing"
    )
    assert status.output == 20 and ledger.entries == ["first", "second"]


def test_terminate_existing_starts_fresh(backend, iid, ledger):
    wf = counted(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    ledger.clear()
    status = run_durable_workflow(wf, iid, 2, backend=backend, conflict_policy="terminate_existing")
    assert status.status == "completed" and status.output == 30
    assert ledger.entries == ["first", "second"], "old checkpoints must not be reused"
    assert WorkflowClient(backend).get_task_result(iid, "first") == 3


def test_terminate_existing_clears_cancelled_state_and_requests(backend, iid, ledger):
    wf = with_delay(ledger, 30)
    run_durable_workflow(wf, iid, 1, backend=backend)
    cancel_workflow(iid, backend, reason="old")
    fast = counted(ledger, "delayed")
    # A different definition: terminate_existing skips the definition check.
    status = run_durable_workflow(
        fast, iid, 1, backend=backend, conflict_policy="terminate_existing"
    )
    assert status.status == "completed" and status.output == 20
    assert status.reason is None and status.cancelled_by is None


def test_terminate_existing_drops_pending_pause_request(backend, iid, ledger, crash_cls):
    def first(x):
        ledger.add("first")
        pause_workflow(iid, backend, reason="old pause")
        raise crash_cls  # dies with the request pending

    wf = Flow("pending").then(first).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    fresh = Flow("pending").then(lambda x: x + 1, name="first").build()
    status = run_durable_workflow(
        fresh, iid, 1, backend=backend, conflict_policy="terminate_existing"
    )
    assert status.status == "completed" and status.output == 2


def test_terminate_existing_on_parked_signal_keeps_buffered_events(backend, iid):
    wf = Flow("sig").wait_for_signal("go").then(lambda p: p, name="echo").build()
    run_durable_workflow(wf, iid, 0, backend=backend)
    send_signal(iid, "go", "kept", backend)
    status = run_durable_workflow(wf, iid, 0, backend=backend, conflict_policy="terminate_existing")
    assert status.status == "completed" and status.output == "kept"


@pytest.mark.parametrize("policy", ["fail", "use_existing"])
def test_definition_mismatch_checked_before_policy(backend, iid, ledger, policy):
    wf = counted(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    changed = Flow("wf").then(lambda x: x, name="first").build()
    with pytest.raises(WorkflowError) as info:
        run_durable_workflow(changed, iid, 1, backend=backend, conflict_policy=policy)
    assert not isinstance(info.value, InstanceAlreadyExistsError)
    assert str(info.value).startswith(
        f"Workflow definition mismatch: expected hash '{changed.definition_hash}', "
        f"found '{wf.definition_hash}'"
    )


def test_terminate_existing_skips_definition_check(backend, iid, ledger):
    run_durable_workflow(counted(ledger), iid, 1, backend=backend)
    changed = Flow("wf").then(lambda x: -x, name="neg").build()
    status = run_durable_workflow(
        changed, iid, 4, backend=backend, conflict_policy="terminate_existing"
    )
    assert status.output == -4
    assert resume_workflow(changed, iid, backend).output == -4


def test_invalid_conflict_policy(backend, iid, ledger):
    expected = (
        'invalid conflict_policy: "nope" (expected "fail", "use_existing", or "terminate_existing")'
    )
    with pytest.raises(ValueError) as info:
        run_durable_workflow(counted(ledger), iid, 1, backend=backend, conflict_policy="nope")
    assert str(info.value) == expected
    assert ledger.entries == []
    with pytest.raises(ValueError, match=re.escape(expected)):
        DurableEngine(backend, "nope")
    with pytest.raises(ValueError, match=re.escape(expected)):
        WorkflowClient(backend, conflict_policy="nope")
    with pytest.raises(BackendError):
        WorkflowClient(backend).status(iid)  # nothing was stored


def test_instances_are_independent(backend, iid, ledger):
    wf = counted(ledger)
    a = run_durable_workflow(wf, iid + "-a", 1, backend=backend)
    b = run_durable_workflow(wf, iid + "-b", 2, backend=backend)
    assert (a.output, b.output) == (20, 30)


# -- resume, row by row -----------------------------------------------------------------------


def test_resume_not_found(backend, iid, ledger):
    with pytest.raises(WorkflowError) as info:
        resume_workflow(counted(ledger), iid, backend)
    assert isinstance(info.value, BackendError)
    assert "not found" in str(info.value)
    assert str(info.value) == f"Snapshot not found: {iid}"


def test_resume_with_different_definition_names_both_hashes(backend, iid, ledger):
    wf = with_delay(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    changed = Flow("delayed").then(lambda x: x, name="first").delay("nap", 0.15).build()
    assert changed.definition_hash != wf.definition_hash
    ledger.clear()
    with pytest.raises(WorkflowError) as info:
        resume_workflow(changed, iid, backend)
    text = str(info.value)
    assert text.startswith("Workflow definition mismatch: expected hash '")
    assert changed.definition_hash in text and wf.definition_hash in text
    assert text.index(changed.definition_hash) < text.index(wf.definition_hash)
    assert ledger.entries == []


def test_resume_completed_returns_stored_output(backend, iid, ledger):
    wf = counted(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 20
    check_shape(status)
    assert ledger.entries == []


def test_resume_failed_keeps_error(backend, iid, ledger):
    def boom(x):
        ledger.add("boom")
        raise RuntimeError("first error")

    wf = Flow("f").then(boom).build()
    run_durable_workflow(wf, iid, 1, backend=backend)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed" and status.error == "RuntimeError: first error"
    check_shape(status)
    assert ledger.count("boom") == 1


def test_resume_cancelled_and_paused_keep_reason_and_by(backend, iid, ledger):
    wf = with_delay(ledger, 30)
    run_durable_workflow(wf, iid + "-c", 1, backend=backend)
    run_durable_workflow(wf, iid + "-p", 1, backend=backend)
    cancel_workflow(iid + "-c", backend, reason="rc", cancelled_by="bc")
    pause_workflow(iid + "-p", backend, reason="rp", paused_by="bp")
    c = resume_workflow(wf, iid + "-c", backend)
    p = resume_workflow(wf, iid + "-p", backend)
    assert (c.status, c.reason, c.cancelled_by, c.paused_by) == ("cancelled", "rc", "bc", None)
    assert (p.status, p.reason, p.paused_by, p.cancelled_by) == ("paused", "rp", "bp", None)
    check_shape(c)
    check_shape(p)


@pytest.mark.parametrize("kind", ["cancel", "pause"])
def test_resume_applies_pending_request_before_running(backend, iid, ledger, kind):
    wf = counted(ledger)
    WorkflowClient(backend).submit(wf, iid, 1)  # stored, nobody executes it
    if kind == "cancel":
        cancel_workflow(iid, backend, reason="pending", cancelled_by="x")
    else:
        pause_workflow(iid, backend, reason="pending", paused_by="x")
    status = resume_workflow(wf, iid, backend)
    assert status.status == ("cancelled" if kind == "cancel" else "paused")
    assert status.reason == "pending"
    assert ledger.entries == []


def test_resume_crashed_run_reruns_from_first_unfinished_step(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def first(x):
        ledger.add("first")
        return x + 1

    def second(x):
        ledger.add("second")
        if crashes:
            raise crashes.pop()
        return x * 10

    def third(x):
        ledger.add("third")
        return x - 1

    wf = Flow("crash").then(first).then(second).then(third).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    assert WorkflowClient(backend).status(iid).status == "in_progress"
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 19
    assert ledger.entries == ["second", "third"]


def test_resume_submitted_instance_runs_it(backend, iid, ledger):
    wf = counted(ledger)
    submitted = WorkflowClient(backend).submit(wf, iid, 4)
    assert submitted.status == "in_progress" and submitted.is_in_progress()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 50


# -- instance ids -----------------------------------------------------------------------------


def test_empty_instance_id_rejected(backend, ledger):
    with pytest.raises(WorkflowError) as info:
        run_durable_workflow(counted(ledger), "", 1, backend=backend)
    assert str(info.value) == "instance_id must not be empty"
    assert ledger.entries == []


def test_instance_id_over_256_bytes_rejected(backend, ledger):
    with pytest.raises(WorkflowError) as info:
        run_durable_workflow(counted(ledger), "x" * 300, 1, backend=backend)
    assert str(info.value) == "instance_id length 300 exceeds maximum 256 bytes"
    with pytest.raises(WorkflowError, match="instance_id length 300 exceeds maximum 256 bytes"):
        run_durable_workflow(counted(ledger), "é" * 150, 1, backend=backend)  # 300 bytes UTF-8
    with pytest.raises(WorkflowError, match="instance_id must not be empty"):
        WorkflowClient(backend).submit(counted(ledger), "", 1)
    assert ledger.entries == []


def test_instance_id_of_256_bytes_and_unicode_accepted(backend, ledger):
    long_id = "y" * 256
    assert run_durable_workflow(counted(ledger), long_id, 1, backend=backend).output == 20
    uid = "commande-été-✓/1 ?&'\""
    assert run_durable_workflow(counted(ledger), uid, 2, backend=backend).output == 30
    assert resume_workflow(counted(ledger), uid, backend).output == 30


# -- WorkflowStatus ---------------------------------------------------------------------------


def test_status_repr_formats(backend, iid, ledger):
    done = run_durable_workflow(counted(ledger), iid + "-done", 1, backend=backend)
    assert repr(done) == "WorkflowStatus::Completed"
    check_shape(done)

    def boom(x):
        raise ValueError("bad thing")

    failed = run_durable_workflow(Flow("f").then(boom).build(), iid + "-f", 1, backend=backend)
    assert repr(failed) == "WorkflowStatus::Failed(ValueError: bad thing)"
    check_shape(failed)

    wf = with_delay(ledger, 30)
    waiting = run_durable_workflow(wf, iid + "-w", 1, backend=backend)
    assert repr(waiting) == (
        f'WorkflowStatus::Waiting(delay_id=Some("nap"), wake_at=Some("{waiting.wake_at}"))'
    )
    check_shape(waiting)

    cancel_workflow(iid + "-w", backend, reason="r", cancelled_by="me")
    cancelled = resume_workflow(wf, iid + "-w", backend)
    assert repr(cancelled) == 'WorkflowStatus::Cancelled(reason=Some("r"), by=Some("me"))'
    check_shape(cancelled)

    run_durable_workflow(wf, iid + "-c2", 1, backend=backend)
    cancel_workflow(iid + "-c2", backend)
    bare = resume_workflow(wf, iid + "-c2", backend)
    assert repr(bare) == "WorkflowStatus::Cancelled(reason=None, by=None)"

    run_durable_workflow(wf, iid + "-p", 1, backend=backend)
    pause_workflow(iid + "-p", backend, reason="maint", paused_by="ops")
    paused = resume_workflow(wf, iid + "-p", backend)
    assert repr(paused) == 'WorkflowStatus::Paused(reason=Some("maint"), by=Some("ops"))'
    check_shape(paused)

    sig = Flow("s").wait_for_signal("go", name="wait_go").build()
    awaiting = run_durable_workflow(sig, iid + "-s", 1, backend=backend)
    assert repr(awaiting) == (
        'WorkflowStatus::AwaitingSignal(signal_name=Some("go"), signal_id=Some("wait_go"), '
        "wake_at=None)"
    )
    check_shape(awaiting)

    submitted = WorkflowClient(backend).submit(counted(ledger), iid + "-sub", 1)
    assert repr(submitted) == "WorkflowStatus::in_progress"
    check_shape(submitted)


def test_status_fields_not_applicable_are_none(backend, iid, ledger):
    done = run_durable_workflow(counted(ledger), iid, 1, backend=backend)
    assert [getattr(done, f) for f in FIELDS[2:]] == [None] * (len(FIELDS) - 2)


def test_status_attributes_are_read_only_or_independent(backend, iid, ledger):
    wf = counted(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    first = resume_workflow(wf, iid, backend)
    with contextlib.suppress(AttributeError):
        first.output = "changed"
    assert resume_workflow(wf, iid, backend).output == 20


def _variant(kind: str) -> Any:
    from sayiir import RetryPolicy, task

    retries = RetryPolicy(max_retries=2 if kind == "retries" else 1, initial_delay_secs=0.1)
    timeout = "2s" if kind == "timeout" else "1s"

    @task("step", retries=retries, timeout=timeout)
    def step(x):
        return x

    flow = Flow("v").then(step)
    flow = flow.delay("nap", 60 if kind == "delay" else 30)
    flow = flow.wait_for_signal("other" if kind == "signal" else "go")
    if kind == "extra":
        flow = flow.then(lambda x: x, name="extra")
    return flow.build()


@pytest.mark.parametrize("kind", ["retries", "timeout", "delay", "signal", "extra"])
def test_structural_change_blocks_resume(backend, iid, kind):
    original = _variant("base")
    assert run_durable_workflow(original, iid, 1, backend=backend).status == "waiting"
    changed = _variant(kind)
    assert changed.definition_hash != original.definition_hash
    with pytest.raises(WorkflowError, match="Workflow definition mismatch"):
        resume_workflow(changed, iid, backend)
    assert resume_workflow(_variant("base"), iid, backend).status == "waiting"


def test_changed_task_code_resumes_with_new_code(backend, iid, crash_cls):
    crashes = [crash_cls()]

    def step(x):
        if crashes:
            raise crashes.pop()
        return "old"

    old = Flow("code").then(echo_task).then(step).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(old, iid, 1, backend=backend)

    def step2(x):
        return "new"

    new = Flow("code").then(echo_task).then(step2, name="step").build()
    assert new.definition_hash == old.definition_hash
    assert resume_workflow(new, iid, backend).output == "new"


def echo_task(x: Any) -> Any:
    return x


@pytest.mark.parametrize("policy", ["fail", "use_existing"])
def test_conflict_check_comes_before_input_encoding(backend, iid, ledger, policy):
    wf = counted(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    if policy == "fail":
        with pytest.raises(InstanceAlreadyExistsError):
            run_durable_workflow(wf, iid, {1, 2}, backend=backend, conflict_policy=policy)
    else:
        status = run_durable_workflow(wf, iid, {1, 2}, backend=backend, conflict_policy=policy)
        assert status.status == "completed" and status.output == 20


def test_instance_id_is_validated_before_input(backend, ledger):
    with pytest.raises(WorkflowError, match="instance_id must not be empty"):
        run_durable_workflow(counted(ledger), "", {1, 2}, backend=backend)
