"""Bad input: build-time errors, unknown ids, and undecodable stored payloads (spec §8.3, §12,
reliability plan R14)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from sayiir import (
    BackendError,
    Flow,
    LoopResult,
    WorkflowClient,
    WorkflowError,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
)
from sayiir.core.records import StepRecord
from sayiir.errors import DeserializationError


def double(x: int) -> int:
    return x * 2


def add_one(x: int) -> int:
    return x + 1


# -- build time -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Flow("b").then(42),  # type: ignore[arg-type]
        lambda: Flow("b").then("double"),  # type: ignore[arg-type]
        lambda: Flow("b").fork().branch(double, None).join(add_one),  # type: ignore[arg-type]
        lambda: Flow("b").fork().branch(double).join(3.5),  # type: ignore[arg-type]
        lambda: Flow("b").loop(7),  # type: ignore[arg-type]
        lambda: Flow("b").route(123, keys=["a"]),  # type: ignore[arg-type]
        lambda: Flow("b").route(double, keys=["a"]).branch("a", "nope"),  # type: ignore[arg-type]
    ],
    ids=["then", "then-str", "branch", "join", "loop", "route-key", "route-branch"],
)
def test_non_callable_task_is_a_clear_error_at_build(build):
    with pytest.raises((TypeError, ValueError)) as info:
        build().build()
    text = str(info.value)
    assert text, "the error must say what is wrong"
    assert any(word in text for word in ("callable", "function", "Workflow", "task")), text


def test_same_task_in_two_route_branches_is_allowed(path):
    wf = (
        Flow("rb")
        .route(lambda x: "a" if x > 0 else "b", keys=["a", "b"])
        .branch("a", double)
        .branch("b", double)
        .done()
        .build()
    )
    out = path.run(wf, 3)
    assert out.ok, out.error
    assert out.value == {"branch": "a", "result": 6}


def test_same_task_with_name_is_fine(path):
    wf = Flow("n").then(double).then(double, name="double_again").build()
    out = path.run(wf, 3)
    assert out.ok and out.value == 12


def test_empty_flow_and_empty_branches():
    with pytest.raises(ValueError, match="Workflow must have at least one task"):
        Flow("empty").build()
    with pytest.raises(ValueError, match="branch\\(\\) requires at least one task function"):
        Flow("f").fork().branch()
    with pytest.raises(ValueError, match="Fork must have at least one branch"):
        Flow("f").fork().join(add_one)
    with pytest.raises(ValueError, match="Loop 'loop_0': max_iterations must be at least 1"):
        Flow("l").loop(add_one, max_iterations=0)
    with pytest.raises(ValueError, match="Invalid on_max policy: 'x'"):
        Flow("l").loop(add_one, on_max="x")


# -- unknown ids ------------------------------------------------------------------------------


def test_unknown_instance_everywhere(backend):
    wf = Flow("u").then(add_one).build()
    missing = "does-not-exist-42"
    calls: list[Callable[[], Any]] = [
        lambda: resume_workflow(wf, missing, backend),
        lambda: WorkflowClient(backend).status(missing),
        lambda: WorkflowClient(backend).get_task_result(missing, "add_one"),
        lambda: WorkflowClient(backend).cancel(missing),
        lambda: WorkflowClient(backend).pause(missing),
        lambda: WorkflowClient(backend).unpause(missing),
    ]
    for call in calls:
        with pytest.raises(BackendError) as info:
            call()
        assert isinstance(info.value, WorkflowError)
        assert "not found" in str(info.value)
        assert missing in str(info.value)


def test_signal_to_finished_runs_is_refused(backend, iid):
    def boom(x):
        raise ValueError("x")

    run_durable_workflow(Flow("ok").then(add_one).build(), iid + "-ok", 1, backend=backend)
    run_durable_workflow(Flow("bad").then(boom).build(), iid + "-bad", 1, backend=backend)
    for target in (iid + "-ok", iid + "-bad"):
        with pytest.raises(BackendError):
            WorkflowClient(backend).send_signal(target, "s", 1)


# -- undecodable stored payloads --------------------------------------------------------------


GARBAGE = [b"\xff\xfe not json \x00", b"{truncated", b'{"__sayiir__": "nonsense", "v": 1}']


def parked_flow(ledger: Any) -> Any:
    def first(x):
        ledger.add("first")
        return {"n": x}

    def second(x):
        ledger.add("second")
        return x["n"] * 10

    return Flow("corrupt").then(first).delay("nap", 0.1).then(second).build()


@pytest.mark.parametrize("garbage", GARBAGE, ids=["bytes", "truncated", "bad-tag"])
def test_corrupt_checkpoint_fails_only_that_run(backend, iid, ledger, garbage):
    wf = parked_flow(ledger)
    bad, good = iid + "-bad", iid + "-good"
    assert run_durable_workflow(wf, bad, 1, backend=backend).status == "waiting"
    assert run_durable_workflow(wf, good, 2, backend=backend).status == "waiting"
    backend.save_steps(bad, [StepRecord("first", garbage, "first")])
    time.sleep(0.12)
    ledger.clear()
    status = resume_workflow(wf, bad, backend)
    assert status.status == "failed", status
    assert status.error is not None
    assert "checkpoint 'first'" in status.error
    assert bad in status.error
    assert ledger.entries == [], "no task may run on a corrupt checkpoint"
    # No retry loop: the failure is terminal and stays the same.
    again = resume_workflow(wf, bad, backend)
    assert again.status == "failed" and again.error == status.error
    assert WorkflowClient(backend).status(bad).status == "failed"
    # Other instances are unaffected.
    ok = resume_workflow(wf, good, backend)
    assert ok.status == "completed" and ok.output == 20
    assert ledger.entries == ["second"]


def test_corrupt_checkpoint_read_by_client_is_a_deserialization_error(backend, iid, ledger):
    wf = parked_flow(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    backend.save_steps(iid, [StepRecord("first", b"\xff garbage", "first")])
    with pytest.raises(DeserializationError) as info:
        WorkflowClient(backend).get_task_result(iid, "first")
    assert isinstance(info.value, WorkflowError)
    assert "first" in str(info.value)


def test_corrupt_fork_branch_checkpoint(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def a(x):
        ledger.add("a")
        return 1

    def b(x):
        ledger.add("b")
        if crashes:
            raise crashes.pop()
        return 2

    wf = Flow("cf").fork().branch(a).branch(b).join(lambda d: d, name="j").build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 0, backend=backend)
    backend.save_steps(iid, [StepRecord("a", b"not-json", "a")])
    ledger.clear()
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed"
    assert status.error is not None and "checkpoint 'a'" in status.error


def test_corrupt_loop_iteration_checkpoint(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def body(x):
        ledger.add(f"body{x}")
        if x == 2 and crashes:
            raise crashes.pop()
        return LoopResult.done(x) if x >= 3 else LoopResult.again(x + 1)

    wf = Flow("cl").loop(body).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 0, backend=backend)
    backend.save_steps(iid, [StepRecord("loop_0@1/body", b"\x00\x01", "body")])
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed"
    assert status.error is not None and "checkpoint 'loop_0@1/body'" in status.error


def test_corrupt_signal_payload(backend, iid, ledger):
    def after(x):
        ledger.add("after")
        return x

    wf = Flow("cs").wait_for_signal("go").then(after).build()
    run_durable_workflow(wf, iid, 0, backend=backend)
    backend.send_signal(iid, "go", b"\xff\xff")  # bypasses the encoder, like a bad writer would
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed"
    assert status.error is not None and "go" in status.error
    assert ledger.entries == []


def test_plain_path_rejects_bad_input_before_running(ledger):
    def first(x):
        ledger.add("first")
        return x

    with pytest.raises(TypeError):
        run_workflow(Flow("p").then(first).build(), object())
    assert ledger.entries == []


def _sql_update(backend_kind: str, request: Any, sql: str, params: tuple[Any, ...]) -> None:
    """Write straight into the database, behind the backend's back (a bad writer, bit rot)."""
    if backend_kind == "sqlite":
        import sqlite3

        lite = sqlite3.connect(request.getfixturevalue("tmp_path") / "s.db")
        try:
            assert lite.execute(sql, params).rowcount == 1
            lite.commit()
        finally:
            lite.close()
    else:
        import psycopg

        query: Any = sql.replace("?", "%s")
        with psycopg.connect(request.getfixturevalue("pg_dsn"), autocommit=True) as conn:
            assert conn.execute(query, params).rowcount == 1


