"""Edge cases across constructs and backends: storage fidelity, iteration counters across
crashes, parked forks, control requests during retry backoff, other backend objects."""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Any

import pytest

from sayiir import (
    Flow,
    LoopResult,
    RetryPolicy,
    WorkflowClient,
    cancel_workflow,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    send_signal,
    task,
    unpause_workflow,
)
from sayiir.core.records import AttemptRecord, FinalState, InstanceRecord, Status, StepRecord
from sayiir.errors import InstanceNotFoundError, RunFinishedError, RunReplacedError
from sayiir.testing import virtual_time


def echo(x: Any) -> Any:
    return x


# -- storage fidelity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "nul \x00 inside",
        "emoji 🎉 and accents éà and \u2028 separators",
        2**70,
        -(2**63),
        1e-300,
        0.1 + 0.2,
        {"z": 1, "a": 2, "m": {"y": [], "b": None}},
        [[], {}, "", 0, False, None],
        "x" * 1_000_000,
    ],
    ids=["nul", "unicode", "bigint", "minint", "tiny", "float", "key-order", "empties", "1MB"],
)
def test_values_survive_storage_and_resume(backend, iid, value, crash_cls):
    crashes = [crash_cls()]

    def produce(x):
        return value

    def after(x):
        if crashes:
            raise crashes.pop()
        return x

    wf = Flow("fidelity").then(produce).then(after).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, None, backend=backend)
    status = resume_workflow(wf, iid, backend)  # "after" gets the value read back from storage
    assert status.status == "completed", status
    assert status.output == value
    assert type(status.output) is type(value)
    if isinstance(value, dict):
        assert list(status.output) == list(value), "key order must survive storage"
        assert list(status.output["m"]) == ["y", "b"]
    stored = WorkflowClient(backend).status(iid)
    assert stored.output == value


def test_signal_payload_none_and_falsy(backend, iid):
    wf = (
        Flow("falsy")
        .wait_for_signal("a", name="wa")
        .then(lambda p: [p], name="ta")
        .wait_for_signal("b", name="wb")
        .then(lambda p: p, name="tb")
        .build()
    )
    send_signal(iid, "a", None, backend)
    send_signal(iid, "b", 0, backend)
    status = run_durable_workflow(wf, iid, None, backend=backend)
    assert status.status == "completed", status
    assert status.output == 0
    assert WorkflowClient(backend).get_task_result(iid, "ta") == [None]


def test_many_buffered_signals_stay_fifo(backend, iid, ledger):
    def collect(p):
        ledger.add(str(p))
        return LoopResult.done(p) if p == 19 else LoopResult.again(p)

    body = Flow("body").wait_for_signal("ev").then(collect).build()
    wf = Flow("fifo-loop").loop(body, max_iterations=25).build()
    for n in range(20):
        send_signal(iid, "ev", n, backend)
    status = run_durable_workflow(wf, iid, None, backend=backend)
    assert status.status == "completed", status
    assert ledger.entries == [str(n) for n in range(20)]


def test_signals_in_loop_park_each_iteration(backend, iid, ledger):
    def collect(p):
        ledger.add(str(p))
        return LoopResult.done(p) if p == "last" else LoopResult.again(p)

    body = Flow("body").wait_for_signal("ev").then(collect).build()
    wf = Flow("sig-loop").loop(body).build()
    assert run_durable_workflow(wf, iid, None, backend=backend).status == "awaiting_signal"
    for payload in ("one", "two", "last"):
        send_signal(iid, "ev", payload, backend)
        status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == "last"
    assert ledger.entries == ["one", "two", "last"]


# -- counters across crashes ------------------------------------------------------------------


def test_loop_iteration_count_is_not_reset_by_a_crash(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def forever(x):
        ledger.add(f"it{x}")
        if x == 1 and crashes:
            raise crashes.pop()
        return LoopResult.again(x + 1)

    wf = Flow("max-crash").loop(forever, max_iterations=3).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 0, backend=backend)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed"
    assert status.error == "Loop 'loop_0' exceeded max iterations (3)"
    assert ledger.entries == ["it0", "it1", "it1", "it2"]


