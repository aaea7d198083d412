"""``WorkflowClient`` (spec §17.1), ``WorkflowEngine``/``DurableEngine`` with ``_inner`` and
``_task_registry`` (§7.1, §9.5, §9.6), concurrent use of one backend (§19)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sayiir import (
    BackendError,
    DurableEngine,
    Flow,
    InMemoryBackend,
    InstanceAlreadyExistsError,
    TaskError,
    WorkflowClient,
    WorkflowEngine,
    WorkflowError,
    resume_workflow,
    run_durable_workflow,
    run_workflow,
    task,
)


@task("double")
def double(x: int) -> int:
    return x * 2


def add_one(x: int) -> int:
    return x + 1


def counted(ledger: Any) -> Any:
    def first(x):
        ledger.add("first")
        return x + 1

    def second(x):
        ledger.add("second")
        return x * 10

    return Flow("counted").then(first).then(second).build()


# -- WorkflowClient ---------------------------------------------------------------------------


def test_submit_stores_without_executing(backend, iid, ledger):
    wf = counted(ledger)
    client = WorkflowClient(backend)
    status = client.submit(wf, iid, 4)
    assert status.status == "in_progress" and status.is_in_progress()
    assert ledger.entries == []
    stored = client.status(iid)
    assert stored.status == "in_progress" and stored.output is None
    assert client.get_task_result(iid, "first") is None
    done = resume_workflow(wf, iid, backend)
    assert done.output == 50
    assert client.status(iid).status == "completed"
    assert client.status(iid).output == 50


def test_submit_conflicts(backend, iid, ledger):
    wf = counted(ledger)
    WorkflowClient(backend).submit(wf, iid, 1)
    with pytest.raises(
        InstanceAlreadyExistsError, match=f"Workflow instance already exists: {iid}"
    ):
        WorkflowClient(backend).submit(wf, iid, 1)
    existing = WorkflowClient(backend, conflict_policy="use_existing").submit(wf, iid, 2)
    assert existing.status == "in_progress"
    resume_workflow(wf, iid, backend)
    done = WorkflowClient(backend, conflict_policy="use_existing").submit(wf, iid, 3)
    assert done.status == "completed" and done.output == 20
    fresh = WorkflowClient(backend, conflict_policy="terminate_existing").submit(wf, iid, 3)
    assert fresh.status == "in_progress"
    assert WorkflowClient(backend).get_task_result(iid, "first") is None
    assert resume_workflow(wf, iid, backend).output == 40


def test_submit_definition_mismatch(backend, iid, ledger):
    WorkflowClient(backend).submit(counted(ledger), iid, 1)
    other = Flow("counted").then(add_one).build()
    with pytest.raises(WorkflowError, match="Workflow definition mismatch"):
        WorkflowClient(backend, conflict_policy="use_existing").submit(other, iid, 1)


def test_submit_unserializable_input(backend, iid, ledger):
    with pytest.raises(TypeError):
        WorkflowClient(backend).submit(counted(ledger), iid, {1, 2})
    with pytest.raises(BackendError):
        WorkflowClient(backend).status(iid)


def test_status_and_task_result_of_unknown_instance(backend):
    client = WorkflowClient(backend)
    with pytest.raises(BackendError) as info:
        client.status("nope-unknown")
    assert str(info.value) == "Snapshot not found: nope-unknown"
    with pytest.raises(BackendError) as info:
        client.get_task_result("nope-unknown", "first")
    assert str(info.value) == "Snapshot not found: nope-unknown"


def test_get_task_result_per_step(backend, iid, ledger):
    wf = counted(ledger)
    run_durable_workflow(wf, iid, 1, backend=backend)
    client = WorkflowClient(backend)
    assert client.get_task_result(iid, "first") == 2
    assert client.get_task_result(iid, "second") == 20
    assert client.get_task_result(iid, "no-such-task") is None


def test_get_task_result_of_failed_instance(backend, iid):
    def ok(x):
        return {"k": (x,)}

    def boom(x):
        raise ValueError("no")

    run_durable_workflow(Flow("f").then(ok).then(boom).build(), iid, 1, backend=backend)
    client = WorkflowClient(backend)
    assert client.status(iid).status == "failed"
    assert client.status(iid).error == "ValueError: no"
    assert client.get_task_result(iid, "ok") == {"k": [1]}
    assert client.get_task_result(iid, "boom") is None


def test_get_task_result_of_none_output(backend, iid):
    run_durable_workflow(
        Flow("n").then(lambda x: None, name="nothing").build(), iid, 1, backend=backend
    )
    assert WorkflowClient(backend).get_task_result(iid, "nothing") is None


def test_client_signal_to_unknown_instance_is_buffered(backend, iid):
    client = WorkflowClient(backend)
    client.send_signal(iid, "go", {"early": True})
    wf = Flow("s").wait_for_signal("go").build()
    assert run_durable_workflow(wf, iid, None, backend=backend).output == {"early": True}


def test_client_never_executes_parked_instances(backend, iid, ledger):
    def after(x):
        ledger.add("after")
        return x

    wf = Flow("s").wait_for_signal("go").then(after).build()
    run_durable_workflow(wf, iid, None, backend=backend)
    client = WorkflowClient(backend)
    client.send_signal(iid, "go", 1)
    st = client.status(iid)
    assert st.status in ("awaiting_signal", "in_progress")
    if st.status == "awaiting_signal":
        assert st.signal_name == "go" and st.signal_id == "go"
    assert ledger.entries == []


def test_client_rejects_other_backend_types():
    with pytest.raises(TypeError):
        WorkflowClient(object())


# -- WorkflowEngine ---------------------------------------------------------------------------


def test_workflow_engine_with_inner_and_registry():
    wf = Flow("adv").then(double).then(add_one).build()
    engine = WorkflowEngine()
    assert repr(engine) == "WorkflowEngine()"
    assert engine.run(wf._inner, 21, wf._task_registry) == 43


def test_workflow_engine_accepts_a_workflow():
    wf = Flow("adv").then(double).build()
    assert WorkflowEngine().run(wf, 4, wf._task_registry) == 8


def test_workflow_engine_registry_is_looked_up_at_run_time():
    wf = Flow("adv").then(double).then(add_one).build()
    registry = dict(wf._task_registry)
    registry["double"] = lambda x: x * 100
    assert WorkflowEngine().run(wf._inner, 2, registry) == 201


def test_missing_task_in_registry_plain():
    wf = Flow("adv").then(double).then(add_one).build()
    registry = {"double": wf._task_registry["double"]}
    with pytest.raises(TaskError) as info:
        WorkflowEngine().run(wf._inner, 2, registry)
    assert "Task 'add_one' not found" in str(info.value)
    assert str(info.value).startswith("KeyError")


# -- DurableEngine ----------------------------------------------------------------------------


def test_durable_engine_with_inner_and_registry(backend, iid, ledger):
    wf = counted(ledger)
    engine = DurableEngine(backend)
    assert repr(engine).startswith("DurableEngine(")
    status = engine.run(wf._inner, iid, 21, wf._task_registry)
    assert status.status == "completed" and status.output == 220
    again = engine.resume(wf._inner, iid, wf._task_registry)
    assert again.output == 220
    assert ledger.entries == ["first", "second"]


def test_durable_engine_missing_task_fails_the_run(backend, iid):
    wf = Flow("adv").then(double).then(add_one).build()
    registry = {"double": wf._task_registry["double"]}
    status = DurableEngine(backend).run(wf._inner, iid, 2, registry)
    assert status.status == "failed"
    assert status.error is not None and "Task 'add_one' not found" in status.error
    assert status.error.startswith("KeyError")


def test_durable_engine_resume_with_replaced_implementation(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def second(x):
        if crashes:
            raise crashes.pop()
        return x

    wf = Flow("swap").then(double).then(second).build()
    engine = DurableEngine(backend)
    with pytest.raises(crash_cls):
        engine.run(wf._inner, iid, 5, wf._task_registry)
    registry = dict(wf._task_registry)
    registry["second"] = lambda x: f"new code got {x}"
    status = engine.resume(wf._inner, iid, registry)
    assert status.output == "new code got 10"


def test_durable_engine_rejects_other_backend_types():
    with pytest.raises(TypeError, match="backend must be InMemoryBackend"):
        DurableEngine(object())
    with pytest.raises(TypeError):
        run_durable_workflow(Flow("x").then(add_one).build(), "i", 1, backend={"not": "backend"})


def test_engines_and_helpers_share_one_backend(backend, iid, ledger):
    wf = Flow("share").then(add_one).delay("d", 0).then(double).build()
    DurableEngine(backend).run(wf._inner, iid, 1, wf._task_registry)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 4
    assert WorkflowClient(backend).status(iid).output == 4


def test_two_in_memory_backends_are_independent(iid):
    wf = Flow("ind").then(add_one).build()
    a, b = InMemoryBackend(), InMemoryBackend()
    assert repr(a) == "InMemoryBackend()"
    run_durable_workflow(wf, iid, 1, backend=a)
    assert run_durable_workflow(wf, iid, 5, backend=b).output == 6
    with pytest.raises(BackendError, match="not found"):
        resume_workflow(wf, iid + "-x", a)


# -- concurrency (§19) ------------------------------------------------------------------------


def test_same_workflow_from_many_threads(backend, iid):
    import time

    def slowish(x):
        time.sleep(0.01)
        return x * 2

    wf = Flow("threads").then(slowish).then(add_one).build()
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            results[n] = run_durable_workflow(wf, f"{iid}-{n}", n, backend=backend).output
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert results == {n: n * 2 + 1 for n in range(8)}


def test_plain_runs_from_many_threads():
    wf = Flow("pthreads").then(double).then(add_one).build()
    out: list[Any] = [None] * 8

    def worker(n: int) -> None:
        out[n] = run_workflow(wf, n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert out == [n * 2 + 1 for n in range(8)]


def test_control_calls_while_another_thread_runs(backend, iid, ledger):
    gate = threading.Event()
    started = threading.Event()

    def first(x):
        started.set()
        gate.wait(5)
        return x

    wf = Flow("ctl").then(first).then(add_one).build()
    box: list[Any] = []
    t = threading.Thread(
        target=lambda: box.append(run_durable_workflow(wf, iid, 1, backend=backend))
    )
    t.start()
    assert started.wait(5)
    client = WorkflowClient(backend)
    # The run holds no lock that blocks other callers of the same backend.
    assert client.status(iid).status == "in_progress"
    client.send_signal(iid, "unrelated", 1)
    gate.set()
    t.join(5)
    assert box[0].status == "completed" and box[0].output == 2


def test_get_task_result_of_loop_body_with_path_like_id(backend, iid):
    from sayiir import LoopResult

    def body(x):
        return LoopResult.done(x) if x >= 2 else LoopResult.again(x + 1)

    wf = Flow("odd-ids").loop(body, name="charge@v2/step").build()
    assert run_durable_workflow(wf, iid, 0, backend=backend).output == 2
    result = WorkflowClient(backend).get_task_result(iid, "charge@v2/step")
    assert result == {"_loop": "done", "value": 2}
