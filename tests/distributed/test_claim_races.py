"""Leases, fences and crash windows of workers, forced deterministically in one process.

Each test drives the real engine (``_runs.work_claim``, effect by effect where an
interleaving or a crash point must be forced) over InMemoryBackend and PostgresBackend (a
table prefix of its own per test). The same failures are reproduced with real worker
processes in test_worker_processes.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sayiir import Flow, WorkflowClient, task
from sayiir.backends.protocol import QueueStorage
from sayiir.core.records import Claim, StepRecord
from sayiir.engine import _runs
from sayiir.engine._drive import drive
from sayiir.engine._effects import Store, Yielding
from sayiir.engine._interpreter import WorkerMode
from sayiir.engine.engines import resolve
from sayiir.errors import LeaseLostError
from sayiir.worker import Worker

ran: Counter[str] = Counter()
_lock = threading.Lock()


def _ran(name: str) -> None:
    with _lock:
        ran[name] += 1


@task
def one(x: int) -> int:
    _ran("one")
    return x + 1


@task
def two(x: int) -> int:
    _ran("two")
    return x * 10


@task
def left(x: int) -> int:
    _ran("left")
    return x * 2


@task
def right(x: int) -> int:
    _ran("right")
    return x * 3


@task
def combine(parts: dict[str, int]) -> int:
    _ran("combine")
    return parts["left"] + parts["right"]


LINEAR = Flow("linear").then(one).then(two).build()
FORK = Flow("fork").then(one).fork().branch(left).branch(right).join(combine).build()
SIGNALLED = Flow("signalled").then(one).then(two).wait_for_signal("go").then(left).build()


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    ran.clear()
    yield
    ran.clear()


def wait_for(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


class Turn:
    """One worker's turn on one claim, performed effect by effect."""

    def __init__(self, backend: Any, wf: Any, claim: Claim, lease: float) -> None:
        definition, registry = resolve(wf, None)
        self.backend = backend
        mode = WorkerMode(claim, lease, lambda: False)
        self.gen: Yielding = _runs.work_claim(definition, dict(registry), backend.codec, mode)
        self.eff: Any = next(self.gen)  # only Store effects: tasks run inline
        self.result: Any = None

    def step(self) -> bool:
        """Perform the pending effect; False once the turn is over."""
        assert self.eff is not None
        try:
            self.eff = self.gen.send(
                getattr(self.backend, self.eff.op)(*self.eff.args, **self.eff.kwargs)
            )
        except StopIteration as stop:
            self.eff, self.result = None, stop.value
            return False
        return True

    def until(self, cond: Callable[[Store[Any]], bool]) -> None:
        """Perform effects until the pending one matches ``cond`` (not performed)."""
        while self.eff is not None and not cond(self.eff):
            self.step()
        assert self.eff is not None, "the turn ended first"

    def finish(self) -> Any:
        while self.step():
            pass
        return self.result


def claim_one(backend: QueueStorage, wf: Any, worker_id: str, lease: float) -> Claim:
    [claim] = backend.claim(worker_id, [wf.definition_hash], [], 1, lease)
    return claim


def drain(backend: Any, wf: Any, worker_id: str) -> None:
    """Run every claimable entry to the end, one turn at a time, as a live worker would."""
    while claims := backend.claim(worker_id, [wf.definition_hash], [], 1, 30.0):
        definition, registry = resolve(wf, None)
        mode = WorkerMode(claims[0], 30.0, lambda: False)
        drive(_runs.work_claim(definition, dict(registry), backend.codec, mode), backend)


# -- 1. leases are renewed while a task runs -------------------------------------------------

RENEWALS = 9  # three leases' worth of heartbeats (one every claim_ttl / 3)
renewed = threading.Event()
starts: list[str] = []


@task
def long_task(x: int) -> int:
    """Runs until its claim has been renewed RENEWALS times, or another execution starts."""
    with _lock:
        starts.append(threading.current_thread().name)
    deadline = time.monotonic() + 60
    while not renewed.is_set() and len(starts) == 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    return x + 1