def test_exit_with_last_durable_after_crash(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def inc(x):
        ledger.add(f"it{x}")
        if x == 2 and crashes:
            raise crashes.pop()
        return LoopResult.again(x + 1)

    wf = Flow("ewl").loop(inc, max_iterations=3, on_max="exit_with_last").build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 0, backend=backend)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "completed" and status.output == 3
    assert ledger.entries == ["it0", "it1", "it2", "it2"]


# -- parked forks -----------------------------------------------------------------------------


def test_fork_with_two_delays_reports_earliest_then_latest(backend, iid, ledger):
    short = Flow("s").delay("short", 0.1).then(lambda x: "s", name="after_short").build()
    long = Flow("l").delay("long", 0.5).then(lambda x: "l", name="after_long").build()
    wf = Flow("two-delays").fork().branch(short, name="s").branch(long, name="l").join(dict)
    first = run_durable_workflow(wf.build(), iid, 0, backend=backend)
    assert first.status == "waiting" and first.delay_id == "short"
    time.sleep(0.15)
    second = resume_workflow(wf.build(), iid, backend)
    assert second.status == "waiting" and second.delay_id == "long"
    assert second.wake_at is not None and first.wake_at is not None
    assert second.wake_at > first.wake_at
    assert WorkflowClient(backend).get_task_result(iid, "after_short") == "s"
    time.sleep(0.4)
    done = resume_workflow(wf.build(), iid, backend)
    assert done.status == "completed" and done.output == {"s": "s", "l": "l"}


def test_signal_timeout_inside_fork_branch_fails_run(backend, iid, ledger):
    def join(d):
        ledger.add("join")
        return d

    waiter = Flow("w").wait_for_signal("go", timeout=0.1).then(echo).build()
    wf = Flow("sig-to-fork").fork().branch(waiter, name="w").branch(echo, name="e").join(join)
    status = run_durable_workflow(wf.build(), iid, 1, backend=backend)
    assert status.status == "awaiting_signal" and status.wake_at is not None
    time.sleep(0.15)
    failed = resume_workflow(wf.build(), iid, backend)
    assert failed.status == "failed" and failed.error == "Signal 'go' timed out"
    assert ledger.entries == []


def test_trailing_signal_timeout_fails(backend, iid):
    wf = Flow("trail-to").then(echo).wait_for_signal("late", timeout=0.05).build()
    run_durable_workflow(wf, iid, 1, backend=backend)
    time.sleep(0.1)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed" and status.error == "Signal 'late' timed out"


def test_signal_timeout_in_child_names_the_signal(backend, iid):
    child = Flow("c").wait_for_signal("approve", name="ask", timeout=0.05).build()
    wf = Flow("p").then(echo).then_flow(child).then(echo, name="tail").build()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    assert status.signal_id == "ask" and status.signal_name == "approve"
    time.sleep(0.1)
    assert resume_workflow(wf, iid, backend).error == "Signal 'approve' timed out"


def test_delay_in_route_branch(backend, iid, ledger):
    def after(x):
        ledger.add("after")
        return x + 1

    delayed = Flow("d").delay("rnap", 0.1).then(after).build()
    wf = (
        Flow("route-delay")
        .route(lambda x: "slow", keys=["slow"])
        .branch("slow", delayed, name="slow_chain")
        .done()
        .build()
    )
    assert run_durable_workflow(wf, iid, 1, backend=backend).delay_id == "rnap"
    time.sleep(0.15)
    status = resume_workflow(wf, iid, backend)
    assert status.output == {"branch": "slow", "result": 2}
    assert ledger.entries == ["after"]


# -- control during retries and from other backend objects ------------------------------------


