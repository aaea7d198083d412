"""Names the engine uses never collide with user names (issue 10 item 5).

Ids may contain any character the reference accepts (``.``, ``-``, ``:``, ``/``, ``@``,
``#``, ``~``...), and the keys of today's runs do not change; ``build()`` refuses only a
workflow in which a user's step would share a checkpoint key with another step (a task
named ``go~timeout`` beside a wait for ``go`` with a timeout). Names no backend can store
(NUL, lone surrogates) are refused the same way on every backend, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sayiir import (
    Flow,
    LoopResult,
    WorkflowClient,
    WorkflowError,
    cancel_workflow,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    send_signal,
    task,
    unpause_workflow,
)


def add_one(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return x * 2


BAD_NAMES = {"nul": "a\x00b", "surrogate": "a\ud800b"}
BAD_REASONS = {"nul": r"contains NUL \(\\x00\)", "surrogate": r"contains a lone surrogate"}


# -- ids the reference accepts keep working --------------------------------------------------


NAMES = ["a.b", "a-b", "a:b", "a::b", "a/b", "a@b", "a#2", "go~timeout", "sp ace", "ünï", "loop_0"]


def test_ids_with_separator_characters_run_everywhere(path):
    steps = Flow("n")
    for name in NAMES:
        steps = steps.then(add_one, name=name)
    out = path.run(steps.delay("d~timeout", 0).then(double, name="x#3").build(), 0)
    assert out.ok, out.error
    assert out.value == len(NAMES) * 2


def test_a_task_named_like_a_route_key_function_moves_the_route_id(path):
    wf = Flow("t").then(add_one, name="branch_0::key_fn").route(str).branch("2", double).done()
    assert [n.id for n in wf.build().iter_nodes()] == ["branch_0::key_fn", "branch_1", "double"]
    out = path.run(wf.build(), 1)
    assert out.ok, out.error
    assert out.value == {"branch": "2", "result": 4}


def test_a_name_like_an_engine_key_is_fine_when_nothing_uses_that_key(backend, iid):
    # No timeout on the wait: it stores no "go~timeout" timer, so the task may have that name.
    wf = Flow("t").then(add_one, name="go~timeout").wait_for_signal("go").then(double).build()
    assert run_durable_workflow(wf, iid, 1, backend=backend).status == "awaiting_signal"
    send_signal(iid, "go", 5, backend)
    assert resume_workflow(wf, iid, backend).output == 10
    assert WorkflowClient(backend).get_task_result(iid, "go~timeout") == 2


# -- collisions are refused at build, naming both steps ----------------------------------------


def test_a_task_named_like_a_signal_timeout_is_refused():
    # Before: the task silently returned the timer's wake-up time on the durable path.
    flow = Flow("t").wait_for_signal("go", timeout=60).then(add_one, name="go~timeout")
    with pytest.raises(ValueError) as info:
        flow.build()
    assert str(info.value) == (
        "the timeout of signal wait 'go' and task 'go~timeout' would share the checkpoint key "
        "'go~timeout': a durable run would give one of them the other's stored result; rename "
        "one of them"
    )


@pytest.mark.parametrize(
    ("build", "text"),
    [
        (
            lambda: (
                Flow("t").then(add_one, name="a#2").then(double, name="a").then(double, name="a")
            ),
            "task 'a#2' and task 'a' (2nd use) would share the checkpoint key 'a#2'",
        ),
        (
            lambda: Flow("t").delay("w", 0).delay("w", 0).then(add_one, name="w#2"),
            "delay 'w' and task 'w#2' would share the checkpoint key 'w#2'",
        ),
        (
            lambda: Flow("t").then(add_one, name="loop_0@1/double").loop(double),
            "task 'loop_0@1/double' has checkpoint key 'loop_0@1/double', which starts like the "
            "keys of the steps of loop 'loop_0'",
        ),
    ],
    ids=["use", "wait-use", "loop"],
)
def test_ids_colliding_with_engine_keys_are_refused(build, text):
    with pytest.raises(ValueError) as info:
        build().build()
    assert str(info.value).startswith(text), str(info.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Flow("t").then(add_one, name=""),
        lambda: Flow("t").delay("", 1),
        lambda: Flow("t").wait_for_signal(""),
        lambda: Flow("t").fork().branch(add_one).branch(double).join(dict, name=""),
    ],
    ids=["task", "delay", "signal", "join"],
)
def test_empty_ids_are_refused(build):
    # The empty key is a run's "continue" entry in the worker queue: a step stored under it
    # would swallow the run's wake-ups there.
    with pytest.raises(ValueError, match=r"^(Task|Delay|Signal) (id|name) must not be empty$"):
        build().build()


# -- names no backend can store: refused at build ----------------------------------------------


@pytest.mark.parametrize("bad", list(BAD_NAMES))
@pytest.mark.parametrize(
    ("what", "build"),
    [
        ("Task id", lambda n: Flow("t").then(add_one, name=n)),
        ("Delay id", lambda n: Flow("t").delay(n, 1)),
        ("Signal name", lambda n: Flow("t").wait_for_signal(n)),
        ("Signal wait id", lambda n: Flow("t").wait_for_signal("s", name=n)),
        ("Child workflow id", lambda n: Flow("t").then(Flow("c").then(double).build(), name=n)),
        ("Workflow name", lambda n: Flow(n).then(add_one)),
    ],
)
def test_unstorable_names_are_refused_at_build(what, build, bad):
    with pytest.raises(ValueError, match=f"^{what} .*{BAD_REASONS[bad]}"):
        build(BAD_NAMES[bad]).build()


# -- names no backend can store: refused at run time, everywhere, before any write --------------


def _waiting(backend: Any, iid: str) -> Any:
    wf = Flow("s").then(add_one).wait_for_signal("go").then(double).build()
    assert run_durable_workflow(wf, iid, 1, backend=backend).status == "awaiting_signal"
    return wf


@pytest.mark.parametrize("bad", list(BAD_NAMES))
def test_send_signal_refuses_an_unstorable_name(backend, iid, bad):
    wf = _waiting(backend, iid)
    client = WorkflowClient(backend)
    for send in (send_signal, lambda *args: client.send_signal(*args[:3])):
        with pytest.raises(WorkflowError, match=f"^Signal name .*{BAD_REASONS[bad]}"):
            send(iid, BAD_NAMES[bad], 5, backend)
    # Nothing was written, and the run goes on with a good signal.
    assert client.status(iid).status == "awaiting_signal"
    send_signal(iid, "go", 5, backend)
    assert resume_workflow(wf, iid, backend).output == 10


@pytest.mark.parametrize("bad", list(BAD_NAMES))
def test_instance_ids_no_backend_can_store_are_refused_everywhere(backend, backend_kind, bad):
    iid = BAD_NAMES[bad]
    wf = Flow("i").then(add_one).build()
    client = WorkflowClient(backend)
    calls: dict[str, Callable[[], Any]] = {
        "run": lambda: run_durable_workflow(wf, iid, 1, backend=backend),
        "submit": lambda: client.submit(wf, iid, 1),
        "resume": lambda: resume_workflow(wf, iid, backend),
        "status": lambda: client.status(iid),
        "task result": lambda: client.get_task_result(iid, "add_one"),
        "cancel": lambda: cancel_workflow(iid, backend),
        "pause": lambda: pause_workflow(iid, backend),
        "unpause": lambda: unpause_workflow(iid, backend),
        "signal": lambda: send_signal(iid, "go", 1, backend),
    }
    for name, call in calls.items():
        with pytest.raises(WorkflowError, match=f"^instance_id .*{BAD_REASONS[bad]}"):
            call()
            pytest.fail(f"{name} accepted the id")
    if bad == "nul" and backend_kind != "postgres":  # could store it, but holds nothing
        assert backend.get_instance(iid) is None


@pytest.mark.parametrize("bad", list(BAD_NAMES))
def test_task_result_refuses_an_unstorable_task_id(backend, iid, bad):
    run_durable_workflow(Flow("r").then(add_one).build(), iid, 1, backend=backend)
    with pytest.raises(WorkflowError, match=f"^task_id .*{BAD_REASONS[bad]}"):
        WorkflowClient(backend).get_task_result(iid, BAD_NAMES[bad])


# -- lookups by task id -------------------------------------------------------------------------


def test_task_result_does_not_mistake_a_slashed_id_for_a_loop_step(backend, iid):
    # "b" never ran; "a/b" did. Before, the loop-step fallback matched any key ending in "/b".
    wf = Flow("r").then(add_one, name="a/b").then(double).build()
    run_durable_workflow(wf, iid, 1, backend=backend)
    client = WorkflowClient(backend)
    assert client.get_task_result(iid, "a/b") == 2
    assert client.get_task_result(iid, "b") is None


# -- runs in flight: today's keys and hashes do not change ---------------------------------------


def test_keys_and_hash_of_a_flow_without_repeated_tasks_are_unchanged(backend, iid):
    """Pinned from main before repeated tasks were accepted: a run started by an earlier
    version resumes under the same hash and finds every checkpoint under the same key."""

    def a(x):
        return x

    @task("t", timeout="2s", retries=3)
    def t(x):
        return x

    def count(x):
        return LoopResult.done(x) if x >= 2 else LoopResult.again(x + 1)

    child = Flow("child").then(lambda x: x, name="c1").build()
    body = Flow("body").then(lambda x: x, name="b1").wait_for_signal("tick").then(count).build()
    wf = (
        Flow("p", metadata={"k": 1}).then(a).then(t).delay("d", 0).delay("d", 0)
        .fork().branch(lambda x: x, name="f1").branch(child).join(lambda d: 0, name="j")
        .route(lambda x: "k", keys=["k"]).branch("k", lambda x: x, name="r").done()
        .then(lambda x: 0, name="zero")
        .loop(body)
        .wait_for_signal("s", timeout=900).then(a, name="last")
        .build()
    )  # fmt: skip
    assert wf.definition_hash == "3f9a1e2d402e100bb302416ea7bb3f27fba79caa152bf779e0c60399a2947fdf"
    run_durable_workflow(wf, iid, 1, backend=backend)
    for tick in range(3):
        send_signal(iid, "tick", tick, backend)
    assert resume_workflow(wf, iid, backend).status == "awaiting_signal"
    send_signal(iid, "s", 5, backend)
    assert resume_workflow(wf, iid, backend).output == 5
    assert sorted(backend.load(iid).checkpoints) == [
        "a", "branch_0::key_fn", "c1", "d", "d#2", "f1", "j", "last",
        "loop_0@0/b1", "loop_0@0/count", "loop_0@0/tick",
        "loop_0@1/b1", "loop_0@1/count", "loop_0@1/tick",
        "loop_0@2/b1", "loop_0@2/count", "loop_0@2/tick",
        "r", "s", "s~timeout", "t", "zero",
    ]  # fmt: skip