@pytest.mark.parametrize("target", ["checkpoint", "input", "output"])
def test_corrupt_row_written_with_sql(backend, backend_kind, iid, ledger, request, target):
    if backend_kind == "memory":
        pytest.skip("no SQL behind the in-memory backend")
    wf = parked_flow(ledger)
    bad, good = iid + "-bad", iid + "-good"
    run_durable_workflow(wf, good, 2, backend=backend)
    if target == "output":
        done = Flow("done").then(lambda x: x, name="same").build()
        run_durable_workflow(done, bad, 1, backend=backend)
        _sql_update(
            backend_kind,
            request,
            "UPDATE sayiir_workflow_instances SET output = ? WHERE instance_id = ?",
            (b"\xff not json", bad),
        )
        with pytest.raises(WorkflowError) as info:
            WorkflowClient(backend).status(bad)
        assert bad in str(info.value)
        time.sleep(0.12)
        assert resume_workflow(wf, good, backend).output == 20
        return
    run_durable_workflow(wf, bad, 1, backend=backend)
    if target == "checkpoint":
        sql = "UPDATE sayiir_checkpoints SET output = ? WHERE instance_id = ? AND key = ?"
        _sql_update(backend_kind, request, sql, (b"{broken", bad, "first"))
    else:
        sql = "UPDATE sayiir_workflow_instances SET input = ? WHERE instance_id = ?"
        _sql_update(backend_kind, request, sql, (b"\x00\x01", bad))
        # The input is only read again if a step has to be re-run from the start.
        _sql_update(
            backend_kind,
            request,
            "DELETE FROM sayiir_checkpoints WHERE instance_id = ? AND key = ?",
            (bad, "first"),
        )
    time.sleep(0.12)
    ledger.clear()
    status = resume_workflow(wf, bad, backend)
    assert status.status == "failed", status
    assert status.error is not None and bad in status.error
    assert ("checkpoint 'first'" if target == "checkpoint" else "input") in status.error
    assert ledger.entries == []
    assert resume_workflow(wf, bad, backend).error == status.error
    ok = resume_workflow(wf, good, backend)
    assert ok.status == "completed" and ok.output == 20