def test_a_task_longer_than_its_lease_keeps_its_claim_and_runs_once(backend: Any) -> None:
    """Two workers, a task that runs three leases long: its worker's heartbeat renews the
    claim all along, so the other worker never takes it over (one execution)."""
    renewed.clear()
    starts.clear()
    renewals: list[Claim] = []
    original = backend.heartbeat

    def counting(claims: list[Claim], lease_secs: float) -> list[Claim]:
        lost: list[Claim] = original(claims, lease_secs)
        with _lock:
            renewals.extend(c for c in claims if c.instance_id == "long" and c not in lost)
            if len(renewals) >= RENEWALS:
                renewed.set()
        return lost

    backend.heartbeat = counting
    wf = Flow("long").then(long_task).build()
    client = WorkflowClient(backend)
    client.submit(wf, "long", 1)
    handles = [
        Worker(wid, backend, poll_interval=0.05, claim_ttl=1.5).start([wf]) for wid in ("a", "b")
    ]
    try:
        wait_for(lambda: client.status("long").is_completed() or len(starts) > 1, 90, "done")
    finally:
        for handle in handles:
            handle.shutdown()
        for handle in handles:
            handle.join(10)
    assert len(starts) == 1, f"ran {len(starts)} times: {starts}"
    assert len(renewals) >= RENEWALS
    assert len({(c.worker_id, c.attempt) for c in renewals}) == 1  # one claim, never lost
    assert client.status("long").output == 2


# -- 2. the fence checks the attempt, not only the worker ------------------------------------


def test_a_stale_claim_of_the_same_worker_cannot_write(backend: Any) -> None:
    """A worker restarted under the same id re-claims its own expired entry (attempt 2):
    the stale claim (attempt 1, same worker, same key) is fenced off all the same, and its
    heartbeats extend nothing (the new claim's lease still runs out)."""
    WorkflowClient(backend).submit(LINEAR, "x", 1)
    old = claim_one(backend, LINEAR, "w", 0.05)
    time.sleep(0.1)
    new = claim_one(backend, LINEAR, "w", 0.3)
    assert (new.key, new.worker_id, new.attempt) == (old.key, old.worker_id, old.attempt + 1)
    with pytest.raises(LeaseLostError, match="lost its claim"):
        backend.advance(old, [StepRecord("one", b"99", "one")])
    with pytest.raises(LeaseLostError):
        backend.advance(old, [], release=True)
    assert backend.get_checkpoint("x", "one") is None
    assert backend.heartbeat([old], 30.0) == [old]
    time.sleep(0.4)  # the new claim's lease ends: the stale heartbeat did not extend it
    third = claim_one(backend, LINEAR, "w", 30.0)
    assert third.attempt == new.attempt + 1
    assert backend.heartbeat([old, new, third], 30.0) == [old, new]
    backend.advance(third, [StepRecord("one", b"2", "one")], release=True)
    assert backend.get_checkpoint("x", "one") == b"2"


# -- 3. a worker killed at any point of its turn ---------------------------------------------


@pytest.mark.parametrize(
    ("wf", "output"), [(LINEAR, 20), (FORK, 2 * 2 + 2 * 3)], ids=["linear", "fork"]
)
def test_a_worker_killed_between_any_two_writes_leaves_a_run_others_finish(
    backend: Any, wf: Any, output: int
) -> None:
    """Kill the worker after each effect of its turn in turn: the run is never stuck (its
    claim expires and another worker continues) and never finished twice over. A worker
    that gave its claim up before writing the final status would leave, killed there, a
    running run with nothing queued."""
    client = WorkflowClient(backend)
    crash_point = 0
    while True:
        run = f"{wf.workflow_id}-{crash_point}"
        client.submit(wf, run, 1)
        turn = Turn(backend, wf, claim_one(backend, wf, "dies", 0.2), 0.2)
        alive = True
        for _ in range(crash_point):
            alive = turn.step()
            if not alive:
                break
        if not alive:
            break  # the whole turn ran: every crash point was tried
        turn.gen.close()  # killed here: its claims stay until their lease ends
        time.sleep(0.3)
        drain(backend, wf, "rescuer")
        status = client.status(run)
        assert status.is_completed(), (crash_point, status)
        assert status.output == output, crash_point
        crash_point += 1
    assert crash_point >= 2


def test_two_workers_finishing_the_last_branches_at_once_both_re_read_and_one_runs_the_join(
    backend: Any,
) -> None:
    """A and B each run a branch while the other's is not checkpointed yet, then both
    commit (each also tries to take the other's branch, held: refused), then both re-read
    the run: each sees the fork complete only on that re-read, so the re-read must go on to
    the join (once), or the run is stuck for good."""
    client = WorkflowClient(backend)
    client.submit(FORK, "both", 1)
    a = Turn(backend, FORK, claim_one(backend, FORK, "A", 30.0), 30.0)
    a.until(lambda e: e.op == "advance" and [s.key for s in e.args[1]] == ["left"])
    b = Turn(backend, FORK, claim_one(backend, FORK, "B", 30.0), 30.0)
    b.until(lambda e: e.op == "advance" and [s.key for s in e.args[1]] == ["right"])
    assert a.eff.kwargs["next_item"].key == "right"  # A would take right, B left
    assert b.eff.kwargs["next_item"].key == "left"
    a.step()  # A commits left ...
    a.until(lambda e: e.op == "load")
    b.step()  # ... and B right; then both re-read the run
    b.until(lambda e: e.op == "load")
    a_status, b_status = a.finish(), b.finish()
    assert a_status.output == 2 * 2 + 2 * 3  # A's re-read saw right: it ran the join
    assert b_status is None  # B's found the run over
    drain(backend, FORK, "C")
    assert client.status("both").output == 2 * 2 + 2 * 3
    assert ran == {"one": 1, "left": 1, "right": 1, "combine": 1}