@pytest.mark.parametrize("op", ["cancel", "pause"])
def test_request_during_retry_backoff_stops_before_next_attempt(backend, iid, ledger, op):
    @task(retries=RetryPolicy(max_retries=3, initial_delay_secs=0.4, backoff_multiplier=1.0))
    def flaky(x):
        ledger.add("attempt")
        raise ValueError("still failing")

    failed_once = threading.Event()

    def watch(clock: Any) -> None:
        clock.wait_for_sleepers(1)  # the run is in its backoff, which lasts until we advance
        assert ledger.count("attempt") == 1
        if op == "cancel":
            cancel_workflow(iid, backend, reason="stop retrying")
        else:
            pause_workflow(iid, backend, reason="hold retries")
        failed_once.set()
        clock.auto_skip = True  # later backoffs (there must be none) would pass at once
        clock.advance(1.0)  # the backoff is over: the request must stop the retry

    with virtual_time(auto_skip=False) as clock:
        watcher = threading.Thread(target=watch, args=(clock,))
        watcher.start()
        wf = Flow("backoff").then(flaky).build()
        status = run_durable_workflow(wf, iid, 0, backend=backend)
    watcher.join(60)
    assert failed_once.is_set()
    assert status.status == ("cancelled" if op == "cancel" else "paused")
    assert ledger.count("attempt") == 1, "the retry after the request must not run"


def test_pause_during_retries_then_resume_keeps_counter(backend, iid, ledger):
    @task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.02, backoff_multiplier=1.0))
    def flaky(x):
        ledger.add("attempt")
        if ledger.count("attempt") == 1:
            pause_workflow(iid, backend, reason="mid-retry")
        raise ValueError(f"fail {ledger.count('attempt')}")

    wf = Flow("pretry").then(flaky).build()
    status = run_durable_workflow(wf, iid, 0, backend=backend)
    assert status.status == "paused"
    paused_at = ledger.count("attempt")
    unpause_workflow(iid, backend)
    done = resume_workflow(wf, iid, backend)
    assert done.status == "failed"
    assert ledger.count("attempt") == 3, (paused_at, ledger)
    assert done.error == "ValueError: fail 3"


def test_cancel_through_a_second_backend_object(backend, backend_kind, iid, ledger, request):
    if backend_kind == "memory":
        other = backend  # in-memory state lives in the object itself
    elif backend_kind == "sqlite":
        from sayiir.backends.sqlite import SqliteBackend

        other = SqliteBackend(request.getfixturevalue("tmp_path") / "s.db")
    else:
        from sayiir.backends.postgres import PostgresBackend

        other = PostgresBackend(request.getfixturevalue("pg_dsn"))
    gate, started = threading.Event(), threading.Event()

    def first(x):
        ledger.add("first")
        started.set()
        gate.wait(5)
        return x

    def second(x):
        ledger.add("second")
        return x

    wf = Flow("cross").then(first).then(second).build()
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(run_durable_workflow(wf, iid, 1, backend)))
    t.start()
    try:
        assert started.wait(5)
        cancel_workflow(iid, other, reason="from elsewhere", cancelled_by="other")
        assert WorkflowClient(other).status(iid).status == "in_progress"
        gate.set()
        t.join(5)
        assert box[0].status == "cancelled" and box[0].cancelled_by == "other"
        assert ledger.entries == ["first"]
        assert WorkflowClient(other).status(iid).status == "cancelled"
    finally:
        gate.set()
        if other is not backend:
            other.close()


def test_corrupt_instance_input_fails_on_resume(backend, iid, ledger):
    def first(x):
        ledger.add("first")
        return x

    wf = Flow("bad-input").then(first).build()
    submitted = WorkflowClient(backend).submit(wf, iid, 1)
    assert submitted.status == "in_progress"
    now = time.time()
    record = InstanceRecord(  # parked (a running record is held by its execution's lease)
        iid,
        wf.workflow_id,
        wf.definition_hash,
        Status.WAITING,
        b"\xff\xfe garbage",
        wake_at=now - 1,
        created_at=now,
        updated_at=now,
    )
    backend.create_instance(record, replace=True)
    status = resume_workflow(wf, iid, backend)
    assert status.status == "failed"
    assert status.error is not None and "input" in status.error and iid in status.error
    assert ledger.entries == []
    assert resume_workflow(wf, iid, backend).error == status.error


