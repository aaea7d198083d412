"""The worker-queue contract (``QueueStorage``), checked against every queue backend.

``InMemoryBackend`` is the reference: each test states a rule of
``sayiir.backends.protocol.QueueStorage`` (and of the queue side effects of the ``Storage``
calls) and runs it on every factory in ``FACTORIES``. The queue is observed the way workers
see it, through ``claim``. Each test uses a definition hash of its own, so claims never see
another test's entries in a shared database.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from sayiir.backends.memory import InMemoryBackend
from sayiir.backends.postgres import PostgresBackend
from sayiir.backends.protocol import ChainedQueueStorage, QueueStorage
from sayiir.backends.sqlite import SqliteBackend
from sayiir.core.records import (
    Claim,
    ClaimAsk,
    ControlRequest,
    FinalState,
    InstanceRecord,
    QueueItem,
    Status,
    StepRecord,
    lease_expired,
)
from sayiir.errors import LeaseLostError

Factory = Callable[[pytest.FixtureRequest], QueueStorage]

# One entry per queue backend (PostgreSQL is marked and skipped without a DSN by conftest).
FACTORIES: dict[str, Factory] = {
    "memory": lambda _request: InMemoryBackend(),
    "postgres": lambda request: PostgresBackend(
        request.getfixturevalue("pg_dsn"), max_connections=12
    ),
    "postgres_partitioned": lambda request: PostgresBackend(
        request.getfixturevalue("pg_partitioned_dsn"), max_connections=12, partition="month"
    ),
    "sqlite": lambda request: SqliteBackend(request.getfixturevalue("tmp_path") / "queue.db"),
}

LONG = 60.0  # a lease that never runs out during a test


@pytest.fixture(params=list(FACTORIES))
def queue(request: pytest.FixtureRequest) -> Iterator[QueueStorage]:
    backend = FACTORIES[request.param](request)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def h() -> str:
    """This test's definition hash: claims only see this test's entries."""
    return f"hash-{uuid.uuid4().hex}"


@pytest.fixture
def new(queue: QueueStorage, h: str) -> Callable[..., str]:
    """Create an instance of this test's workflow; returns its id."""

    def make(status: Status = Status.RUNNING, *, distributed: bool = True, **fields: object) -> str:
        iid = f"inst-{uuid.uuid4().hex}"
        rec = InstanceRecord(iid, "wf", h, status, b"1", distributed=distributed)
        assert queue.create_instance(replace(rec, **fields), replace=False) is None  # type: ignore[arg-type]
        return iid

    return make


def take(queue: QueueStorage, h: str, worker: str = "w", tags: tuple[str, ...] = (), n: int = 50,
         lease: float = LONG) -> list[Claim]:  # fmt: skip
    return queue.claim(worker, [h], list(tags), n, lease)


def keys(claims: list[Claim]) -> list[tuple[str, str]]:
    return [(c.instance_id, c.key) for c in claims]


def start(queue: QueueStorage, h: str, iid: str, worker: str = "w") -> Claim:
    """Claim the run's "continue" entry (its only entry)."""
    [claim] = take(queue, h, worker)
    assert (claim.instance_id, claim.key) == (iid, "")
    return claim


def step(key: str, output: bytes = b"1") -> StepRecord:
    return StepRecord(key, output, key, 1, 1.0, 2.0, "w")


def item(key: str, **fields: object) -> QueueItem:
    return replace(QueueItem(key, key), **fields)  # type: ignore[arg-type]


# -- entries from the Storage calls ------------------------------------------------------------


