"""Workers in one process: distribution, timers, signals, fencing.

Every test runs on InMemoryBackend and on PostgresBackend (a table prefix of its own per
test, in the module's database): the worker mode of the interpreter over both queues. Tests
with real worker processes over PostgreSQL live beside this file.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sayiir import Flow, InMemoryBackend, RetryPolicy, WorkflowClient, task
from sayiir.backends.protocol import ChainedQueueStorage
from sayiir.core.records import QueueItem, StepRecord
from sayiir.errors import LeaseLostError
from sayiir.worker import Worker

ledger: list[tuple[str, str]] = []
_lock = threading.Lock()


def _record(name: str) -> None:
    with _lock:
        ledger.append((name, threading.current_thread().name))


@task
def prepare(x: int) -> int:
    _record("prepare")
    return x + 1


# With ``side_by_side`` on, the two branch tasks meet here: each waits until a branch task
# runs on another worker at the same time, so a fork run completes only if its branches
# really ran side by side (one worker running both in turn breaks the barrier: they fail).
_pair: list[threading.Barrier] = []
# With a gate in ``_gate``, the branch tasks wait until the test opens it.
_gate: list[threading.Event] = []


def _meet() -> None:
    if _pair:
        _pair[0].wait()
    if _gate:
        assert _gate[0].wait(30), "the test never opened the gate"


@task
def left(x: int) -> int:
    _record("left")
    _meet()
    return x * 2


@task
def right(x: int) -> int:
    _record("right")
    _meet()
    return x * 3


@task
def combine(parts: dict[str, int]) -> int:
    _record("combine")
    return parts["left"] + parts["right"]


FORK = Flow("fork").then(prepare).fork().branch(left).branch(right).join(combine).build()


@pytest.fixture(autouse=True)
def _clear_ledger() -> Iterator[None]:
    ledger.clear()
    yield
    ledger.clear()
    _pair.clear()
    _gate.clear()


@pytest.fixture
def side_by_side() -> None:
    """Fork branches must run at the same time (see ``_meet``)."""
    _pair.append(threading.Barrier(2, timeout=30))


def _wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def _claim_log(backend: Any) -> list[tuple[str, list[str]]]:
    """Record each claim a worker makes on ``backend`` (worker id, keys it got): an empty
    claim after the work it could take proves it polled and left the rest alone."""
    log: list[tuple[str, list[str]]] = []
    real = backend.claim

    def claim(worker_id: str, *args: Any, **kwargs: Any) -> Any:
        got = real(worker_id, *args, **kwargs)
        log.append((worker_id, [c.key for c in got]))
        return got

    backend.claim = claim
    return log


def test_two_workers_drain_fork_runs_each_task_once(
    backend: Any, workers, side_by_side: None
) -> None:
    client = WorkflowClient(backend)
    for i in range(6):
        assert client.submit(FORK, f"run-{i}", i).status == "in_progress"
    workers(backend, [FORK], "w1")
    workers(backend, [FORK], "w2")
    _wait_for(lambda: all(client.status(f"run-{i}").is_completed() for i in range(6)), 60)
    for i in range(6):
        assert client.status(f"run-{i}").output == (i + 1) * 2 + (i + 1) * 3
    counts = Counter(name for name, _ in ledger)
    assert counts == {"prepare": 6, "left": 6, "right": 6, "combine": 6}
    assert {thread for _, thread in ledger} == {"sayiir-worker-w1-0", "sayiir-worker-w2-0"}


def test_fork_branches_of_one_run_execute_in_parallel_on_two_workers(
    backend: Any, workers, side_by_side: None
) -> None:
    client = WorkflowClient(backend)
    workers(backend, [FORK], "w1")
    workers(backend, [FORK], "w2")
    client.submit(FORK, "one", 1)
    # The branches meet at a barrier: the run completes only if they ran at the same time.
    _wait_for(lambda: client.status("one").is_completed(), timeout=60)
    assert client.status("one").output == 2 * 2 + 2 * 3
    threads = {thread for name, thread in ledger if name in ("left", "right")}
    assert len(threads) == 2


def test_delay_and_signal_need_no_worker_waiting(backend: Any, workers) -> None:
    wf = (
        Flow("parked")
        .then(prepare)
        .delay("nap", 0.3)
        .wait_for_signal("go")
        .then(prepare, name="after")
        .build()
    )
    client = WorkflowClient(backend)
    workers(backend, [wf], "w1", poll_interval=5.0)
    client.submit(wf, "p", 1)
    _wait_for(lambda: client.status("p").is_waiting())
    assert client.status("p").delay_id == "nap"
    _wait_for(lambda: client.status("p").is_awaiting_signal(), timeout=8)
    client.send_signal("p", "go", 41)
    _wait_for(lambda: client.status("p").is_completed(), timeout=8)
    assert client.status("p").output == 42


def test_an_idle_worker_wakes_when_a_timer_falls_due_not_at_its_next_poll(
    backend: Any, workers
) -> None:
    """Nothing announces that a delay ended: the worker asks when the next entry falls due
    (``next_due``) and sleeps that long, not the minute it would otherwise poll."""
    wf = Flow("nap").then(prepare).delay("nap", 0.5).then(prepare, name="after").build()
    client = WorkflowClient(backend)
    workers(backend, [wf], "w1", poll_interval=60.0)
    client.submit(wf, "n", 1)
    _wait_for(lambda: client.status("n").is_completed(), timeout=20)
    assert client.status("n").output == 3


@task
def bump(x: int) -> int:
    _record("bump")
    time.sleep(0.1)
    return x + 1


def test_a_task_used_twice_runs_twice_on_workers(backend: Any, workers) -> None:
    """Each use has its own checkpoint key, hence its own queue entry: the second use is
    claimed in the write that checkpoints the first, and again after a signal."""
    wf = Flow("twice").then(bump).then(bump).wait_for_signal("go").then(bump).build()
    client = WorkflowClient(backend)
    workers(backend, [wf], "w1")
    client.submit(wf, "t", 1)
    _wait_for(lambda: client.status("t").is_awaiting_signal())
    client.send_signal("t", "go", 40)
    _wait_for(lambda: client.status("t").is_completed())
    assert client.status("t").output == 41
    assert [n for n, _ in ledger] == ["bump", "bump", "bump"]
    assert [client.get_task_result("t", k) for k in ("bump", "bump#2", "bump#3")] == [2, 3, 41]


def test_the_same_task_in_two_fork_branches_on_two_workers(backend: Any, workers) -> None:
    wf = Flow("forked").fork().branch(left, bump).branch(right, bump).join(combine).build()
    client = WorkflowClient(backend)
    workers(backend, [wf], "w1")
    workers(backend, [wf], "w2")
    for i in range(3):
        client.submit(wf, f"f{i}", i)
    _wait_for(lambda: all(client.status(f"f{i}").is_completed() for i in range(3)))
    assert [client.status(f"f{i}").output for i in range(3)] == [2, 7, 12]
    assert Counter(n for n, _ in ledger) == {"left": 3, "right": 3, "bump": 6, "combine": 3}


flaky_failures: list[int] = []
flaky_starts: list[float] = []  # wall time at the start of each attempt


@task(retries=RetryPolicy(max_retries=2, initial_delay_secs=1.5))
def flaky(x: int) -> int:
    flaky_starts.append(time.time())
    _record("flaky")
    if not flaky_failures:
        flaky_failures.append(1)
        raise ValueError("first attempt fails")
    return x + 100


@task
def quick(x: int) -> int:
    _record("quick")
    return x


def test_a_retry_backoff_frees_the_worker_for_other_runs(backend: Any, workers) -> None:
    """The failing task goes back to the queue, due when its backoff ends; the worker's
    only thread is free meanwhile, and the retry runs once the backoff is over."""
    flaky_failures.clear()
    flaky_starts.clear()
    slow = Flow("flaky").then(flaky).build()
    fast = Flow("quick").then(quick).build()
    client = WorkflowClient(backend)
    workers(backend, [slow, fast], "w1", poll_interval=60.0)
    client.submit(slow, "a", 1)
    _wait_for(lambda: [n for n, _ in ledger] == ["flaky"])
    client.submit(fast, "b", 2)
    _wait_for(lambda: client.status("b").is_completed())
    assert client.status("a").status == "in_progress"  # still in its backoff
    _wait_for(lambda: client.status("a").is_completed(), timeout=20)
    # The backoff was kept: the retry is due 1.5 s after the failure, itself after the first
    # attempt began (both times taken by the task itself: no lag of the test's polling).
    assert flaky_starts[1] - flaky_starts[0] >= 1.5
    assert client.status("a").output == 101
    assert [n for n, _ in ledger] == ["flaky", "quick", "flaky"]


def test_cancel_reaches_queued_work(backend: Any, workers) -> None:
    wf = Flow("slow").then(left).then(right).build()
    client = WorkflowClient(backend)
    client.submit(wf, "c", 1)
    client.cancel("c", reason="not needed", cancelled_by="ops")
    claims = _claim_log(backend)
    workers(backend, [wf], "w1")
    _wait_for(lambda: ("w1", []) in claims)  # the worker polled and found nothing left
    status = client.status("c")
    assert status.is_cancelled()
    assert (status.reason, status.cancelled_by) == ("not needed", "ops")
    assert ledger == []


def test_shutdown_lets_the_running_task_finish_and_leaves_the_rest_queued(
    backend: Any, workers
) -> None:
    wf = Flow("two").then(left).then(right).build()
    client = WorkflowClient(backend)
    client.submit(wf, "s", 1)
    gate = threading.Event()
    _gate.append(gate)
    handle = workers(backend, [wf], "w1")
    _wait_for(lambda: [n for n, _ in ledger] == ["left"])  # left runs, held at the gate
    handle.shutdown()
    gate.set()
    handle.join(30)
    assert not handle.running
    assert client.get_task_result("s", "left") == 2  # finished and checkpointed
    assert client.get_task_result("s", "right") is None  # not started, still queued
    workers(backend, [wf], "w2")
    _wait_for(lambda: client.status("s").is_completed())
    assert client.status("s").output == 6
    assert Counter(n for n, _ in ledger) == {"left": 1, "right": 1}


def _chained_only(backend: Any) -> None:
    if not isinstance(backend, ChainedQueueStorage):
        pytest.skip("this backend claims after the final write (ChainedQueueStorage is optional)")


def test_a_worker_claims_its_next_run_in_the_write_that_ends_the_last(
    backend: Any, workers
) -> None:
    _chained_only(backend)
    chained: list[str] = []
    real = backend.finish_and_claim

    def finish_and_claim(*args: Any, **kwargs: Any) -> Any:
        request, claims = real(*args, **kwargs)
        chained.extend(c.instance_id for c in claims)
        return request, claims

    backend.finish_and_claim = finish_and_claim
    wf = Flow("chain").then(prepare).then(right).build()
    client = WorkflowClient(backend)
    for i in range(10):
        client.submit(wf, f"c{i}", i)
    workers(backend, [wf], "w1", max_concurrent_tasks=1)
    _wait_for(lambda: all(client.status(f"c{i}").is_completed() for i in range(10)))
    assert [client.status(f"c{i}").output for i in range(10)] == [(i + 1) * 3 for i in range(10)]
    # The first run was claimed on its own; each next one came with the previous final write.
    assert chained == [f"c{i}" for i in range(1, 10)]


def test_a_claim_taken_as_the_worker_began_to_stop_is_given_back_not_left_held(
    backend: Any, workers
) -> None:
    _chained_only(backend)
    wf = Flow("chain-stop").then(prepare).build()
    client = WorkflowClient(backend)
    for name in "abc":
        client.submit(wf, name, 1)
    started = threading.Event()
    box: list[Any] = []
    real = backend.finish_and_claim

    def finish_and_claim(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        assert started.wait(10)
        box[0].shutdown()  # the stop arrives while the write that took the next run commits
        return result

    backend.finish_and_claim = finish_and_claim
    box.append(workers(backend, [wf], "w1", max_concurrent_tasks=1))
    started.set()
    box[0].join(30)
    assert not box[0].running
    # a ended and took b in that write; the stopping worker started no task of b and gave
    # its claim back at once, so another worker runs b now, not when a lease runs out.
    assert client.status("a").is_completed()
    assert not client.status("b").is_completed() and not client.status("c").is_completed()
    backend.finish_and_claim = real
    workers(backend, [wf], "w2", claim_ttl=300.0)
    _wait_for(lambda: client.status("b").is_completed() and client.status("c").is_completed())


def test_a_stale_claim_cannot_write(backend: Any) -> None:
    """A worker whose lease expired and was taken over is fenced off (nothing written)."""
    wf = Flow("f").then(prepare).build()
    WorkflowClient(backend).submit(wf, "x", 1)
    [old] = backend.claim("w1", [wf.definition_hash], [], 1, lease_secs=0.05)
    time.sleep(0.1)
    [new] = backend.claim("w2", [wf.definition_hash], [], 1, lease_secs=30)
    assert new.attempt == old.attempt + 1
    with pytest.raises(LeaseLostError, match="lost its claim"):
        backend.advance(old, [StepRecord("prepare", b"99", "prepare")])
    assert backend.get_checkpoint("x", "prepare") is None
    assert backend.heartbeat([old, new], 30) == [old]
    backend.advance(new, [StepRecord("prepare", b"2", "prepare")], release=True)
    assert backend.get_checkpoint("x", "prepare") == b"2"


def test_tagged_tasks_go_only_to_workers_serving_the_tags(backend: Any, workers) -> None:
    @task(tags=["gpu"])
    def render(x: int) -> int:
        _record("render")
        return x * 10

    wf = Flow("tags").then(render).build()
    client = WorkflowClient(backend)
    client.submit(wf, "t", 1)
    # The start entry is untagged: any worker takes it, then queues the tagged task.
    claims = _claim_log(backend)
    workers(backend, [wf], "plain")
    # Once it took the start entry, its next claim comes back empty: the tagged task is not
    # for it.
    _wait_for(lambda: ("plain", []) in claims[1:] and bool(claims[0][1]))
    assert not client.status("t").is_completed()
    assert ledger == []
    workers(backend, [wf], "gpu-box", tags=["gpu"])
    _wait_for(lambda: client.status("t").is_completed())
    assert [thread for _, thread in ledger] == ["sayiir-worker-gpu-box-0"]


def test_priority_orders_claims(backend: Any) -> None:
    wf = Flow("p").then(prepare).build()
    client = WorkflowClient(backend)
    client.submit(wf, "low", 1)
    client.submit(wf, "high", 1)
    backend.enqueue("low", [QueueItem("prepare", "prepare", priority=5)])
    backend.enqueue("high", [QueueItem("prepare", "prepare", priority=1)])
    claims = backend.claim("w", [wf.definition_hash], [], 4, 30)
    assert (claims[0].instance_id, claims[0].key) == ("high", "prepare")


def test_a_worker_killed_before_deciding_on_the_join_leaves_its_claim_to_expire() -> None:
    """Two workers finish a fork's last branches at once; each re-reads the run after its
    own commit. The one that re-reads last must queue the join, so it keeps its claim
    until then: killed in between, the claim expires and another worker decides instead.
    (Released with the checkpoint, as before, the join was never queued: a stuck run.)
    Driven effect by effect through the sans-IO engine to force that interleaving."""
    from sayiir.engine import _runs
    from sayiir.engine._effects import Store
    from sayiir.engine._interpreter import WorkerMode
    from sayiir.engine.engines import resolve

    backend = InMemoryBackend()
    definition, registry = resolve(FORK, None)
    client = WorkflowClient(backend)
    client.submit(FORK, "j", 1)

    def turn(worker_id: str) -> Any:
        [claim] = backend.claim(worker_id, [definition.definition_hash], [], 1, 0.3)
        mode = WorkerMode(claim, 0.3, lambda: False)
        return claim, _runs.work_claim(definition, dict(registry), backend.codec, mode)

    def perform(eff: Store[Any]) -> Any:
        return getattr(backend, eff.op)(*eff.args, **eff.kwargs)

    # Worker A: prepare, then the fork (right queued), then left; stop before left's write.
    _, a = turn("A")
    a_eff = next(a)
    while not (a_eff.op == "advance" and [s.key for s in a_eff.args[1]] == ["left"]):
        a_eff = a.send(perform(a_eff))
    # Worker B runs right meanwhile and re-reads before A's write: left is not done yet.
    claim_b, b = turn("B")
    assert claim_b.key == "right"
    b_eff = next(b)
    with pytest.raises(StopIteration):
        while True:
            b_eff = b.send(perform(b_eff))
    # A writes left's checkpoint and what its path leaves, then dies before it re-reads
    # the run (the read that would show right done and make it queue the join).
    a_eff = a.send(perform(a_eff))
    while a_eff.op != "load":
        a_eff = a.send(perform(a_eff))
    a.close()
    assert not client.status("j").is_completed()
    # A's claim was kept: once its lease is over, another worker takes the decision over.
    time.sleep(0.4)
    handle = Worker("C", backend, poll_interval=0.05, claim_ttl=5.0).start([FORK])
    try:
        _wait_for(lambda: client.status("j").is_completed())
    finally:
        handle.shutdown()
        handle.join(10)
    assert client.status("j").output == 2 * 2 + 2 * 3
    assert Counter(name for name, _ in ledger) == {
        "prepare": 1,
        "left": 1,
        "right": 1,
        "combine": 1,
    }


# -- final states are final on workers (issue 10, item 2) --------------------------------------

_held_gate = threading.Event()
_in_task = threading.Event()


@task
def held(x: int) -> int:
    _record("held")
    _in_task.set()
    assert _held_gate.wait(30)
    return x * 10


@task
def after_held(x: int) -> int:
    _record("after_held")
    return x + 3


def test_pause_while_a_worker_runs_the_task_after_a_delay(backend: Any, workers) -> None:
    """The task after an expired delay runs on a worker: the run shows in progress (it used
    to show waiting, so a pause was applied at once and the worker's completion then
    overwrote it). The pause is obeyed at the next step and stays; unpaused, it completes."""
    _held_gate.clear()
    _in_task.clear()
    wf = Flow("held").then(prepare).delay("nap", 0.2).then(held).then(after_held).build()
    client = WorkflowClient(backend)
    workers(backend, [wf], "w1")
    client.submit(wf, "h", 1)
    try:
        assert _in_task.wait(30)
        assert client.status("h").status == "in_progress"
        client.pause("h", reason="hold")
        assert client.status("h").status == "in_progress"  # requested: obeyed at the boundary
    finally:
        _held_gate.set()
    _wait_for(lambda: client.status("h").status == "paused")
    # A later run of the same workflow: once the worker finished it, it has claimed past the
    # paused run's (older) entries; nothing may have turned the pause into anything else.
    client.submit(wf, "h-later", 1)
    _wait_for(lambda: client.status("h-later").is_completed())
    assert client.status("h").status == "paused"
    assert [name for name, _ in ledger].count("after_held") == 1  # h-later's only
    client.unpause("h")
    _wait_for(lambda: client.status("h").is_completed())
    assert client.status("h").output == 23
    assert [name for name, _ in ledger].count("held") == 2  # once per run