def test_flow_built_twice_runs_the_same(backend, iid):
    flow = Flow("twice").then(lambda x: x + 1, name="inc")
    a, b = flow.build(), flow.build()
    assert a.definition_hash == b.definition_hash
    run_durable_workflow(a, iid, 1, backend=backend)
    assert resume_workflow(b, iid, backend).output == 2


def test_workflow_name_does_not_change_hash_but_structure_does():
    a = Flow("a").then(echo).build()
    b = Flow("b").then(echo).build()
    c = Flow("a").then(echo).then(echo, name="again").build()
    assert a.definition_hash == b.definition_hash != c.definition_hash
    assert len(a.definition_hash) == 64 and a.definition_hash == a.definition_hash.lower()


def test_terminate_existing_while_old_run_executes(backend, iid, ledger):
    """The replaced execution finishes its task, then stops at its next write: it raises
    RunReplacedError and writes nothing into the new run (not its checkpoint, not its end)."""
    gate, started = threading.Event(), threading.Event()

    def first(x):
        ledger.add(f"first{x}")
        if x == 1:
            started.set()
            gate.wait(5)
        return x * 10

    def second(x):
        ledger.add(f"second{x}")
        return x + 1

    wf = Flow("zombie").then(first).then(second).build()
    box: list[Any] = []

    def old_run() -> None:
        try:
            box.append(run_durable_workflow(wf, iid, 1, backend))
        except Exception as exc:
            box.append(exc)

    old = threading.Thread(target=old_run)
    old.start()
    try:
        assert started.wait(5)
        new = run_durable_workflow(
            wf, iid, 2, backend=backend, conflict_policy="terminate_existing"
        )
        assert new.status == "completed" and new.output == 21
    finally:
        gate.set()
        old.join(5)
    [outcome] = box
    assert isinstance(outcome, RunReplacedError) and outcome.instance_id == iid
    assert "terminate_existing" in str(outcome)
    assert sorted(ledger.entries) == ["first1", "first2", "second20"]  # old never reached second
    client = WorkflowClient(backend)
    assert client.get_task_result(iid, "first") == 20
    stored = client.status(iid)
    assert stored.status == "completed" and stored.output == 21


def test_a_replaced_run_cannot_finish_into_the_new_one(backend, iid):
    """Every engine write carrying a replaced run's token is refused and changes nothing;
    the current token, and no token, are accepted."""
    wf = Flow("tok").then(echo).build()
    run_durable_workflow(wf, iid, 1, backend=backend)
    old_token = backend.get_instance(iid).token
    assert old_token is not None
    run_durable_workflow(wf, iid, 2, backend=backend, conflict_policy="terminate_existing")
    new = backend.get_instance(iid)
    assert new.token not in (None, old_token)
    steps = [StepRecord("x", b"1", "echo")]
    with pytest.raises(RunReplacedError):
        backend.save_steps(iid, steps, token=old_token)
    with pytest.raises(RunReplacedError):
        backend.finish(iid, FinalState(Status.FAILED, error="zombie"), steps, token=old_token)
    with pytest.raises(RunReplacedError):
        backend.record_attempt(
            iid, AttemptRecord("y", "echo", 1, "failed", 0.0, 1.0, "e"), token=old_token
        )
    with pytest.raises(RunReplacedError):
        backend.consume_signal(iid, "go", "sig-key", token=old_token)
    after = backend.load(iid)
    assert (after.record.status, after.record.output) == (new.status, new.output)
    assert "x" not in after.checkpoints and "sig-key" not in after.checkpoints
    assert after.attempts == {}
    # The current token, and no token at all, pass the fence; but the run is completed, and a
    # finished run never changes.
    with pytest.raises(RunFinishedError):
        backend.save_steps(iid, steps, token=new.token)
    with pytest.raises(RunFinishedError):
        backend.save_steps(iid, steps)
    with pytest.raises(InstanceNotFoundError):
        backend.save_steps("no-such-run", steps, token=old_token)