def test_a_distributed_run_starts_with_one_continue_entry(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    local = new(distributed=False)
    [claim] = take(queue, h, "w1")
    assert claim == Claim(iid, "", 1, "w1", h)
    assert local != iid
    assert take(queue, h) == []


def test_create_existing_adds_no_entry_and_replace_starts_over(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    rec = InstanceRecord(iid, "wf", h, Status.RUNNING, b"2", distributed=True)
    assert queue.create_instance(rec, replace=False) is not None
    old = start(queue, h, iid)
    queue.enqueue(iid, [item("a")])
    assert queue.create_instance(rec, replace=True) is None
    # The old claim is fenced off; the new run has exactly one fresh "continue" entry.
    with pytest.raises(LeaseLostError):
        queue.advance(old, [step("x")])
    [fresh] = take(queue, h, "w2")
    assert (fresh.key, fresh.attempt, fresh.worker_id) == ("", 1, "w2")
    assert take(queue, h) == []
    assert queue.get_checkpoint(iid, "x") is None


def test_a_terminal_finish_drops_every_entry_a_parked_one_keeps_them(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    parked, done = new(), new()
    for iid in (parked, done):
        queue.enqueue(iid, [item("a"), item("b")])
    queue.finish(parked, FinalState(Status.AWAITING_SIGNAL, signal_name="go"), [])
    queue.finish(done, FinalState(Status.COMPLETED, output=b"1"), [])
    assert sorted(keys(take(queue, h))) == [(parked, ""), (parked, "a"), (parked, "b")]


@pytest.mark.parametrize("status", [Status.WAITING, Status.AWAITING_SIGNAL])
def test_a_cancel_applied_to_a_parked_run_drops_its_entries_and_fences_holders(
    queue: QueueStorage, h: str, new: Callable[..., str], status: Status
) -> None:
    iid = new(status)
    queue.enqueue(iid, [item("a")])
    held = take(queue, h, n=1)[0]
    assert queue.request_control(iid, ControlRequest("cancel", "why", "ops")) is status
    assert take(queue, h) == []
    with pytest.raises(LeaseLostError):
        queue.advance(held, [step("late")])
    assert queue.get_checkpoint(iid, "late") is None
    assert queue.heartbeat([held], LONG) == [held]


def test_a_cancel_requested_from_a_running_run_keeps_entries_for_the_engine(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    assert queue.request_control(iid, ControlRequest("cancel", "why", "ops")) is Status.RUNNING
    request, kept = queue.advance(claim, [step("a")])
    assert request == ControlRequest("cancel", "why", "ops")
    assert kept == claim


def test_paused_runs_are_not_claimable_until_unpaused(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new(Status.WAITING)
    queue.enqueue(iid, [item("a")])
    assert queue.request_control(iid, ControlRequest("pause", None, "ops")) is Status.WAITING
    assert get_status(queue, iid) is Status.PAUSED
    assert take(queue, h) == []
    assert queue.unpause(iid) is Status.PAUSED
    assert sorted(keys(take(queue, h))) == [(iid, ""), (iid, "a")]


def test_unpause_adds_a_continue_entry_only_to_distributed_runs(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    dist, local = new(Status.PAUSED), new(Status.PAUSED, distributed=False)
    assert take(queue, h) == []  # paused: its start entry waits
    assert queue.unpause(dist) is Status.PAUSED
    assert queue.unpause(local) is Status.PAUSED
    assert keys(take(queue, h)) == [(dist, "")]


def test_unpause_queues_the_continue_entry_of_a_paused_distributed_run(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    queue.advance(claim, [], final=FinalState(Status.PAUSED, reason="r", by="ops"))
    assert take(queue, h) == []
    queue.unpause(iid)
    assert keys(take(queue, h)) == [(iid, "")]


def test_a_signal_wakes_an_active_distributed_run(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    # Parked until a far wake-up: the "" entry is not due yet.
    far = time.time() + 3600
    queue.advance(
        claim,
        [],
        final=FinalState(Status.WAITING, wake_at=far),
        enqueue=[QueueItem("", available_at=far)],
    )
    local, done = new(distributed=False), new()
    queue.finish(done, FinalState(Status.COMPLETED, output=b"1"), [])
    assert take(queue, h) == []
    assert queue.send_signal(iid, "go", b"1") is Status.WAITING
    assert queue.send_signal(local, "go", b"1") is Status.RUNNING
    assert queue.send_signal(done, "go", b"1") is Status.COMPLETED
    assert queue.send_signal("nobody-" + iid, "go", b"1") is None
    assert keys(take(queue, h)) == [(iid, "")]  # made due now


def get_status(queue: QueueStorage, iid: str) -> Status:
    rec = queue.get_instance(iid)
    assert rec is not None
    return rec.status


# -- claim -------------------------------------------------------------------------------------


def test_claim_order_is_priority_then_due_time_and_limit_applies(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    start(queue, h, iid)  # out of the way
    t = time.time()
    queue.enqueue(
        iid,
        [
            item("p3-old", available_at=t - 30),
            item("p5", priority=5, available_at=t - 50),
            item("p1-new", priority=1, available_at=t - 1),
            item("p1-old", priority=1, available_at=t - 20),
            item("p3-new", available_at=t - 10),
        ],
    )
    first = take(queue, h, n=2)
    assert [c.key for c in first] == ["p1-old", "p1-new"]
    assert [c.key for c in take(queue, h, n=10)] == ["p3-old", "p3-new", "p5"]
    assert take(queue, h) == []


def test_waiting_entries_age_one_priority_level_per_300_seconds(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    """Low-priority work is never starved: an entry gains a level per 300 s waited."""
    iid = new()
    start(queue, h, iid)
    t = time.time()
    queue.enqueue(
        iid,
        [
            item("p1-fresh", priority=1, available_at=t - 1),  # aged 0.997
            item("p5-1300s", priority=5, available_at=t - 1300),  # aged 0.67: first
            item("p3-300s", priority=3, available_at=t - 300),  # aged 2.0
            item("p4-0s", priority=4),  # aged 4.0
            item("p2-50s", priority=2, available_at=t - 50),  # aged 1.83
            item("p9", priority=9, available_at=t - 5),  # clamped to 5: aged 4.98
        ],
    )
    assert [c.key for c in take(queue, h, n=1)] == ["p5-1300s"]
    assert [c.key for c in take(queue, h, n=10)] == ["p1-fresh", "p2-50s", "p3-300s", "p4-0s",
                                                     "p9"]  # fmt: skip


def test_claim_takes_due_entries_only(queue: QueueStorage, h: str, new: Callable[..., str]) -> None:
    iid = new()
    start(queue, h, iid)
    queue.enqueue(iid, [item("later", available_at=time.time() + 3600)])
    assert take(queue, h) == []  # not due
    # Due 0.2 s after it is queued; whether the claim below comes before or after that is
    # up to the machine's speed, so no check in between (the one above shows "not due").
    queue.enqueue(iid, [item("soon", available_at=time.time() + 0.2)])
    time.sleep(0.3)
    assert [c.key for c in take(queue, h)] == ["soon"]


def test_next_due_tells_an_idle_worker_when_to_look_again(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    assert queue.next_due([h], []) is None  # nothing waiting at all
    iid = new()
    start(queue, h, iid)
    now = time.time()
    queue.enqueue(
        iid,
        [
            item("later", available_at=now + 3600),
            item("soon", priority=5, available_at=now + 300),
            item("gpu", tags=("gpu",), available_at=now + 120),
        ],
    )
    # Margins of a minute or more: the checks hold however slow the machine is between calls.
    due = queue.next_due([h], [])
    assert due is not None and 240 < due <= 300  # the lowest priority counts too
    gpu = queue.next_due([h], ["gpu"])
    assert gpu is not None and 0 < gpu <= 120  # only entries this worker could claim
    assert queue.next_due([f"other-{uuid.uuid4().hex}"], ["gpu"]) is None
    paused = new(Status.PAUSED)
    queue.enqueue(paused, [item("p", available_at=now + 30)])
    gpu = queue.next_due([h], ["gpu"])
    assert gpu is not None and 30 < gpu <= 120  # a paused run's entries are not claimable
    queue.enqueue(iid, [item("now")])
    again = queue.next_due([h], [])
    assert again is not None and 240 < again <= due  # due entries: claim them instead


def test_claim_serves_only_the_given_definitions(queue: QueueStorage, h: str) -> None:
    other = f"other-{uuid.uuid4().hex}"
    iid = f"inst-{uuid.uuid4().hex}"
    rec = InstanceRecord(iid, "wf", other, Status.RUNNING, b"1", distributed=True)
    queue.create_instance(rec, replace=False)
    assert take(queue, h) == []
    assert queue.claim("w", [], [], 5, LONG) == []
    assert keys(queue.claim("w", [h, other], [], 5, LONG)) == [(iid, "")]


def test_tags_route_entries_to_workers_serving_all_of_them(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    start(queue, h, iid)
    queue.enqueue(
        iid,
        [item("gpu", tags=("gpu",)), item("both", tags=("gpu", "eu")), item("plain")],
    )
    assert [c.key for c in take(queue, h, "plain")] == ["plain"]
    assert [c.key for c in take(queue, h, "eu", tags=("eu",))] == []
    assert [c.key for c in take(queue, h, "gpu", tags=("gpu",))] == ["gpu"]
    assert [c.key for c in take(queue, h, "all", tags=("eu", "gpu", "x"))] == ["both"]


def test_a_claim_sets_worker_attempt_and_hash(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    assert take(queue, h, "w-9") == [Claim(iid, "", 1, "w-9", h)]
    assert take(queue, h, "w-10") == []  # held: not claimable while the lease runs


def test_lease_expiry_makes_an_entry_claimable_again_with_attempt_plus_one(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    [first] = take(queue, h, "w1", lease=0.2)
    # (Not claimable while the lease runs: tested above with a long lease; a check here
    # would have to run within 0.2 s, which a loaded machine does not promise.)
    time.sleep(0.4)
    [second] = take(queue, h, "w2")
    assert second == Claim(iid, "", 2, "w2", h)
    time.sleep(0.1)
    assert take(queue, h, "w3") == []  # w2's lease is long
    assert first.attempt == 1


def test_concurrent_claimers_take_each_entry_once(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    """SKIP LOCKED exclusivity (reliability plan R8, scaled down to threads)."""
    iids = [new() for _ in range(30)]
    for iid in iids:
        queue.enqueue(iid, [item(f"k{j}") for j in range(5)])
    taken: list[Claim] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        while True:
            got = queue.claim(f"w{n}", [h], [], 1 + n % 4, LONG)
            if not got:
                return
            with lock:
                taken.extend(got)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts = Counter(keys(taken))
    assert len(counts) == 30 * 6
    assert set(counts.values()) == {1}
    assert {c.attempt for c in taken} == {1}


# -- heartbeat ---------------------------------------------------------------------------------


def test_heartbeat_extends_held_leases_and_returns_the_lost_ones(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    a, b = new(), new()
    claims = take(queue, h, "w1", lease=0.3)
    ca = next(c for c in claims if c.instance_id == a)
    cb = next(c for c in claims if c.instance_id == b)
    assert queue.heartbeat([ca, cb], LONG) == []
    time.sleep(0.5)
    assert take(queue, h, "w2") == []  # extended: not expired
    stale = replace(ca, attempt=ca.attempt + 1)
    stranger = replace(cb, worker_id="w2")
    gone = Claim(a, "nothing", 1, "w1", h)
    assert queue.heartbeat([ca, stale, stranger, gone, cb], LONG) == [stale, stranger, gone]


def test_heartbeat_reports_a_claim_taken_over_after_expiry(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    new()
    [old] = take(queue, h, "w1", lease=0.2)
    time.sleep(0.4)
    [cur] = take(queue, h, "w2")
    assert queue.heartbeat([old, cur], LONG) == [old]


def test_an_expired_claim_not_taken_over_is_still_held(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    [claim] = take(queue, h, "w1", lease=0.1)
    time.sleep(0.3)
    assert queue.heartbeat([claim], LONG) == []
    assert queue.advance(claim, [step("a")]) == (None, claim)
    assert queue.get_checkpoint(iid, "a") == b"1"


# -- advance: fencing --------------------------------------------------------------------------


def test_a_stale_claim_is_fenced_off_and_writes_nothing(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    [old] = take(queue, h, "w1", lease=0.2)
    time.sleep(0.4)
    [cur] = take(queue, h, "w2")
    assert cur.attempt == old.attempt + 1
    before = queue.get_instance(iid)
    kwargs: dict[str, Any]
    for kwargs in (
        {},
        {"release": True},
        {"next_item": item("b")},
        {"final": FinalState(Status.COMPLETED, output=b"9")},
        {"final": FinalState(Status.WAITING, wake_at=time.time() + 60)},
    ):
        with pytest.raises(LeaseLostError, match="lost its claim"):
            queue.advance(old, [step("a", b"99")], enqueue=[item("q")], **kwargs)
    assert queue.get_checkpoint(iid, "a") is None
    after = queue.get_instance(iid)
    assert after is not None and before is not None
    assert (after.status, after.output, after.updated_at) == (
        before.status,
        before.output,
        before.updated_at,
    )
    assert take(queue, h, "w3") == []  # no entry was queued by the fenced writes
    assert queue.advance(cur, [step("a", b"2")], release=True) == (None, None)
    assert queue.get_checkpoint(iid, "a") == b"2"


def test_fencing_checks_worker_and_key_too(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid, "w1")
    for stale in (replace(claim, worker_id="w2"), replace(claim, key="other")):
        with pytest.raises(LeaseLostError):
            queue.advance(stale, [step("a")])
    with pytest.raises(LeaseLostError):
        queue.advance(Claim("nobody-" + iid, "", 1, "w1", h), [step("a")])
    assert queue.get_checkpoint(iid, "a") is None


# -- advance: keep, release, next_item, final --------------------------------------------------


def test_advance_keeps_the_claim_and_returns_the_pending_request(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    assert queue.advance(claim, [step("a")]) == (None, claim)
    queue.request_control(iid, ControlRequest("pause", "later", "ops"))
    assert queue.advance(claim, [step("b")]) == (ControlRequest("pause", "later", "ops"), claim)
    assert (queue.get_checkpoint(iid, "a"), queue.get_checkpoint(iid, "b")) == (b"1", b"1")
    assert take(queue, h) == []
    state = queue.load(iid)
    assert state is not None and state.record.status is Status.RUNNING


def test_advance_returns_a_pause_applied_meanwhile(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new(Status.WAITING)
    claim = start(queue, h, iid)
    queue.request_control(iid, ControlRequest("pause", "r", "ops"))  # applied: parked
    request, kept = queue.advance(claim, [step("a")])
    assert request == ControlRequest("pause", "r", "ops")
    assert kept == claim
    assert get_status(queue, iid) is Status.PAUSED


def test_advance_release_drops_the_entry(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    assert queue.advance(claim, [step("a")], enqueue=[item("b")], release=True) == (None, None)
    assert keys(take(queue, h)) == [(iid, "b")]
    assert queue.heartbeat([claim], LONG) == [claim]


def test_advance_moves_the_claim_to_next_item(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid, "w1")
    request, moved = queue.advance(
        claim, [step("a")], enqueue=[item("side")], next_item=item("b"), lease_secs=LONG
    )
    assert request is None
    assert moved == Claim(iid, "b", 1, "w1", h)
    assert keys(take(queue, h, "w2")) == [(iid, "side")]  # "" is gone, "b" is held
    assert queue.heartbeat([claim, moved], LONG) == [claim]
    assert queue.advance(moved, [step("b")], release=True) == (None, None)


def test_next_item_keeps_the_claim_when_its_key_is_checkpointed_or_not_free(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    queue.enqueue(iid, [item("held"), item("later", available_at=time.time() + 60)])
    queue.save_steps(iid, [step("done")])
    [held] = take(queue, h, "other")  # "held" is another worker's now
    assert held.key == "held"
    cases: list[tuple[str, list[StepRecord], list[QueueItem]]] = [
        ("held", [], []),  # claimed by another worker
        ("done", [], []),  # checkpointed earlier
        ("now", [step("now")], []),  # checkpointed by this very write
        ("later", [], []),  # queued, not due yet (a retry backoff)
        ("soon", [], [item("soon", available_at=time.time() + 60)]),  # queued so by this write
    ]
    for nxt, steps, extra in cases:
        request, got = queue.advance(claim, steps, enqueue=extra, next_item=item(nxt))
        assert (request, got) == (None, claim), nxt  # kept: the worker re-reads the run
    assert queue.heartbeat([claim, held], LONG) == []
    assert queue.advance(claim, [], release=True) == (None, None)
    assert keys(take(queue, h)) == []  # "later" and "soon" are not due; "held" is held
    assert queue.get_checkpoint(iid, "now") == b"1"


def test_next_item_takes_a_queued_entry_nobody_claimed_yet(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid, "w1")
    _, first = queue.advance(
        claim, [step("a")], enqueue=[item("b1"), item("b2"), item("b3")], next_item=item("b1")
    )
    assert first == Claim(iid, "b1", 1, "w1", h)  # queued by this very write, due: taken
    _, second = queue.advance(first, [step("b1")], next_item=item("b2"))
    assert second == Claim(iid, "b2", 1, "w1", h)  # queued earlier, never claimed: taken
    [b3] = take(queue, h, "w2")
    assert b3.key == "b3"  # "" and "b1" are gone, "b2" is held
    assert queue.heartbeat([claim, first, second], LONG) == [claim, first]
    # An entry claimed before (its worker gave up, or died) is not taken: claim() counts its
    # attempts, so a task that keeps killing its workers is dead-lettered.
    assert queue.abandon(b3, "boom", retry_in=0.0)
    assert queue.advance(second, [step("b2")], next_item=item("b3")) == (None, second)
    [again] = take(queue, h, "w2")
    assert (again.key, again.attempt, again.last_error) == ("b3", 2, "boom")


def test_next_item_of_the_claims_own_key_claims_it_again(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    [first] = take(queue, h, "w1", lease=0.1)
    time.sleep(0.3)
    [claim2] = take(queue, h, "w1")
    assert first.attempt == 1
    assert claim2.attempt == 2
    assert queue.advance(claim2, [], next_item=QueueItem("")) == (None, Claim(iid, "", 1, "w1", h))
    assert take(queue, h) == []


def test_final_terminal_drops_every_entry_and_fences_the_other_holders(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid, "w1")
    queue.enqueue(iid, [item("b1"), item("b2"), item("b3")])
    [other] = take(queue, h, "w2", n=1)
    result = queue.advance(
        claim,
        [step("a", b"5")],
        final=FinalState(Status.COMPLETED, output=b"5"),
        enqueue=[item("late")],
    )
    assert result == (None, None)
    rec = queue.get_instance(iid)
    assert rec is not None
    assert (rec.status, rec.output) == (Status.COMPLETED, b"5")
    assert rec.completed_at is not None
    assert queue.get_checkpoint(iid, "a") == b"5"
    assert take(queue, h) == []
    with pytest.raises(LeaseLostError):
        queue.advance(other, [step("b1")])


@pytest.mark.parametrize(
    "final",
    [
        FinalState(Status.CANCELLED, reason="r", by="ops"),
        FinalState(Status.FAILED, error="boom"),
    ],
)
def test_final_clears_the_request_and_records_who(
    queue: QueueStorage, h: str, new: Callable[..., str], final: FinalState
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    queue.request_control(iid, ControlRequest("cancel", "r", "ops"))
    assert queue.advance(claim, [], final=final) == (None, None)
    rec = queue.get_instance(iid)
    assert rec is not None
    assert rec.status is final.status and rec.request is None
    assert (rec.error, rec.cancelled_by) == (final.error, final.by)


def test_a_parked_final_keeps_other_entries_and_queues_the_wake_up(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    queue.enqueue(iid, [item("branch")])
    wake = time.time() + 0.4
    result = queue.advance(
        claim,
        [step("timer")],
        final=FinalState(Status.WAITING, wake_at=wake, park_node="nap"),
        enqueue=[QueueItem("", available_at=wake)],
    )
    assert result == (None, None)
    rec = queue.get_instance(iid)
    assert rec is not None
    assert (rec.status, rec.park_node) == (Status.WAITING, "nap")
    assert keys(take(queue, h)) == [(iid, "branch")]
    time.sleep(0.6)
    assert keys(take(queue, h)) == [(iid, "")]  # the wake-up of the "" holder survived


def test_giving_up_a_claim_requeues_its_own_key_when_asked(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    """The claim's own key in ``enqueue``: ignored while kept, queued again when given up."""
    iid = new()
    claim = start(queue, h, iid)
    assert queue.advance(claim, [], enqueue=[QueueItem("")]) == (None, claim)
    assert take(queue, h, "w2") == []
    assert queue.advance(claim, [], enqueue=[QueueItem("")], release=True) == (None, None)
    [again] = take(queue, h, "w2")
    assert again == Claim(iid, "", 1, "w2", h)


# -- enqueue -----------------------------------------------------------------------------------


def test_enqueue_is_idempotent_and_skips_checkpointed_keys(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    start(queue, h, iid)
    queue.save_steps(iid, [step("done")])
    for _ in range(2):
        queue.enqueue(iid, [item("a"), item("a"), item("done")])
    queue.enqueue("nobody-" + iid, [item("a")])
    assert keys(take(queue, h)) == [(iid, "a")]


def test_enqueue_keeps_the_earlier_due_time_of_an_unclaimed_entry(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    start(queue, h, iid)
    t = time.time()
    queue.enqueue(iid, [item("x", available_at=t + 3600), item("y", available_at=t - 5)])
    queue.enqueue(iid, [item("x", available_at=t - 10)])  # earlier: moves it up
    queue.enqueue(iid, [item("y", available_at=t + 3600)])  # later: ignored
    assert [c.key for c in take(queue, h)] == ["x", "y"]


def test_enqueue_in_one_call_merges_repeats_to_the_earliest_due_time(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    start(queue, h, iid)
    queue.enqueue(iid, [item("x", available_at=time.time() + 3600), item("x")])
    assert [c.key for c in take(queue, h)] == ["x"]


def test_enqueue_leaves_a_claimed_entry_alone(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    queue.enqueue(iid, [QueueItem("", available_at=time.time() - 100)])
    assert take(queue, h, "w2") == []
    assert queue.heartbeat([claim], LONG) == []


# -- abandon and the causes of claims without an outcome (dead-lettering) ----------------------


def test_a_fresh_entry_has_no_last_error(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    new()
    [claim] = take(queue, h)
    assert (claim.attempt, claim.last_error) == (1, None)


def test_a_lease_taken_over_names_the_worker_that_stopped_renewing_it(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    new()
    [first] = take(queue, h, "w1", lease=0.2)
    time.sleep(0.4)
    [second] = take(queue, h, "w2", lease=0.2)
    assert second.attempt == 2
    assert second.last_error == lease_expired("w1", 1)
    assert second.last_error == (
        "worker 'w1' stopped renewing its lease during attempt 1 "
        "(the process died or was killed, or stalled past claim_ttl)"
    )
    time.sleep(0.4)
    [third] = take(queue, h, "w3")
    assert (third.attempt, third.last_error) == (3, lease_expired("w2", 2))
    assert first.attempt == 1


def test_abandon_keeps_the_claim_count_and_remembers_the_cause(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid, "w1")
    assert queue.abandon(claim, "RuntimeError: corrupt row", retry_in=0.0) is True
    # Given up: no longer held (its writes are refused, its heartbeat reports it lost).
    assert queue.heartbeat([claim], LONG) == [claim]
    with pytest.raises(LeaseLostError):
        queue.advance(claim, [step("a")])
    [again] = take(queue, h, "w2")
    assert (again.key, again.attempt, again.worker_id) == ("", 2, "w2")
    assert again.last_error == "RuntimeError: corrupt row"
    assert queue.abandon(again, "second cause", retry_in=0.0)
    [third] = take(queue, h, "w1")
    assert (third.attempt, third.last_error) == (3, "second cause")


def test_abandon_makes_the_entry_due_after_retry_in(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    iid = new()
    claim = start(queue, h, iid)
    assert queue.abandon(claim, "boom", retry_in=0.5)
    assert take(queue, h) == []
    due = queue.next_due([h], [])
    assert due is not None and 0.0 < due <= 0.5
    time.sleep(0.6)
    [again] = take(queue, h)
    assert (again.attempt, again.last_error) == (2, "boom")


def test_abandon_of_a_claim_no_longer_held_writes_nothing(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    new()
    [old] = take(queue, h, "w1", lease=0.2)
    time.sleep(0.4)
    [current] = take(queue, h, "w2")
    assert queue.abandon(old, "stale", retry_in=0.0) is False
    assert queue.heartbeat([current], LONG) == []  # w2 still holds it
    assert queue.abandon(current, "w2's cause", retry_in=0.0)
    [after] = take(queue, h, "w3")
    assert (after.attempt, after.last_error) == (3, "w2's cause")


def test_an_entry_queued_afresh_counts_claims_from_one_again(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    """A retry backoff (the claim's own key queued again) or the claim moved to its own key
    is an outcome: the count and the cause start over."""
    iid = new()
    claim = start(queue, h, iid)
    queue.advance(claim, [], enqueue=[item("a")], release=True)
    [a] = take(queue, h)
    assert queue.abandon(a, "cause", retry_in=0.0)
    [a2] = take(queue, h)
    assert (a2.attempt, a2.last_error) == (2, "cause")
    queue.advance(a2, [], enqueue=[item("a")], release=True)  # requeued
    [a3] = take(queue, h)
    assert (a3.key, a3.attempt, a3.last_error) == ("a", 1, None)
    assert queue.abandon(a3, "again", retry_in=0.0)
    [a4] = take(queue, h)
    _, renewed = queue.advance(a4, [], next_item=item("a"))
    assert renewed is not None and (renewed.attempt, renewed.last_error) == (1, None)
    assert queue.abandon(renewed, "third", retry_in=0.0)
    [a5] = take(queue, h)
    assert (a5.attempt, a5.last_error) == (2, "third")


# -- the next claim in the write that ends a run (ChainedQueueStorage, optional) ---------------


@pytest.fixture
def chained(queue: QueueStorage) -> ChainedQueueStorage:
    if not isinstance(queue, ChainedQueueStorage):
        pytest.skip("this backend claims after the final write (ChainedQueueStorage is optional)")
    return queue


def test_the_write_that_ends_a_run_claims_the_workers_next_entry(
    queue: QueueStorage, chained: ChainedQueueStorage, h: str, new: Callable[..., str]
) -> None:
    a = new()
    claim = start(queue, h, a, "w1")
    b = new()
    done = FinalState(Status.COMPLETED, output=b"5")
    then = ClaimAsk("w1", (h,), ())
    request, claims = chained.finish_and_claim(claim, [step("s", b"5")], final=done, then=then)
    assert (request, claims) == (None, [Claim(b, "", 1, "w1", h)])
    rec = queue.get_instance(a)
    assert rec is not None and (rec.status, rec.output) == (Status.COMPLETED, b"5")
    assert queue.get_checkpoint(a, "s") == b"5"
    assert take(queue, h, "w2") == []  # b is held by w1
    # Nothing left to claim (or nothing of the definitions asked): the run still ends.
    _, none = chained.finish_and_claim(claims[0], [], final=done, then=then)
    assert none == []
    assert queue.get_instance(b).status is Status.COMPLETED  # type: ignore[union-attr]
    c = new()
    _, other = chained.finish_and_claim(
        start(queue, h, c), [], final=done, then=ClaimAsk("w1", ("another-hash",), ())
    )
    assert other == []


def test_a_fenced_off_final_write_claims_nothing(
    queue: QueueStorage, chained: ChainedQueueStorage, h: str, new: Callable[..., str]
) -> None:
    a = new()
    [old] = take(queue, h, "w1", lease=0.2)
    time.sleep(0.4)
    [cur] = take(queue, h, "w2")
    b = new()
    with pytest.raises(LeaseLostError, match="lost its claim"):
        chained.finish_and_claim(
            old, [step("s")], final=FinalState(Status.COMPLETED, output=b"1"),
            then=ClaimAsk("w1", (h,), ()),
        )  # fmt: skip
    assert queue.get_checkpoint(a, "s") is None
    assert queue.get_instance(a).status is Status.RUNNING  # type: ignore[union-attr]
    assert keys(take(queue, h, "w3")) == [(b, "")]  # b was not claimed by the fenced write
    assert cur.attempt == 2


def test_a_run_ending_frees_its_key_for_the_claim_in_the_same_write(
    queue: QueueStorage, chained: ChainedQueueStorage, h: str, new: Callable[..., str]
) -> None:
    key = f"{h}:a"  # a key of its own: slots are shared by every test of a database
    a1 = new(concurrency_key=key, concurrency_limit=1)
    a2 = new(concurrency_key=key, concurrency_limit=1)
    claim = start(queue, h, a1)
    assert take(queue, h) == []  # a2 waits for a1's slot
    _, claims = chained.finish_and_claim(
        claim, [], final=FinalState(Status.FAILED, error="x"), then=ClaimAsk("w", (h,), ())
    )
    assert keys(claims) == [(a2, "")]


def test_a_cancel_applied_before_the_final_write_still_gives_the_next_claim(
    queue: QueueStorage, chained: ChainedQueueStorage, h: str, new: Callable[..., str]
) -> None:
    a = new(Status.WAITING)
    queue.enqueue(a, [item("t")])
    held = take(queue, h, "w1", n=1)[0]
    b = new()
    queue.request_control(a, ControlRequest("cancel", "why", "ops"))
    with pytest.raises(LeaseLostError):  # the cancel dropped a's entries: held is fenced off
        chained.finish_and_claim(
            held, [], final=FinalState(Status.COMPLETED, output=b"1"),
            then=ClaimAsk("w1", (h,), ()),
        )  # fmt: skip
    c = new()
    [claim] = take(queue, h, "w1", n=1)
    assert claim.instance_id == b
    queue.request_control(b, ControlRequest("pause", "hold", "ops"))
    request, claims = chained.finish_and_claim(
        claim, [], final=FinalState(Status.PAUSED, reason="hold", by="ops"),
        then=ClaimAsk("w1", (h,), ()),
    )  # fmt: skip
    assert request is None and keys(claims) == [(c, "")]
    assert queue.get_instance(b).status is Status.PAUSED  # type: ignore[union-attr]


# -- run concurrency limits (sayiir.core.limits) ----------------------------------------------


def test_a_key_at_its_limit_waits_queued_and_other_keys_go_first(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    a1 = new(concurrency_key="wf:a", concurrency_limit=1)
    a2 = new(concurrency_key="wf:a", concurrency_limit=1)
    b1 = new(concurrency_key="wf:b", concurrency_limit=1)
    first = take(queue, h, n=1)
    assert keys(first) == [(a1, "")]
    # a2 is older than b1, but key "a" is at its limit: b1 is claimed, a2 waits queued.
    second = take(queue, h, n=1)
    assert keys(second) == [(b1, "")]
    assert take(queue, h) == []
    # A run holds its slot through its whole life (its later entries need no new slot).
    queue.advance(first[0], [step("s1")], enqueue=[item("t")], release=True)
    assert keys(take(queue, h, n=1)) == [(a1, "t")]
    assert take(queue, h) == []
    queue.finish(a1, FinalState(Status.COMPLETED, output=b"1"), [])
    assert keys(take(queue, h)) == [(a2, "")]  # the slot of a finished run is free again


def test_a_limit_above_one_and_a_claim_of_several(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    runs = [new(concurrency_key="wf", concurrency_limit=2) for _ in range(5)]
    claimed = take(queue, h, n=50)  # one slot per key per claim, so one run at a time here
    claimed += take(queue, h, n=50)
    claimed += take(queue, h, n=50)
    assert sorted(c.instance_id for c in claimed) == sorted(runs[:2])
    queue.finish(runs[0], FinalState(Status.FAILED, error="x"), [])
    assert [c.instance_id for c in take(queue, h)] == [runs[2]]


def test_a_cancelled_run_frees_its_slot_and_a_wake_up_keeps_it(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    a1 = new(concurrency_key="k", concurrency_limit=1)
    a2 = new(concurrency_key="k", concurrency_limit=1)
    claim = start(queue, h, a1)
    queue.advance(claim, [], final=FinalState(Status.WAITING, wake_at=time.time()))
    queue.enqueue(a1, [QueueItem("")])  # its timer fell due: a wake-up of an admitted run
    assert keys(take(queue, h)) == [(a1, "")]
    assert take(queue, h) == []
    queue.request_control(a1, ControlRequest("cancel", "stop", "ops"))
    queue.finish(a1, FinalState(Status.CANCELLED, reason="stop"), [])
    assert keys(take(queue, h)) == [(a2, "")]


def test_claimers_racing_never_start_more_runs_of_a_key_than_its_limit(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    runs = [new(concurrency_key="hot", concurrency_limit=2) for _ in range(12)]
    barrier = threading.Barrier(8)
    got: list[Claim] = []
    lock = threading.Lock()

    def claimer(i: int) -> None:
        barrier.wait()
        for _ in range(3):
            claims = take(queue, h, f"w{i}", n=1)
            with lock:
                got.extend(claims)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 2
    assert {c.instance_id for c in got} <= set(runs)


def test_a_run_held_back_by_its_limit_says_why(
    queue: QueueStorage, h: str, new: Callable[..., str]
) -> None:
    from sayiir import WorkflowClient

    client = WorkflowClient(queue)
    first = new(concurrency_key="orders:7", concurrency_limit=1)
    second = new(concurrency_key="orders:7", concurrency_limit=1)
    plain = new()
    assert client.waiting_reason(first) is None  # under the limit: it is just queued
    take(queue, h, n=1)
    assert client.waiting_reason(first) is None  # it runs
    assert client.waiting_reason(second) == (
        f"queued: concurrency key 'orders:7' is at its limit (1 of 1 held by {first})"
    )
    assert client.status(second).status == "in_progress"
    assert client.waiting_reason(plain) is None
    assert client.waiting_reason("unknown") is None


# -- idempotent submit with a window --------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgres", "postgres_partitioned"])
def any_backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    from sayiir import SqliteBackend

    if request.param == "sqlite":
        b: Any = SqliteBackend(tmp_path / "d.db")
    elif request.param == "postgres":  # tables of its own: purges see this test's keys only
        prefix = f"d{uuid.uuid4().hex[:10]}_"
        b = PostgresBackend(request.getfixturevalue("pg_dsn"), table_prefix=prefix)
    else:
        b = FACTORIES[request.param](request)
    yield b
    b.close()


def test_a_dedupe_key_starts_one_run_per_window(any_backend: Any) -> None:
    from sayiir import Flow, WorkflowClient
    from sayiir.distributed import dedupe

    wf = Flow("dd").then(lambda x: x, name="t").build()
    client = WorkflowClient(any_backend)
    key = f"delivery-{uuid.uuid4().hex}"
    a, b, c = (f"run-{uuid.uuid4().hex}" for _ in range(3))
    assert client.submit(wf, a, 1, dedupe_key=key, dedupe_window="1h").status == "in_progress"
    assert client.submit(wf, b, 2, dedupe_key=key, dedupe_window="1h").status == "in_progress"
    assert any_backend.get_instance(b) is None  # the second submit started nothing
    assert any_backend.codec.decode(any_backend.get_instance(a).input) == 1
    # After the window, the key starts a new run (the clock of the key, not a sleep).
    later = time.time() + 3601
    assert dedupe.holder(any_backend, key, c, "1h", later) == c
    assert dedupe.holder(any_backend, key, b, "1h", later + 1) == c


def test_a_submit_that_died_after_taking_the_key_is_completed_by_the_next(
    any_backend: Any,
) -> None:
    from sayiir import Flow, WorkflowClient
    from sayiir.distributed import dedupe

    wf = Flow("dd2").then(lambda x: x, name="t").build()
    key = f"k-{uuid.uuid4().hex}"
    dead, second = f"run-{uuid.uuid4().hex}", f"run-{uuid.uuid4().hex}"
    assert dedupe.holder(any_backend, key, dead, "1h", time.time()) == dead  # then it died
    WorkflowClient(any_backend).submit(wf, second, 5, dedupe_key=key)
    assert any_backend.get_instance(second) is None
    assert any_backend.get_instance(dead) is not None  # the key's run exists now, once


def test_submits_racing_with_one_key_start_one_run(any_backend: Any) -> None:
    from sayiir import Flow, WorkflowClient

    wf = Flow("dd3").then(lambda x: x, name="t").build()
    client = WorkflowClient(any_backend)
    key = f"k-{uuid.uuid4().hex}"
    ids = [f"run-{uuid.uuid4().hex}" for _ in range(6)]
    barrier = threading.Barrier(len(ids))

    def submit(iid: str) -> None:
        barrier.wait()
        client.submit(wf, iid, 1, dedupe_key=key)

    threads = [threading.Thread(target=submit, args=(iid,)) for iid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(any_backend.get_instance(i) is not None for i in ids) == 1


def test_dedupe_arguments_are_checked(any_backend: Any) -> None:
    from sayiir import Flow, WorkflowClient

    wf = Flow("dd4").then(lambda x: x, name="t").build()
    client = WorkflowClient(any_backend)
    with pytest.raises(ValueError, match="dedupe_key must be a non-empty string"):
        client.submit(wf, "x1", 1, dedupe_key="")
    with pytest.raises(ValueError, match="dedupe_window must be positive"):
        client.submit(wf, "x1", 1, dedupe_key="k", dedupe_window=0)


def test_expired_dedupe_keys_are_purged_by_submits_and_in_batches(any_backend: Any) -> None:
    """The table holds the keys of the current windows, not every key ever used: a submit
    that takes a key drains up to PURGE_BATCH expired ones, retention the rest in batches."""
    from sayiir.distributed import dedupe

    now = time.time()
    for i in range(30):
        assert dedupe.holder(any_backend, f"old-{i}", f"run-{i}", "10s", now) == f"run-{i}"
    assert any_backend.purge_dedupe_keys(now + 5, 100) == 0  # none expired yet
    # A submit with a new key once the window has passed: it drains PURGE_BATCH of them.
    assert dedupe.holder(any_backend, "fresh", "run-fresh", "10s", now + 11) == "run-fresh"
    left = 30 - dedupe.PURGE_BATCH
    assert any_backend.purge_dedupe_keys(now + 11, left - 3) == left - 3
    assert any_backend.purge_dedupe_keys(now + 11, 100) == 3
    assert any_backend.purge_dedupe_keys(now + 11, 100) == 0
    # The key of the current window stayed, and a purged key is free for a new run.
    assert dedupe.holder(any_backend, "fresh", "run-other", "10s", now + 12) == "run-fresh"
    assert dedupe.holder(any_backend, "old-0", "run-new", "10s", now + 12) == "run-new"
