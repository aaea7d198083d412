"""A task used several times in one flow (spec §8.3, issue 10 item 8).

The reference accepts it; its durable path then caches by task id and hands the second use
the first one's result. Here every use has its own checkpoint key (``id``, ``id#2``, ...),
so the in-memory path and every durable backend give the same result, and the task id seen
by the task, its executions and its errors stays the function's.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sayiir import (
    CheckpointingRunner,
    Flow,
    LoopResult,
    RetryPolicy,
    WorkflowClient,
    WorkflowError,
    get_task_context,
    resume_workflow,
    run_durable_workflow,
    send_signal,
    task,
)


def double(x: Any) -> Any:
    return x * 2


def add_one(x: int) -> int:
    return x + 1


def identity(x: Any) -> Any:
    return x


def close(x: Any) -> LoopResult[Any]:
    return LoopResult.done(x)


FLOWS: dict[str, tuple[Callable[[], Any], Any]] = {
    "then": (lambda: Flow("d").then(double).then(double), 12),
    "fork": (
        lambda: Flow("d").then(double).fork().branch(double).branch(add_one).join(dict),
        {"double": 12, "add_one": 7},
    ),
    "fork-chain": (
        lambda: Flow("d").fork().branch(add_one, double).branch(str, double).join(dict),
        {"add_one": 8, "str": "33"},
    ),
    "join": (
        lambda: Flow("d").then(identity).fork().branch(add_one).branch(double).join(identity),
        {"add_one": 4, "double": 6},
    ),
    "loop": (
        lambda: Flow("d").then(add_one).loop(Flow("body").then(add_one).then(close).build()),
        5,
    ),
    "child": (
        lambda: Flow("d").then(double).then_flow(Flow("c").then(add_one).then(double).build()),
        14,
    ),
    "route-chain": (
        lambda: Flow("d").route(lambda x: "a", keys=["a"]).branch("a", double, double).done(),
        {"branch": "a", "result": 12},
    ),
}


@pytest.mark.parametrize("name", list(FLOWS))
def test_each_use_runs_on_every_path(path, name):
    build, expected = FLOWS[name]
    out = path.run(build().build(), 3)
    assert out.ok, out.error
    assert out.value == expected


def test_a_task_around_a_signal_wait_runs_twice(backend, iid, ledger):
    # The reference's own test flow; its durable path answers 1 (the first use's result).
    def ident(x):
        ledger.add(f"ident {x}")
        return x

    wf = Flow("sig").then(ident).wait_for_signal("x").then(ident).build()
    assert run_durable_workflow(wf, iid, 1, backend=backend).status == "awaiting_signal"
    send_signal(iid, "x", 7, backend)
    status = resume_workflow(wf, iid, backend)
    assert (status.status, status.output) == ("completed", 7)
    assert ledger.entries == ["ident 1", "ident 7"]
    client = WorkflowClient(backend)
    # By task id: the first use (as the reference answers); the key names the second.
    assert client.get_task_result(iid, "ident") == 1
    assert client.get_task_result(iid, "ident#2") == 7


def test_a_resumed_run_runs_the_second_use_once(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def bump(x):
        ledger.add("bump")
        return x + 1

    def between(x):
        if crashes:
            raise crashes.pop()
        return x * 10

    wf = Flow("r").then(bump).then(between).then(bump).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    assert ledger.entries == ["bump"]
    status = resume_workflow(wf, iid, backend)
    assert (status.status, status.output) == ("completed", 21)
    assert ledger.entries == ["bump", "bump"]


def test_the_asyncio_runner_runs_each_use(backend, iid, ledger):
    async def a_bump(x):
        await asyncio.sleep(0)
        ledger.add("a_bump")
        return x + 1

    wf = (
        Flow("async")
        .then(a_bump)
        .fork().branch(identity, a_bump).branch(double, a_bump).join(dict)
        .wait_for_signal("go")
        .then(a_bump)
        .build()
    )  # fmt: skip

    async def main() -> Any:
        runner = CheckpointingRunner(backend)
        parked = await runner.run(wf, iid, 1)
        with pytest.raises(WorkflowError, match=r"^Signal name 'g\\x00' contains NUL"):
            await runner.send_signal(iid, "g\x00", 1)
        assert parked.status == "awaiting_signal"
        await runner.send_signal(iid, "go", 10)
        return await runner.resume(wf, iid)

    done = asyncio.run(main())
    assert (done.status, done.output) == ("completed", 11)
    assert ledger.count("a_bump") == 4
    assert WorkflowClient(backend).get_task_result(iid, "a_bump#3") == 5  # the double branch


def test_each_use_reports_the_function_id(backend, backend_kind, iid, tmp_path, request):
    seen: list[tuple[str, str | None]] = []

    @task(timeout="60s")  # a deadline: every backend records the attempt with its task id
    def where(x):
        ctx = get_task_context()
        assert ctx is not None
        seen.append((ctx.task_id, ctx.metadata.display_name))
        return x + 1

    wf = Flow("ids").then(where).then(where).build()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    assert (status.status, status.output) == ("completed", 3)
    assert seen == [("where", "where"), ("where", "where")]
    assert _executions(backend, backend_kind, iid, tmp_path, request) == [
        ("where", "where"),
        ("where#2", "where"),
    ]


def test_a_failing_second_use_retries_on_its_own(path):
    calls: list[int] = []

    @task(retries=RetryPolicy(max_retries=1, initial_delay_secs=0.0))
    def picky(x):
        calls.append(x)
        if len(calls) > 1:
            raise ValueError(f"no {x}")
        return x + 1

    out = path.run(Flow("f").then(picky).then(picky).build(), 1)
    assert not out.ok
    assert out.error == "ValueError: no 2"
    assert calls == [1, 2, 2]  # the second use was retried once, the first never re-ran


def _executions(
    backend: Any, kind: str, iid: str, tmp_path: Path, request: pytest.FixtureRequest
) -> list[tuple[str, str | None]]:
    """(checkpoint key, task id) of the recorded task executions, in key order."""
    if kind == "memory":
        rows = {(a.key, a.task_id) for a in backend._instances[iid].attempts}
    elif kind == "sqlite":
        with sqlite3.connect(tmp_path / "s.db") as conn:
            query = "SELECT key, task_id FROM sayiir_task_executions WHERE instance_id = ?"
            rows = set(conn.execute(query, (iid,)).fetchall())
    else:
        import psycopg

        with psycopg.connect(request.getfixturevalue("pg_dsn")) as conn:
            query = "SELECT task_key, task_id FROM sayiir_task_executions WHERE instance_id = %s"
            rows = set(conn.execute(query, (iid,)).fetchall())
    return sorted(rows)