def test_use_existing_on_crashed_run_runs_nothing(backend, iid, ledger, crash_cls):
    crashes = [crash_cls()]

    def first(x):
        ledger.add("first")
        if crashes:
            raise crashes.pop()
        return x

    wf = Flow("ue-crash").then(first).build()
    with pytest.raises(crash_cls):
        run_durable_workflow(wf, iid, 1, backend=backend)
    status = run_durable_workflow(wf, iid, 1, backend=backend, conflict_policy="use_existing")
    assert status.status == "in_progress"
    assert ledger.entries == ["first"]


def test_pause_inside_fork_branch_then_resume_reruns_nothing_finished(backend, iid, ledger):
    def a(x):
        ledger.add("a")
        pause_workflow(iid, backend, reason="branch asked")
        return "A"

    def b(x):
        ledger.add("b")
        time.sleep(0.05)
        return "B"

    def join(d):
        ledger.add("join")
        return d

    wf = Flow("fork-pause").fork().branch(a).branch(b).join(join).build()
    status = run_durable_workflow(wf, iid, 0, backend=backend)
    assert status.status == "paused" and status.reason == "branch asked"
    assert sorted(ledger.entries) == ["a", "b"]
    ledger.clear()
    unpause_workflow(iid, backend)
    done = resume_workflow(wf, iid, backend)
    assert done.status == "completed" and done.output == {"a": "A", "b": "B"}
    assert ledger.entries == ["join"]


def test_cancel_while_fork_branch_parked(backend, iid, ledger):
    delayed = Flow("d").delay("branch_nap", 30).then(echo, name="late").build()
    wf = Flow("fork-park").fork().branch(delayed, name="d").branch(echo).join(dict).build()
    assert run_durable_workflow(wf, iid, 1, backend=backend).status == "waiting"
    cancel_workflow(iid, backend, reason="no")
    status = resume_workflow(wf, iid, backend)
    assert status.status == "cancelled" and status.reason == "no"


def test_fork_branch_failure_wins_over_parked_branch(backend, iid):
    def boom(x):
        raise ValueError("branch failed")

    delayed = Flow("d").delay("branch_nap", 30).then(echo, name="late").build()
    wf = Flow("fork-fail-park").fork().branch(delayed, name="d").branch(boom).join(dict).build()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    assert status.status == "failed" and status.error == "ValueError: branch failed"


def test_signal_to_paused_instance_is_kept(backend, iid):
    wf = Flow("ps").wait_for_signal("go").then(echo).build()
    run_durable_workflow(wf, iid, 0, backend=backend)
    pause_workflow(iid, backend)
    send_signal(iid, "go", "while paused", backend)
    assert resume_workflow(wf, iid, backend).status == "paused"
    unpause_workflow(iid, backend)
    done = resume_workflow(wf, iid, backend)
    assert done.status == "completed" and done.output == "while paused"


def test_long_durable_loop(backend, iid):
    def count(x):
        return LoopResult.done(x) if x >= 150 else LoopResult.again(x + 1)

    wf = Flow("long").loop(count, max_iterations=200).build()
    status = run_durable_workflow(wf, iid, 0, backend=backend)
    assert status.status == "completed" and status.output == 150
    assert resume_workflow(wf, iid, backend).output == 150