def test_a_fork_of_small_branches_runs_on_the_worker_that_spread_it(backend: Any) -> None:
    """The spreading worker takes each queued branch nobody claimed in the write that
    checkpoints the previous one, then the join: no other worker needs to claim anything."""
    client = WorkflowClient(backend)
    client.submit(FORK, "alone", 1)
    a = Turn(backend, FORK, claim_one(backend, FORK, "A", 30.0), 30.0)
    ops = [a.eff.op]
    while a.step():
        ops.append(a.eff.op)
    assert a.result.output == 2 * 2 + 2 * 3
    # load; "left" claimed with "right" queued; "right" taken; the join; the final write
    assert ops == ["load", "advance", "advance", "advance", "advance"]
    assert ran == {"one": 1, "left": 1, "right": 1, "combine": 1}
    assert backend.claim("B", [FORK.definition_hash], [], 10, 30.0) == []


# -- 4. a path never runs a task that another worker holds -----------------------------------


def test_a_wake_up_while_a_task_runs_elsewhere_does_not_run_it_again(backend: Any) -> None:
    """A signal sent while worker A runs task ``two`` queues a wake-up of the run; worker C
    claims it and replays the run up to ``two``. C must find ``two`` held and leave it to A
    (run twice, it would also checkpoint it behind A's back)."""
    client = WorkflowClient(backend)
    client.submit(SIGNALLED, "s", 1)
    a = Turn(backend, SIGNALLED, claim_one(backend, SIGNALLED, "A", 30.0), 30.0)
    # A runs `one`, then claims `two` in the write that checkpoints `one`, and runs `two`;
    # it stops before the write that checkpoints it.
    a.until(lambda e: e.op == "advance" and e.kwargs.get("next_item") is not None)
    a.step()
    assert ran == {"one": 1, "two": 1}
    client.send_signal("s", "go", 7)  # early: buffered, and a wake-up entry is queued
    c = Turn(backend, SIGNALLED, claim_one(backend, SIGNALLED, "C", 30.0), 30.0)
    assert c.finish() is None  # suspended: nothing for C to run
    assert ran == {"one": 1, "two": 1}
    status = a.finish()
    assert (status.status, status.output) == ("completed", 14)
    assert ran == {"one": 1, "two": 1, "left": 1}
    assert client.status("s").output == 14


def test_a_wake_up_after_the_branches_does_not_run_a_join_another_worker_holds(
    backend: Any,
) -> None:
    """Worker B finishes the last branch and claims the join; a stray wake-up of the run
    (a signal nobody waits for) is claimed by C, whose replay reaches the join with every
    branch checkpointed: C must find the join held and leave it to B."""
    client = WorkflowClient(backend)
    client.submit(FORK, "j", 1)
    a = Turn(backend, FORK, claim_one(backend, FORK, "A", 30.0), 30.0)
    # A runs one and left, and would take right in the write that checkpoints left ...
    a.until(lambda e: e.op == "advance" and [s.key for s in e.args[1]] == ["left"])
    b = Turn(backend, FORK, claim_one(backend, FORK, "B", 30.0), 30.0)  # ... B claims it first
    assert a.finish() is None  # right is B's: A re-reads and lets go
    # B runs right, then claims the join in a write of its own, and runs it.
    b.until(lambda e: e.op == "advance" and e.kwargs.get("next_item") is not None)
    b.step()
    assert ran == {"one": 1, "left": 1, "right": 1, "combine": 1}
    client.send_signal("j", "unrelated", 0)
    c = Turn(backend, FORK, claim_one(backend, FORK, "C", 30.0), 30.0)
    assert c.finish() is None  # suspended: the join is B's
    assert ran["combine"] == 1
    status = b.finish()
    assert (status.status, status.output) == ("completed", 2 * 2 + 2 * 3)
    assert client.status("j").output == 2 * 2 + 2 * 3
    assert ran == {"one": 1, "left": 1, "right": 1, "combine": 1}
