"""Async tasks (spec §15.1) and the asyncio runner ``CheckpointingRunner`` (§22)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from sayiir import (
    CheckpointingRunner,
    Flow,
    InstanceAlreadyExistsError,
    LoopResult,
    RetryPolicy,
    WorkflowClient,
    get_task_context,
    run_durable_workflow,
    run_workflow,
    send_signal,
    task,
)
from sayiir.errors import BackendError, DefinitionMismatchError, WorkflowError
from sayiir.testing import virtual_time


async def a_double(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


async def a_tuple(x: int) -> tuple[int, int]:
    return (x, x)


def s_inc(x: int) -> int:
    return x + 1


def test_async_tasks_mixed_with_sync(path):
    wf = Flow("mixed").then(a_double).then(s_inc).then(a_tuple).build()
    out = path.run(wf, 3)
    assert out.ok, out.error
    assert out.value == [7, 7]


def test_async_task_exception_is_a_task_failure(path):
    async def boom(x):
        await asyncio.sleep(0)
        raise KeyError("nope")

    out = path.run(Flow("aboom").then(boom).build(), 0)
    assert not out.ok and out.error == "KeyError: 'nope'"


def test_async_task_output_round_trips(path):
    async def make(x):
        return {1: (x,)}

    out = path.run(Flow("around").then(make).then(lambda d: d, name="same").build(), 2)
    assert out.ok and out.value == {"1": [2]}


def test_async_task_is_retried(path, ledger):
    @task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.01, backoff_multiplier=1.0))
    async def flaky(x):
        ledger.add("flaky")
        if ledger.count("flaky") < 3:
            raise ValueError("again")
        return "ok"

    out = path.run(Flow("aretry").then(flaky).build(), 0)
    assert out.ok and out.value == "ok"
    assert ledger.count("flaky") == 3


def test_each_async_task_call_gets_its_own_loop(path):
    loops: list[asyncio.AbstractEventLoop] = []

    async def first(x):
        loops.append(asyncio.get_running_loop())
        return x

    async def second(x):
        loops.append(asyncio.get_running_loop())
        return x

    out = path.run(Flow("loops").then(first).then(second).build(), 0)
    assert out.ok
    assert len(loops) == 2 and loops[0] is not loops[1]


def test_run_workflow_inside_a_running_event_loop():
    wf = Flow("in-loop").then(a_double).then(s_inc).build()

    async def main() -> Any:
        return run_workflow(wf, 20)

    assert asyncio.run(main()) == 41


def test_run_durable_workflow_inside_a_running_event_loop(backend, iid):
    wf = Flow("in-loop").then(a_double).then(s_inc).build()

    async def main() -> Any:
        return run_durable_workflow(wf, iid, 20, backend=backend)

    status = asyncio.run(main())
    assert status.status == "completed" and status.output == 41


def test_async_callable_object(path):
    class Doubler:
        __name__ = "doubler"

        async def __call__(self, x: int) -> int:
            return x * 2

    out = path.run(Flow("acall").then(Doubler()).build(), 4)
    assert out.ok, out.error
    assert out.value == 8


# -- CheckpointingRunner ----------------------------------------------------------------------


def test_runner_run_completes(backend, iid):
    wf = Flow("runner").then(a_double).then(s_inc).build()

    async def main() -> Any:
        return await CheckpointingRunner(backend).run(wf, iid, 5)

    status = asyncio.run(main())
    assert status.status == "completed" and status.output == 11
    assert WorkflowClient(backend).get_task_result(iid, "a_double") == 10


def test_runner_async_tasks_run_on_the_callers_loop(backend, iid):
    seen: list[Any] = []

    async def where(x):
        seen.append(asyncio.get_running_loop())
        return x

    wf = Flow("loop").then(where).build()

    async def main() -> Any:
        status = await CheckpointingRunner(backend).run(wf, iid, 1)
        return status, asyncio.get_running_loop()

    status, loop = asyncio.run(main())
    assert status.status == "completed"
    assert seen == [loop]


def test_runner_sync_tasks_do_not_block_the_loop(backend, iid):
    # The sync task waits for the loop to tick: were it run on the loop's thread, the
    # ticker could never run and the task would fail after its wait.
    ticked = threading.Event()

    def slow(x):
        assert ticked.wait(30), "the event loop was blocked"
        return x

    wf = Flow("noblock").then(slow).build()

    async def ticker() -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        ticked.set()

    async def main() -> Any:
        runner = CheckpointingRunner(backend)
        status, _ = await asyncio.gather(runner.run(wf, iid, 1), ticker())
        return status

    status = asyncio.run(main())
    assert status.status == "completed", status.error


def test_runner_resume_after_delay(backend, iid, ledger):
    def before(x):
        ledger.add("before")
        return x + 1

    async def after(x):
        ledger.add("after")
        return x * 2

    wf = Flow("adelay").then(before).delay("nap", 0.1).then(after).build()

    async def main() -> Any:
        runner = CheckpointingRunner(backend)
        # A clock that moves only when told: "early" is early however slow this machine is.
        with virtual_time(auto_skip=False) as clock:
            first = await runner.run(wf, iid, 1)
            early = await runner.resume(wf, iid)
            await clock.aadvance(0.15)
            done = await runner.resume(wf, iid)
        return first, early, done

    first, early, done = asyncio.run(main())
    assert first.status == "waiting" and first.delay_id == "nap"
    assert early.status == "waiting"
    assert done.status == "completed" and done.output == 4
    assert ledger.entries == ["before", "after"]


def test_runner_signals_cancel_pause(backend, iid, ledger):
    def prepare(x):
        ledger.add("prepare")
        return x

    wf = Flow("asig").then(prepare).wait_for_signal("go").then(lambda p: p, name="echo").build()

    async def main() -> Any:
        runner = CheckpointingRunner(backend)
        parked = await runner.run(wf, iid, 1)
        await runner.send_signal(iid, "go", {"ok": True})
        done = await runner.resume(wf, iid)
        other = iid + "-2"
        await runner.run(wf, other, 1)
        await runner.pause(other, reason="hold", paused_by="me")
        paused = await runner.resume(wf, other)
        await runner.unpause(other)
        await runner.cancel(other, reason="stop", cancelled_by="ops")
        cancelled = await runner.resume(wf, other)
        return parked, done, paused, cancelled

    parked, done, paused, cancelled = asyncio.run(main())
    assert parked.status == "awaiting_signal"
    assert done.status == "completed" and done.output == {"ok": True}
    assert paused.status == "paused" and paused.reason == "hold" and paused.paused_by == "me"
    assert cancelled.status == "cancelled" and cancelled.cancelled_by == "ops"


def test_runner_failures_are_statuses(backend, iid):
    async def boom(x):
        raise ValueError("async boom")

    wf = Flow("afail").then(boom).build()
    status = asyncio.run(CheckpointingRunner(backend).run(wf, iid, 0))
    assert status.status == "failed" and status.error == "ValueError: async boom"


def test_runner_errors_are_raised(backend, iid):
    wf = Flow("aerr").then(s_inc).build()
    other = Flow("aerr").then(s_inc).then(a_double).build()

    async def main() -> None:
        runner = CheckpointingRunner(backend)
        await runner.run(wf, iid, 0)
        with pytest.raises(InstanceAlreadyExistsError):
            await runner.run(wf, iid, 0)
        with pytest.raises(WorkflowError, match="Workflow definition mismatch"):
            await runner.resume(other, iid)
        with pytest.raises(BackendError, match="not found"):
            await runner.resume(wf, iid + "-missing")
        with pytest.raises(TypeError):
            await runner.run(wf, iid + "-bad", {1, 2})
        with pytest.raises(WorkflowError, match="instance_id must not be empty"):
            await runner.run(wf, "", 0)

    asyncio.run(main())
    assert issubclass(DefinitionMismatchError, WorkflowError)


def test_runner_conflict_policy(backend, iid):
    wf = Flow("apol").then(s_inc).build()

    async def main() -> Any:
        await CheckpointingRunner(backend).run(wf, iid, 1)
        same = await CheckpointingRunner(backend, "use_existing").run(wf, iid, 100)
        fresh = await CheckpointingRunner(backend, "terminate_existing").run(wf, iid, 100)
        return same, fresh

    same, fresh = asyncio.run(main())
    assert same.output == 2
    assert fresh.output == 101
    with pytest.raises(ValueError, match="invalid conflict_policy"):
        CheckpointingRunner(backend, "nope")


def test_runner_fork_is_concurrent(backend, iid):
    meet = threading.Barrier(2, timeout=30)  # opens only if both branches run at once

    async def a(x):
        await asyncio.to_thread(meet.wait)
        return "a"

    def b(x):
        meet.wait()
        return "b"

    wf = Flow("afork").fork().branch(a).branch(b).join(lambda d: d).build()

    async def main() -> Any:
        runner = CheckpointingRunner(backend)
        return await runner.run(wf, iid, 0)

    status = asyncio.run(main())
    assert status.output == {"a": "a", "b": "b"}, status.error


def test_runner_timeout_and_context(backend, iid):
    @task(timeout="0.1s")
    async def slow(x):
        await asyncio.sleep(1)

    async def ctx_task(x):
        ctx = get_task_context()
        assert ctx is not None
        return [ctx.instance_id, ctx.task_id]

    async def main() -> Any:
        runner = CheckpointingRunner(backend)
        ok = await runner.run(Flow("actx").then(ctx_task).build(), iid, 0)
        timed = await runner.run(Flow("ato").then(slow).build(), iid + "-t", 0)
        return ok, timed

    ok, timed = asyncio.run(main())
    assert ok.output == [iid, "ctx_task"]
    assert timed.status == "failed" and timed.error == "Task 'slow' timed out after 0.1s"


def test_runner_loop_and_route(backend, iid):
    async def body(x):
        return LoopResult.done(x) if x >= 3 else LoopResult.again(x + 1)

    wf = (
        Flow("aloop")
        .loop(body)
        .route(lambda x: "odd" if x % 2 else "even", keys=["odd", "even"])
        .branch("odd", lambda x: "O", name="o")
        .branch("even", lambda x: "E", name="e")
        .done()
        .build()
    )
    status = asyncio.run(CheckpointingRunner(backend).run(wf, iid, 0))
    assert status.status == "completed"
    assert status.output == {"branch": "odd", "result": "O"}


def test_runner_and_sync_api_share_state(backend, iid):
    wf = Flow("share").then(s_inc).wait_for_signal("go").then(a_double).build()
    assert run_durable_workflow(wf, iid, 1, backend=backend).status == "awaiting_signal"
    send_signal(iid, "go", 21, backend)
    status = asyncio.run(CheckpointingRunner(backend).resume(wf, iid))
    assert status.status == "completed" and status.output == 42


def test_runner_cancel_from_another_task_while_running(backend, iid, ledger):
    started = threading.Event()
    release = asyncio.Event()  # first runs until the cancel was requested

    async def first(x):
        ledger.add("first")
        started.set()
        await asyncio.wait_for(release.wait(), 60)
        return x

    async def second(x):
        ledger.add("second")
        return x

    wf = Flow("acancel").then(first).then(second).build()

    async def main() -> Any:
        runner = CheckpointingRunner(backend)
        run = asyncio.create_task(runner.run(wf, iid, 1))
        while not started.is_set():
            await asyncio.sleep(0.01)
        await runner.cancel(iid, reason="enough")
        release.set()
        return await run

    status = asyncio.run(main())
    assert status.status == "cancelled" and status.reason == "enough"
    assert ledger.entries == ["first"]
    assert WorkflowClient(backend).get_task_result(iid, "first") == 1


@pytest.mark.parametrize("durable", [False, True])
def test_context_in_async_task_called_from_a_running_loop(durable):
    async def where(x):
        ctx = get_task_context()
        return None if ctx is None else ctx.task_id

    wf = Flow("ctx-loop").then(where).build()

    async def main() -> Any:
        if durable:
            return run_durable_workflow(wf, "ctx-loop-1", 0).output
        return run_workflow(wf, 0)

    assert asyncio.run(main()) == "where"


@pytest.mark.postgres
def test_runner_with_async_postgres_connect(pg_dsn, iid):
    from sayiir import JsonCodec
    from sayiir.backends.postgres import PostgresBackend

    wf = Flow("pg-async").then(a_double).delay("nap", 0.05).then(s_inc).build()

    async def main() -> Any:
        backend = await PostgresBackend.connect(pg_dsn)
        try:
            runner = CheckpointingRunner(backend)
            first = await runner.run(wf, iid, 4)
            await asyncio.sleep(0.1)
            done = await runner.resume(wf, iid)
        finally:
            await backend.aclose()
        other = await PostgresBackend.connect_with_codec(pg_dsn, JsonCodec())
        try:
            again = await CheckpointingRunner(other).resume(wf, iid)
        finally:
            await other.aclose()
        return first, done, again

    first, done, again = asyncio.run(main())
    assert first.status == "waiting"
    assert done.status == "completed" and done.output == 9
    assert again.output == 9


@pytest.mark.parametrize("op", ["cancel", "pause"])
def test_runner_request_during_retry_backoff(backend, iid, ledger, op):
    @task(retries=RetryPolicy(max_retries=3, initial_delay_secs=0.4, backoff_multiplier=1.0))
    async def flaky(x):
        ledger.add("attempt")
        raise ValueError("still failing")

    wf = Flow("abackoff").then(flaky).build()

    async def main() -> Any:
        # A manual clock: the backoff lasts until the test advances it, after the request.
        with virtual_time(auto_skip=False) as clock:
            runner = CheckpointingRunner(backend)
            run = asyncio.create_task(runner.run(wf, iid, 0))
            while ledger.count("attempt") < 1:
                await asyncio.sleep(0.01)
            if op == "cancel":
                await runner.cancel(iid, reason="stop")
            else:
                await runner.pause(iid, reason="hold")
            clock.auto_skip = True  # later backoffs (there must be none) would pass at once
            await clock.aadvance(1.0)  # the backoff is over: the retry must not run
            return await run

    status = asyncio.run(main())
    assert status.status == ("cancelled" if op == "cancel" else "paused")
    assert ledger.count("attempt") == 1


def test_runner_resume_after_crash(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    async def first(x):
        ledger.add("first")
        return x + 1

    async def second(x):
        ledger.add("second")
        if crashes:
            raise crashes.pop()
        return x * 2

    wf = Flow("acrash").then(first).then(second).build()
    with pytest.raises(crash_cls):
        asyncio.run(CheckpointingRunner(backend).run(wf, iid, 1))
    ledger.clear()
    status = asyncio.run(CheckpointingRunner(backend).resume(wf, iid))
    assert status.status == "completed" and status.output == 4
    assert ledger.entries == ["second"]