def test_plain_fork_delays_sleep_concurrently():
    from sayiir import run_workflow

    a = Flow("a").delay("da", 0.3).then(lambda x: "a", name="ta").build()
    b = Flow("b").delay("db", 0.3).then(lambda x: "b", name="tb").build()
    wf = Flow("pd").fork().branch(a, name="a").branch(b, name="b").join(dict).build()
    # On a manual virtual clock both delays must be asleep at once before time moves.
    result: list[Any] = []
    with virtual_time(auto_skip=False) as clock:
        runner = threading.Thread(
            target=contextvars.copy_context().run,
            args=(lambda: result.append(run_workflow(wf, 0)),),
        )
        runner.start()
        clock.wait_for_sleepers(2)  # both branches sleep side by side
        clock.advance(0.3)
        runner.join(60)
    assert result == [{"a": "a", "b": "b"}]


def test_plain_signal_inside_fork_branch_raises_task_error():
    from sayiir import TaskError, run_workflow

    waiter = Flow("w").wait_for_signal("go").build()
    wf = Flow("ps").fork().branch(waiter, name="w").branch(echo).join(dict).build()
    with pytest.raises(TaskError, match="AwaitSignal 'go' not supported in sync executor"):
        run_workflow(wf, 0)


def test_wide_fork(backend, iid):
    # Every branch waits for all the others: the run completes only if all 16 overlap.
    all_in = threading.Barrier(16, timeout=60)

    def make(n: int) -> Any:
        def branch(x):
            all_in.wait()
            return x + n

        branch.__name__ = f"b{n}"
        return branch

    fork = Flow("wide").fork()
    for n in range(16):
        fork = fork.branch(make(n))
    wf = fork.join(lambda d: sum(d.values()), name="total").build()
    status = run_durable_workflow(wf, iid, 1, backend=backend)
    assert status.status == "completed", status
    assert status.output == sum(1 + n for n in range(16))
    assert not all_in.broken, "branches of a wide fork must overlap"


def test_long_task_does_not_block_other_instances(backend, backend_kind, iid, request):
    if backend_kind == "memory":
        other = backend
    elif backend_kind == "sqlite":
        from sayiir.backends.sqlite import SqliteBackend

        other = SqliteBackend(request.getfixturevalue("tmp_path") / "s.db")
    else:
        from sayiir.backends.postgres import PostgresBackend

        other = PostgresBackend(request.getfixturevalue("pg_dsn"))
    started, gate = threading.Event(), threading.Event()

    def long_task(x):
        started.set()
        gate.wait(60)  # held until the other instances are done (or a lock made them wait)
        return x

    slow = Flow("slow").then(echo, name="before").then(long_task).then(echo, name="after").build()
    quick = Flow("quick").then(lambda x: x + 1, name="inc").then(echo, name="again").build()
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(run_durable_workflow(slow, iid, 1, backend)))
    t.start()
    try:
        assert started.wait(60)
        for n in range(5):
            status = run_durable_workflow(quick, f"{iid}-q{n}", n, backend=other)
            assert status.output == n + 1
        send_signal(iid, "unrelated", 1, other)
        pause_workflow(iid, other)
        # All done while the long task is still held at its gate: none waited for it.
        assert t.is_alive(), "another instance's long task holds a lock"
    finally:
        gate.set()
        t.join(60)
        if other is not backend:
            other.close()
    assert box[0].status == "paused"


def test_task_running_another_workflow_keeps_its_own_context(backend, iid):
    from sayiir import get_task_context, run_workflow

    inner = Flow("inner").then(lambda x: get_task_context().task_id, name="inner_task").build()  # type: ignore[union-attr]
    inner_durable = Flow("inner-d").then(lambda x: x * 2, name="twice").build()

    def outer(x):
        before = get_task_context()
        plain = run_workflow(inner, x)
        durable = run_durable_workflow(inner_durable, iid + "-inner", x, backend=backend)
        after = get_task_context()
        assert before is not None and after is not None
        return [before.task_id, plain, durable.output, after.task_id, after.instance_id]

    status = run_durable_workflow(Flow("outer").then(outer).build(), iid, 3, backend=backend)
    assert status.status == "completed", status
    assert status.output == ["outer", "inner_task", 6, "outer", iid]
    assert WorkflowClient(backend).status(iid + "-inner").output == 6
