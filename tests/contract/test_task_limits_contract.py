"""The task limits' storage operations (``TaskLimitStorage``, ``TaskWaitStorage``), the same on
every backend: memory, SQLite, PostgreSQL plain and partitioned. Threads race for slots and
starts; holders that are gone (their lease or claim expired, their run finished) free their
slots."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from sayiir.core.records import FinalState, InstanceRecord, QueueItem, Status, StepRecord
from sayiir.core.task_limits import GateAnswer, GateAsk
from tests.contract.test_queue_contract import FACTORIES, LONG

Backend = Any  # QueueStorage + TaskLimitStorage + TaskWaitStorage


@pytest.fixture(params=list(FACTORIES))
def storage(request: pytest.FixtureRequest) -> Iterator[Backend]:
    backend = FACTORIES[request.param](request)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def tag() -> str:
    """A prefix private to this test (a module's PostgreSQL tests share one database)."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def running(storage: Backend, tag: str) -> Callable[[], tuple[str, str]]:
    """An in-process run executing now (its lease held): (instance id, token)."""

    def make() -> tuple[str, str]:
        iid, token = f"{tag}-run-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        rec = InstanceRecord(iid, "wf", "h", Status.RUNNING, b"1", token=token)
        assert storage.create_instance(rec, replace=False) is None
        return iid, token

    return make


@pytest.fixture
def claimed(storage: Backend, tag: str) -> Callable[..., tuple[str, Any]]:
    """A worker-run run whose "continue" entry this test claims: (instance id, claim)."""
    h = f"{tag}-hash"

    def make(lease: float = LONG) -> tuple[str, Any]:
        iid = f"{tag}-q-{uuid.uuid4().hex[:8]}"
        rec = InstanceRecord(iid, "wf", h, Status.RUNNING, b"1", distributed=True)
        assert storage.create_instance(replace(rec, token=str(uuid.uuid4())), replace=False) is None
        [claim] = [c for c in storage.claim("w", [h], [], 50, lease) if c.instance_id == iid]
        return iid, claim

    return make


def test_slots_up_to_the_limit_then_refused_until_one_is_given_back(
    storage: Backend, tag: str, running: Callable[[], tuple[str, str]]
) -> None:
    task = f"{tag}-charge"
    runs = [running() for _ in range(3)]
    assert storage.acquire_task_slot(task, 2, runs[0][0], "charge", runs[0][1], None)
    assert storage.acquire_task_slot(task, 2, runs[1][0], "charge", runs[1][1], None)
    assert not storage.acquire_task_slot(task, 2, runs[2][0], "charge", runs[2][1], None)
    # A step holding a slot keeps it when it asks again (a re-sent call).
    assert storage.acquire_task_slot(task, 2, runs[0][0], "charge", runs[0][1], None)
    assert not storage.acquire_task_slot(task, 2, runs[2][0], "charge", runs[2][1], None)
    storage.release_task_slot(task, runs[0][0], "charge")
    storage.release_task_slot(task, runs[0][0], "charge")  # none held: nothing happens
    assert storage.acquire_task_slot(task, 2, runs[2][0], "charge", runs[2][1], None)
    # Another task's slots are its own.
    assert storage.acquire_task_slot(f"{tag}-other", 1, runs[0][0], "other", runs[0][1], None)


def test_a_slot_is_free_once_its_holder_lost_the_run_or_finished(
    storage: Backend, tag: str, running: Callable[[], tuple[str, str]]
) -> None:
    task = f"{tag}-t"
    (a, ta), (b, tb), (c, tc) = running(), running(), running()
    assert storage.acquire_task_slot(task, 1, a, "t", ta, None)
    assert not storage.acquire_task_slot(task, 1, b, "t", tb, None)
    assert storage.renew_lease(a, ta, release=True)  # its execution let go of the run
    assert storage.acquire_task_slot(task, 1, b, "t", tb, None)
    assert not storage.acquire_task_slot(task, 1, c, "t", tc, None)
    storage.finish(b, FinalState(Status.COMPLETED, output=b"1"), [], token=tb)
    assert storage.acquire_task_slot(task, 1, c, "t", tc, None)
    # A slot taken under a token the run no longer has (a stale execution) is not held.
    assert storage.acquire_task_slot(f"{tag}-u", 1, c, "u", "not-the-token", None)
    assert storage.acquire_task_slot(f"{tag}-u", 1, c, "v", tc, None)


def test_a_workers_slot_lives_as_long_as_its_claim(
    storage: Backend, tag: str, claimed: Callable[..., tuple[str, Any]]
) -> None:
    task = f"{tag}-t"
    a, claim_a = claimed(lease=0.5)
    b, claim_b = claimed()
    assert storage.acquire_task_slot(task, 1, a, "t", claim_a.key, claim_a.attempt)
    assert not storage.acquire_task_slot(task, 1, b, "t", claim_b.key, claim_b.attempt)
    storage.heartbeat([claim_a], 0.5)
    assert not storage.acquire_task_slot(task, 1, b, "t", claim_b.key, claim_b.attempt)
    time.sleep(0.7)  # a's claim expired: its worker is gone
    assert storage.acquire_task_slot(task, 1, b, "t", claim_b.key, claim_b.attempt)


def test_a_checkpoint_that_frees_its_slot_gives_it_back_in_the_same_write(
    storage: Backend, tag: str, running: Callable[[], tuple[str, str]],
    claimed: Callable[..., tuple[str, Any]],
) -> None:  # fmt: skip
    """``StepRecord.frees_slot``: the step's slot goes with its checkpoint, whichever write
    stores it (save_steps, finish, a worker's advance); without it the slot stays."""
    task = f"{tag}-t"
    (a, ta), (b, tb), (c, tc) = running(), running(), running()
    waiter, wtoken = running()
    ok = StepRecord("t", b"1", task, 1, 1.0, 2.0)
    assert storage.acquire_task_slot(task, 1, a, "t", ta, None)
    storage.save_steps(a, [ok], token=ta)  # a checkpoint that does not free it
    assert not storage.acquire_task_slot(task, 1, waiter, "t", wtoken, None)
    storage.save_steps(a, [replace(ok, key="other"), replace(ok, frees_slot=True)], token=ta)
    assert storage.get_checkpoint(a, "t") == b"1"
    assert storage.acquire_task_slot(task, 1, b, "t", tb, None)
    # finish: a run's last step frees its slot with the final state.
    assert not storage.acquire_task_slot(task, 1, waiter, "t", wtoken, None)
    storage.renew_lease(b, tb)
    storage.save_steps(b, [replace(ok, key="u")], token=tb)
    assert not storage.acquire_task_slot(task, 1, waiter, "t", wtoken, None)
    storage.finish(
        b, FinalState(Status.WAITING, wake_at=time.time() + 60),
        [replace(ok, frees_slot=True)], token=tb,
    )  # fmt: skip
    assert storage.acquire_task_slot(task, 1, c, "t", tc, None)
    storage.release_task_slot(task, c, "t")
    # advance: a worker's checkpoint (one step or several) frees it under its claim.
    q, claim = claimed()
    assert storage.acquire_task_slot(task, 1, q, "t", claim.key, claim.attempt)
    assert not storage.acquire_task_slot(task, 1, waiter, "t", wtoken, None)
    _, kept = storage.advance(claim, [replace(ok, key="x"), replace(ok, frees_slot=True)])
    assert kept is not None  # the claim is kept: only the slot went
    assert storage.acquire_task_slot(task, 1, waiter, "t", wtoken, None)


def test_a_gated_advance_asks_the_slot_and_the_start_under_the_claim_it_moves(
    storage: Backend, tag: str, running: Callable[[], tuple[str, str]],
    claimed: Callable[..., tuple[str, Any]],
) -> None:  # fmt: skip
    """``advance_gated``: the checkpoint, the claim moved to the next task, and that task's
    slot (held by the new claim) and rate start, in one write; nothing asked when the claim
    does not move."""
    task, rated = f"{tag}-t", f"{tag}-r"
    other, other_token = running()
    a, claim_a = claimed()
    out = StepRecord("s0", b"1", "s0", 1, 1.0, 2.0)
    gate = GateAsk(task, 1, f"{tag}-bucket", 1, 60.0, time.time())
    request, moved, answer = storage.advance_gated(
        claim_a, [out], next_item=QueueItem("s1", task), gate=gate
    )
    assert (request, moved.key, answer) == (None, "s1", GateAnswer(True, 0.0))
    assert storage.get_checkpoint(a, "s0") == b"1"
    # The slot is held by the moved claim; the window's one start is used.
    assert not storage.acquire_task_slot(task, 1, other, "t", other_token, None)
    assert storage.take_rate_token(rated, f"{tag}-bucket", 1, 60.0, time.time(), other, "t") > 0
    # Another run: the claim moves, the slot is refused (so no start is asked).
    _, claim_b = claimed()
    _, moved_b, answer_b = storage.advance_gated(
        claim_b, [out], next_item=QueueItem("s1", task), gate=gate
    )
    assert (moved_b.key, answer_b) == ("s1", GateAnswer(False, 0.0))
    # A start refused with the slot taken: the wait until the window has one.
    _, claim_c = claimed()
    _, _, answer_c = storage.advance_gated(
        claim_c, [out], next_item=QueueItem("s1", f"{tag}-u"),
        gate=GateAsk(f"{tag}-u", 5, f"{tag}-bucket", 1, 60.0, time.time()),
    )  # fmt: skip
    assert answer_c is not None and answer_c.slot and 0 < answer_c.wait <= 60.0
    # The move's write gives the slot of a's finished step back (frees_slot).
    _, moved_again, _ = storage.advance_gated(
        moved, [replace(out, key="s1", task_id=task, frees_slot=True)],
        next_item=QueueItem("s2", f"{tag}-v"), gate=GateAsk(f"{tag}-v", 1),
    )  # fmt: skip
    assert moved_again.key == "s2"
    assert storage.acquire_task_slot(task, 1, other, "t", other_token, None)
    # The claim does not move to a task already checkpointed: nothing is asked.
    _, kept, none = storage.advance_gated(
        moved_again, [replace(out, key="s3")], next_item=QueueItem("s3", f"{tag}-w"),
        gate=GateAsk(f"{tag}-w", 1),
    )  # fmt: skip
    assert none is None and kept is not None and kept.key == "s2"
    assert storage.acquire_task_slot(f"{tag}-w", 1, other, "w", other_token, None)


def test_racing_threads_never_hold_more_than_the_limit(
    storage: Backend, tag: str, running: Callable[[], tuple[str, str]]
) -> None:
    task, limit = f"{tag}-race", 3
    runs = [running() for _ in range(8)]
    lock = threading.Lock()
    holding: set[str] = set()
    peak = [0]
    taken = [0]
    barrier = threading.Barrier(len(runs))

    def worker(iid: str, token: str) -> None:
        barrier.wait()
        for _ in range(6):
            while not storage.acquire_task_slot(task, limit, iid, "s", token, None):
                time.sleep(0.001)
            with lock:
                holding.add(iid)
                peak[0] = max(peak[0], len(holding))
                taken[0] += 1
            time.sleep(0.002)
            with lock:
                holding.discard(iid)
            storage.release_task_slot(task, iid, "s")

    threads = [threading.Thread(target=worker, args=run) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert taken[0] == 8 * 6
    assert peak[0] <= limit


def test_rate_tokens_n_per_window_then_the_wait_until_the_oldest_leaves(
    storage: Backend, tag: str, running: Callable[[], tuple[str, str]]
) -> None:
    bucket = f"{tag}-api"
    iid, _ = running()
    now = 1_000_000.0
    for i in range(3):
        assert storage.take_rate_token("call", bucket, 3, 10.0, now + i, iid, "call") == 0.0
    wait = storage.take_rate_token("call", bucket, 3, 10.0, now + 3, iid, "call")
    assert wait == pytest.approx(7.0, abs=0.01)  # the start at `now` leaves at now + 10
    assert storage.take_rate_token("call", f"{bucket}-b", 3, 10.0, now + 3, iid, "call") == 0.0
    assert storage.take_rate_token("call", bucket, 3, 10.0, now + 10.01, iid, "call") == 0.0
    assert storage.take_rate_token("call", bucket, 3, 10.0, now + 10.02, iid, "call") > 0


def test_racing_threads_take_exactly_n_starts_of_one_window(
    storage: Backend, tag: str, running: Callable[[], tuple[str, str]]
) -> None:
    bucket = f"{tag}-race"
    runs = [running() for _ in range(8)]
    now = 2_000_000.0
    granted: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(runs))

    def worker(iid: str, _token: str) -> None:
        barrier.wait()
        for i in range(3):
            wait = storage.take_rate_token("t", bucket, 5, 60.0, now + i * 0.001, iid, f"s{i}")
            if wait == 0.0:
                with lock:
                    granted.append(wait)

    threads = [threading.Thread(target=worker, args=run) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(granted) == 5


def test_the_wait_of_a_refused_step_is_readable_and_forgotten_once_it_starts(
    storage: Backend, tag: str, running: Callable[[], tuple[str, str]]
) -> None:
    task = f"{tag}-charge"
    (a, ta), (b, tb) = running(), running()
    assert storage.task_wait(b, time.time()) is None
    assert storage.acquire_task_slot(task, 1, a, "charge", ta, None)
    assert not storage.acquire_task_slot(task, 1, b, "charge", tb, None)
    wait = storage.task_wait(b, time.time())
    assert (wait.task_id, wait.kind, wait.limit, wait.holders) == (task, "slot", 1, (a,))
    assert wait.reason(time.time()) == (
        f"waiting: task {task!r} is at its concurrency limit (1 of 1 held by {a})"
    )
    storage.release_task_slot(task, a, "charge")
    assert storage.acquire_task_slot(task, 1, b, "charge", tb, None)
    assert storage.task_wait(b, time.time()) is None
    now = time.time()
    assert storage.take_rate_token("call", f"{tag}-api", 1, 60.0, now, a, "call") == 0.0
    assert storage.take_rate_token("call", f"{tag}-api", 1, 60.0, now + 1, b, "call") > 0
    wait = storage.task_wait(b, now + 1)
    assert (wait.kind, wait.name, wait.limit, wait.per) == ("rate", f"{tag}-api", 1, 60.0)
    assert (
        wait.reason(now + 1) == f"waiting: rate limit '{tag}-api' (1 per 60s), next token in 59.0s"
    )
