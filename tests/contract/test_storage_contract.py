"""The storage contract, checked at the record level against every backend.

``InMemoryBackend`` is the reference implementation: each test states what the protocol
(``sayiir.backends.protocol.Storage``) promises and runs it against every factory in
``FACTORIES``, so no backend can drift from the others. No workflow is run here; the engine
suites (tests/engine) cover that.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sayiir.backends.memory import InMemoryBackend
from sayiir.backends.postgres import PostgresBackend
from sayiir.backends.protocol import AsyncStorage, Storage
from sayiir.backends.sqlite import SqliteBackend
from sayiir.core.records import (
    TERMINAL,
    AttemptRecord,
    AttemptState,
    ControlRequest,
    FinalState,
    InstanceRecord,
    Status,
    StepRecord,
    control_decision,
)
from sayiir.errors import InstanceNotFoundError, RunFinishedError, RunReplacedError

Factory = Callable[[pytest.FixtureRequest, Path], Storage]

# One entry per backend; the `storage` fixture is parametrized over the keys. To add a backend,
# add one line, e.g. for PostgreSQL (marked and skipped without a DSN by tests/conftest.py):
#     "postgres": lambda request, _: PostgresBackend(request.getfixturevalue("pg_dsn")),
# Instance ids are unique per test (`iid`), so a database shared by a module is fine.
FACTORIES: dict[str, Factory] = {
    "memory": lambda _request, _tmp: InMemoryBackend(),
    "sqlite": lambda _request, tmp: SqliteBackend(tmp / "contract.db"),
    "postgres": lambda request, _: PostgresBackend(request.getfixturevalue("pg_dsn")),
    "postgres_partitioned": lambda request, _: PostgresBackend(
        request.getfixturevalue("pg_partitioned_dsn"), partition="month"
    ),
}

ALL_STATUSES = list(Status)
T0 = 1_700_000_000.25


@pytest.fixture(params=list(FACTORIES))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    backend = FACTORIES[request.param](request, tmp_path)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def iid() -> str:
    return f"inst-{uuid.uuid4().hex}"


def record(instance_id: str, status: Status = Status.RUNNING, **fields: object) -> InstanceRecord:
    base = InstanceRecord(
        instance_id=instance_id,
        workflow_id="wf",
        definition_hash="hash-1",
        status=status,
        input=b'{"n": 1}',
        created_at=T0,
        updated_at=T0,
        token=str(uuid.uuid5(uuid.NAMESPACE_URL, instance_id)),  # the engine always sets one
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def step(key: str, output: bytes = b"1", task_id: str | None = "t", attempt: int = 1) -> StepRecord:
    return StepRecord(key, output, task_id, attempt, T0 + 1, T0 + 2, "worker-1")


def make(storage: Storage, iid: str, status: Status = Status.RUNNING, **fields: object) -> None:
    assert storage.create_instance(record(iid, status, **fields), replace=False) is None


def get(storage: Storage, iid: str) -> InstanceRecord:
    rec = storage.get_instance(iid)
    assert rec is not None
    return rec


def without_times(rec: InstanceRecord) -> InstanceRecord:
    return replace(rec, updated_at=0.0, completed_at=None, lease_until=None)


def without_lease(rec: InstanceRecord) -> InstanceRecord:
    """The record as created: a running one gets a lease from the backend's clock."""
    assert rec.lease_until is not None and rec.lease_until > time.time()
    return replace(rec, lease_until=None)


def fail(
    key: str, attempt: int, error: str = "boom", retry_at: float | None = None
) -> AttemptRecord:
    return AttemptRecord(key, "t", attempt, "failed", T0, T0 + 1, error, retry_at)


def started(key: str, attempt: int, deadline: float = T0 + 60) -> AttemptRecord:
    return AttemptRecord(key, "t", attempt, "running", T0, deadline=deadline, worker_id="w")


# -- create_instance ---------------------------------------------------------------------------


def test_create_then_get_round_trips_every_field(storage: Storage, iid: str) -> None:
    full = record(
        iid,
        Status.AWAITING_SIGNAL,
        input=b"\x00\xffbinary",
        output=b"out",
        error="err",
        reason="why",
        cancelled_by="alice",
        paused_by="bob",
        wake_at=T0 + 0.125,
        park_node="node",
        signal_name="approve",
        request=ControlRequest("pause", "later", "carol"),
        completed_at=T0 + 3.5,
        distributed=True,
    )
    assert storage.create_instance(replace(full), replace=False) is None
    assert storage.get_instance(iid) == full
    state = storage.load(iid)
    assert state is not None
    assert state.record == full
    assert state.checkpoints == {}
    assert state.attempts == {}


def test_create_existing_without_replace_returns_it_and_changes_nothing(
    storage: Storage, iid: str
) -> None:
    make(storage, iid)
    storage.save_steps(iid, [step("a")])
    before = get(storage, iid)
    other = record(iid, Status.WAITING, workflow_id="other", input=b"2")
    assert storage.create_instance(other, replace=False) == before
    assert get(storage, iid) == before
    assert storage.get_checkpoint(iid, "a") == b"1"


def test_create_with_replace_drops_state_but_keeps_buffered_signals(
    storage: Storage, iid: str
) -> None:
    make(storage, iid)
    storage.save_steps(iid, [step("a")])
    storage.record_attempt(iid, fail("b", 1))
    storage.request_control(iid, ControlRequest("pause", "r", "u"))
    storage.send_signal(iid, "go", b"kept")
    new = record(iid, Status.RUNNING, workflow_id="wf2", input=b"new")
    assert storage.create_instance(replace(new), replace=True) is None
    state = storage.load(iid)
    assert state is not None
    assert without_lease(state.record) == new
    assert state.record.request is None
    assert state.checkpoints == {}
    assert state.attempts == {}
    assert storage.consume_signal(iid, "go", "sig") == b"kept"


def test_create_replace_on_missing_instance_inserts(storage: Storage, iid: str) -> None:
    assert storage.create_instance(record(iid), replace=True) is None
    assert without_lease(get(storage, iid)) == record(iid)


def test_missing_instance_reads_return_none(storage: Storage, iid: str) -> None:
    assert storage.load(iid) is None
    assert storage.get_instance(iid) is None
    assert storage.get_checkpoint(iid, "a") is None
    assert storage.request_control(iid, ControlRequest("cancel")) is None
    assert storage.unpause(iid) is None


@pytest.mark.parametrize(
    "call",
    [
        lambda s, i: s.save_steps(i, [step("a")]),
        lambda s, i: s.record_attempt(i, fail("a", 1)),
        lambda s, i: s.consume_signal(i, "go", "k"),
        lambda s, i: s.finish(i, FinalState(Status.COMPLETED, b"1"), []),
    ],
    ids=["save_steps", "record_attempt", "consume_signal", "finish"],
)
def test_writes_to_a_missing_instance_raise_and_write_nothing(
    storage: Storage, iid: str, call: Callable[[Storage, str], object]
) -> None:
    with pytest.raises(InstanceNotFoundError) as info:
        call(storage, iid)
    assert info.value.instance_id == iid
    assert storage.load(iid) is None
    assert storage.get_checkpoint(iid, "a") is None


# -- load, save_steps --------------------------------------------------------------------------


def test_save_steps_stores_checkpoints_and_load_returns_them(storage: Storage, iid: str) -> None:
    make(storage, iid)
    assert storage.save_steps(iid, [step("a", b"A"), step("b", b"\x00B")]) is None
    assert storage.save_steps(iid, []) is None
    assert storage.save_steps(iid, [step("route", b'"x"', task_id=None)]) is None
    state = storage.load(iid)
    assert state is not None
    assert state.checkpoints == {"a": b"A", "b": b"\x00B", "route": b'"x"'}
    assert storage.get_checkpoint(iid, "b") == b"\x00B"
    assert storage.get_checkpoint(iid, "zzz") is None


def test_save_steps_overwrites_a_key(storage: Storage, iid: str) -> None:
    make(storage, iid)
    storage.save_steps(iid, [step("a", b"old")])
    storage.save_steps(iid, [step("a", b"new", attempt=2)])
    assert storage.get_checkpoint(iid, "a") == b"new"


@pytest.mark.parametrize("status", ALL_STATUSES, ids=str)
def test_save_steps_marks_running_unless_finished_cancelled_or_paused(
    storage: Storage, iid: str, status: Status
) -> None:
    # A final state is final (write_decision): a completed or failed run refuses the write, a
    # cancelled one takes nothing and tells the engine; a paused one keeps its pause.
    make(storage, iid, status, reason="why", cancelled_by="c", paused_by="p")
    before = get(storage, iid)
    if status in (Status.COMPLETED, Status.FAILED):
        with pytest.raises(RunFinishedError, match=f"already finished .status: {status.value}"):
            storage.save_steps(iid, [step("a")])
        assert get(storage, iid) == before
        assert storage.get_checkpoint(iid, "a") is None
        return
    pending = storage.save_steps(iid, [step("a")])
    rec = get(storage, iid)
    if status is Status.CANCELLED:
        assert pending == ControlRequest("cancel", "why", "c")
        assert rec == before
        assert storage.get_checkpoint(iid, "a") is None
        return
    if status is Status.PAUSED:
        assert pending == ControlRequest("pause", "why", "p")
        assert rec.status is Status.PAUSED
    else:
        assert pending is None
        assert rec.status is Status.RUNNING
    assert rec.updated_at > T0
    assert storage.get_checkpoint(iid, "a") == b"1"


def test_save_steps_returns_the_pending_request(storage: Storage, iid: str) -> None:
    make(storage, iid)
    assert storage.request_control(iid, ControlRequest("pause", "p", "u")) is Status.RUNNING
    assert storage.save_steps(iid, [step("a")]) == ControlRequest("pause", "p", "u")
    assert get(storage, iid).status is Status.RUNNING
    assert storage.request_control(iid, ControlRequest("cancel", "c", "v")) is Status.RUNNING
    assert storage.save_steps(iid, [step("b")]) == ControlRequest("cancel", "c", "v")


def test_cancel_applied_while_parked_wins_over_a_resuming_engine(
    storage: Storage, iid: str
) -> None:
    make(storage, iid, Status.WAITING, wake_at=T0, park_node="n")
    assert storage.request_control(iid, ControlRequest("cancel", "stop", "ops")) is Status.WAITING
    # An engine that resumed the run concurrently learns about it on its next write.
    assert storage.save_steps(iid, [step("a")]) == ControlRequest("cancel", "stop", "ops")
    assert storage.record_attempt(iid, started("b", 1)) == ControlRequest("cancel", "stop", "ops")
    assert get(storage, iid).status is Status.CANCELLED


# -- record_attempt and attempt folding --------------------------------------------------------


def test_attempts_fold_per_key(storage: Storage, iid: str) -> None:
    make(storage, iid)
    assert storage.record_attempt(iid, started("a", 1, deadline=T0 + 10)) is None
    assert storage.load(iid).attempts == {  # type: ignore[union-attr]
        "a": AttemptState(running_deadline=T0 + 10)
    }
    storage.record_attempt(iid, fail("a", 1, "e1", T0 + 5))
    storage.record_attempt(iid, started("a", 2, deadline=T0 + 20))
    storage.record_attempt(iid, fail("b", 1, "b1"))
    storage.record_attempt(iid, fail("b", 2, "b2", T0 + 7))
    state = storage.load(iid)
    assert state is not None
    assert state.attempts == {
        "a": AttemptState(1, "e1", T0 + 5, T0 + 20),
        "b": AttemptState(2, "b2", T0 + 7, None),
    }


def test_failed_attempt_clears_the_running_deadline(storage: Storage, iid: str) -> None:
    make(storage, iid)
    storage.record_attempt(iid, started("a", 1))
    storage.record_attempt(iid, fail("a", 1, "timeout"))
    assert storage.load(iid).attempts == {  # type: ignore[union-attr]
        "a": AttemptState(1, "timeout", None, None)
    }


def test_attempts_of_checkpointed_keys_are_not_loaded(storage: Storage, iid: str) -> None:
    make(storage, iid)
    storage.record_attempt(iid, fail("a", 1))
    storage.record_attempt(iid, started("a", 2))
    storage.save_steps(iid, [step("a", attempt=2)])
    storage.record_attempt(iid, fail("b", 1))
    state = storage.load(iid)
    assert state is not None
    assert set(state.attempts) == {"b"}
    assert state.checkpoints == {"a": b"1"}


def test_record_attempt_touches_like_save_steps(storage: Storage, iid: str) -> None:
    make(storage, iid, Status.WAITING)
    assert storage.record_attempt(iid, started("a", 1)) is None
    assert get(storage, iid).status is Status.RUNNING
    storage.request_control(iid, ControlRequest("pause", "r", "u"))
    assert storage.record_attempt(iid, fail("a", 1)) == ControlRequest("pause", "r", "u")
    storage.finish(iid, FinalState(Status.PAUSED, reason="r", by="u"), [])
    assert storage.record_attempt(iid, fail("a", 2)) == ControlRequest("pause", "r", "u")
    assert get(storage, iid).status is Status.PAUSED


# -- signals -----------------------------------------------------------------------------------


def test_signals_are_fifo_per_instance_and_name(storage: Storage, iid: str) -> None:
    other = f"{iid}-other"
    make(storage, iid, Status.AWAITING_SIGNAL)
    make(storage, other, Status.AWAITING_SIGNAL)
    for payload in (b"1", b"2", b"3"):
        assert storage.send_signal(iid, "go", payload) is Status.AWAITING_SIGNAL
    storage.send_signal(iid, "stop", b"s1")
    storage.send_signal(other, "go", b"o1")
    assert storage.consume_signal(iid, "go", "k1") == b"1"
    assert storage.consume_signal(iid, "stop", "k2") == b"s1"
    assert storage.consume_signal(iid, "go", "k3") == b"2"
    storage.send_signal(iid, "go", b"4")
    assert storage.consume_signal(iid, "go", "k4") == b"3"
    assert storage.consume_signal(iid, "go", "k5") == b"4"
    assert storage.consume_signal(iid, "go", "k6") is None
    assert storage.consume_signal(iid, "stop", "k7") is None
    assert storage.consume_signal(other, "go", "k1") == b"o1"
    state = storage.load(iid)
    assert state is not None
    assert state.checkpoints == {"k1": b"1", "k2": b"s1", "k3": b"2", "k4": b"3", "k5": b"4"}


def test_consume_signal_touches_only_when_it_takes_one(storage: Storage, iid: str) -> None:
    make(storage, iid, Status.AWAITING_SIGNAL, signal_name="go")
    assert storage.consume_signal(iid, "go", "k") is None
    assert get(storage, iid) == record(iid, Status.AWAITING_SIGNAL, signal_name="go")
    storage.send_signal(iid, "go", b"x")
    assert storage.consume_signal(iid, "go", "k") == b"x"
    assert get(storage, iid).status is Status.RUNNING


def test_signal_sent_before_the_instance_exists_waits_for_it(storage: Storage, iid: str) -> None:
    assert storage.send_signal(iid, "go", b"early") is None
    assert storage.get_instance(iid) is None
    make(storage, iid, Status.AWAITING_SIGNAL)
    assert storage.consume_signal(iid, "go", "k") == b"early"


@pytest.mark.parametrize("status", ALL_STATUSES, ids=str)
def test_send_signal_returns_status_and_refuses_terminal(
    storage: Storage, iid: str, status: Status
) -> None:
    make(storage, iid, status)
    assert storage.send_signal(iid, "go", b"x") is status
    storage.create_instance(record(iid), replace=True)  # keeps whatever was buffered
    expected = None if status in TERMINAL else b"x"
    assert storage.consume_signal(iid, "go", "k") == expected


# -- finish ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(TERMINAL), ids=str)
def test_finish_terminal_sets_completed_at_and_clears_request(
    storage: Storage, iid: str, status: Status
) -> None:
    make(storage, iid, wake_at=T0, park_node="p", signal_name="s", reason="old")
    storage.request_control(iid, ControlRequest("pause", "r", "u"))
    final = FinalState(status, b"out", "err", "why", "who")
    assert storage.finish(iid, final, [step("last", b"L")]) is None
    rec = get(storage, iid)
    assert rec.status is status
    assert (rec.output, rec.error) == (b"out", "err")
    assert (rec.wake_at, rec.park_node, rec.signal_name) == (None, None, None)
    assert rec.request is None
    assert rec.completed_at is not None and rec.completed_at >= rec.updated_at - 1
    assert rec.updated_at > T0
    if status is Status.CANCELLED:
        assert (rec.reason, rec.cancelled_by, rec.paused_by) == ("why", "who", None)
    else:  # reason/by only change for a cancel or a pause
        assert (rec.reason, rec.cancelled_by, rec.paused_by) == ("old", None, None)
    assert storage.get_checkpoint(iid, "last") == b"L"


def test_finish_paused_records_reason_and_clears_request(storage: Storage, iid: str) -> None:
    make(storage, iid)
    storage.request_control(iid, ControlRequest("pause", "r", "u"))
    storage.finish(iid, FinalState(Status.PAUSED, reason="r", by="u"), [])
    rec = get(storage, iid)
    assert (rec.status, rec.reason, rec.paused_by, rec.request) == (Status.PAUSED, "r", "u", None)
    assert rec.completed_at is None


@pytest.mark.parametrize("status", [Status.WAITING, Status.AWAITING_SIGNAL], ids=str)
def test_finish_parked_keeps_the_request(storage: Storage, iid: str, status: Status) -> None:
    make(storage, iid)
    storage.request_control(iid, ControlRequest("pause", "r", "u"))
    final = FinalState(status, wake_at=T0 + 9, park_node="n", signal_name="go")
    storage.finish(iid, final, [step("timer", b"9", task_id=None)])
    rec = get(storage, iid)
    assert rec.status is status
    assert (rec.wake_at, rec.park_node, rec.signal_name) == (T0 + 9, "n", "go")
    assert rec.request == ControlRequest("pause", "r", "u")
    assert rec.completed_at is None
    assert storage.get_checkpoint(iid, "timer") == b"9"


# -- request_control, unpause ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cancel", "pause"])
@pytest.mark.parametrize("status", ALL_STATUSES, ids=str)
def test_request_control_follows_control_decision(
    storage: Storage, iid: str, status: Status, kind: str
) -> None:
    make(storage, iid, status, wake_at=T0, park_node="n", signal_name="s")
    before = get(storage, iid)
    request = ControlRequest(kind, "because", "ops")
    assert storage.request_control(iid, request) is status
    rec = get(storage, iid)
    decision = control_decision(status, kind)
    if decision == "apply":
        assert rec.status is (Status.CANCELLED if kind == "cancel" else Status.PAUSED)
        assert rec.reason == "because"
        assert (rec.wake_at, rec.park_node, rec.signal_name, rec.request) == (None,) * 4
        assert rec.updated_at > T0
        if kind == "cancel":
            assert rec.cancelled_by == "ops"
            assert rec.completed_at is not None
        else:
            assert rec.paused_by == "ops"
            assert rec.completed_at is None
    elif decision == "request":
        assert rec == replace(before, request=request)
    else:  # noop, reject: nothing changes
        assert rec == before


def test_pending_cancel_is_never_downgraded(storage: Storage, iid: str) -> None:
    make(storage, iid)
    storage.request_control(iid, ControlRequest("pause", "p1", "u"))
    storage.request_control(iid, ControlRequest("pause", "p2", "u"))
    assert get(storage, iid).request == ControlRequest("pause", "p2", "u")
    storage.request_control(iid, ControlRequest("cancel", "c1", "v"))
    assert get(storage, iid).request == ControlRequest("cancel", "c1", "v")
    storage.request_control(iid, ControlRequest("pause", "p3", "u"))
    storage.request_control(iid, ControlRequest("cancel", "c2", "w"))
    assert get(storage, iid).request == ControlRequest("cancel", "c1", "v")


def test_unpause_a_paused_instance(storage: Storage, iid: str) -> None:
    make(storage, iid, Status.WAITING)
    storage.request_control(iid, ControlRequest("pause", "r", "u"))
    assert storage.unpause(iid) is Status.PAUSED
    rec = get(storage, iid)
    assert (rec.status, rec.reason, rec.paused_by) == (Status.RUNNING, None, None)
    assert storage.unpause(iid) is Status.RUNNING  # now nothing to do


def test_unpause_withdraws_a_pending_pause(storage: Storage, iid: str) -> None:
    make(storage, iid)
    storage.request_control(iid, ControlRequest("pause", "r", "u"))
    before = get(storage, iid)
    assert storage.unpause(iid) is Status.PAUSED
    assert get(storage, iid) == replace(before, request=None)


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.PAUSED], ids=str)
def test_unpause_anything_else_changes_nothing(storage: Storage, iid: str, status: Status) -> None:
    make(storage, iid, status)
    if status is Status.RUNNING:
        storage.request_control(iid, ControlRequest("cancel", "c", "v"))
    before = get(storage, iid)
    assert storage.unpause(iid) is status
    assert get(storage, iid) == before


# -- concurrency and the async form ------------------------------------------------------------


def test_concurrent_writers_from_threads(storage: Storage, iid: str) -> None:
    make(storage, iid)
    errors: list[BaseException] = []

    def branch(n: int) -> None:
        try:
            for i in range(25):
                storage.save_steps(iid, [step(f"b{n}-{i}", str(i).encode())])
                storage.record_attempt(iid, fail(f"x{n}-{i}", 1))
                storage.load(iid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=branch, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    state = storage.load(iid)
    assert state is not None
    assert len(state.checkpoints) == 100
    assert len(state.attempts) == 100


def test_async_form_reaches_the_same_data(storage: Storage, iid: str) -> None:
    factory = getattr(storage, "async_storage")  # noqa: B009 -- not part of Storage
    astorage: AsyncStorage = factory()
    assert isinstance(astorage, AsyncStorage)
    assert astorage.codec is storage.codec

    async def scenario() -> None:
        assert await astorage.create_instance(record(iid), replace=False) is None
        assert await astorage.save_steps(iid, [step("a")]) is None
        state = await astorage.load(iid)
        assert state is not None and state.checkpoints == {"a": b"1"}
        assert await astorage.send_signal(iid, "go", b"s") is Status.RUNNING
        assert await astorage.consume_signal(iid, "go", "k") == b"s"
        await astorage.finish(iid, FinalState(Status.COMPLETED, b"1"), [])
        assert (await astorage.get_instance(iid)).status is Status.COMPLETED  # type: ignore[union-attr]

    asyncio.run(scenario())
    assert without_times(get(storage, iid)).status is Status.COMPLETED


# -- one execution at a time: tokens and leases ------------------------------------------------


def token_of(iid: str) -> str:
    token = record(iid).token
    assert token is not None
    return token


def new_token() -> str:
    return str(uuid.uuid4())


def test_a_running_run_is_held_by_its_starting_execution(storage: Storage, iid: str) -> None:
    make(storage, iid)
    held = get(storage, iid)
    assert held.lease_until is not None and held.lease_until > time.time()
    assert held.lease_until <= time.time() + storage.lease_secs + 1
    # A live lease: no resume may take the run over, whatever token it read.
    assert storage.take_over(iid, token_of(iid), new_token()) is None
    assert get(storage, iid).token == token_of(iid)


def test_a_submitted_or_parked_run_holds_no_lease(storage: Storage, iid: str) -> None:
    make(storage, iid, distributed=True)
    assert get(storage, iid).lease_until is None
    other = iid + "-parked"
    make(storage, other)
    final = FinalState(Status.WAITING, wake_at=T0, park_node="d")
    assert storage.finish(other, final, [], token=token_of(other)) is None
    assert get(storage, other).lease_until is None


def test_take_over_after_the_lease_ends_fences_the_old_execution(
    storage: Storage, iid: str
) -> None:
    make(storage, iid)
    old = token_of(iid)
    assert storage.renew_lease(iid, old, release=True)  # as if its lease had expired
    new = new_token()
    taken = storage.take_over(iid, old, new)
    assert taken is not None and taken.token == new and taken.status is Status.RUNNING
    assert taken.lease_until is not None and taken.lease_until > time.time()
    assert get(storage, iid).token == new
    # The old execution: every write refused, nothing written; its heartbeat is refused too.
    with pytest.raises(RunReplacedError, match="took it over"):
        storage.save_steps(iid, [step("a")], token=old)
    with pytest.raises(RunReplacedError):
        storage.record_attempt(iid, fail("a", 1), token=old)
    with pytest.raises(RunReplacedError):
        storage.consume_signal(iid, "go", "sig", token=old)
    with pytest.raises(RunReplacedError):
        storage.finish(iid, FinalState(Status.COMPLETED, b"stale"), [step("a")], token=old)
    assert not storage.renew_lease(iid, old)
    state = storage.load(iid)
    assert state is not None
    assert state.checkpoints == {} and state.attempts == {}
    assert state.record.status is Status.RUNNING and state.record.output is None
    # The new one writes, and a second take-over with the token it read loses to it.
    assert storage.save_steps(iid, [step("a", b"new")], token=new) is None
    assert storage.take_over(iid, old, new_token()) is None
    assert storage.finish(iid, FinalState(Status.COMPLETED, b"2"), [], token=new) is None
    assert get(storage, iid).output == b"2"


def test_take_over_needs_the_token_that_was_read(storage: Storage, iid: str) -> None:
    make(storage, iid, Status.WAITING, wake_at=T0, park_node="d")
    assert storage.take_over(iid, new_token(), new_token()) is None  # read before a change
    assert storage.take_over(iid + "-missing", None, new_token()) is None
    new = new_token()
    taken = storage.take_over(iid, token_of(iid), new)
    assert taken is not None and taken.status is Status.RUNNING  # in_progress while it runs
    assert storage.take_over(iid, token_of(iid), new_token()) is None  # the loser


@pytest.mark.parametrize(
    "status", [s for s in ALL_STATUSES if s in TERMINAL or s is Status.PAUSED], ids=str
)
def test_take_over_leaves_finished_and_paused_runs_alone(
    storage: Storage, iid: str, status: Status
) -> None:
    make(storage, iid, status)
    before = get(storage, iid)
    assert storage.take_over(iid, token_of(iid), new_token()) is None
    assert get(storage, iid) == before


def test_renew_lease_extends_only_the_owners_running_lease(storage: Storage, iid: str) -> None:
    make(storage, iid)
    first = get(storage, iid).lease_until
    assert first is not None
    time.sleep(0.01)
    assert storage.renew_lease(iid, token_of(iid))
    renewed = get(storage, iid).lease_until
    assert renewed is not None and renewed > first
    assert not storage.renew_lease(iid, new_token())
    assert not storage.renew_lease(iid + "-missing", token_of(iid))
    assert storage.finish(iid, FinalState(Status.AWAITING_SIGNAL, signal_name="go"), [],
                          token=token_of(iid)) is None  # fmt: skip
    assert not storage.renew_lease(iid, token_of(iid))  # parked: nothing to renew
    assert get(storage, iid).lease_until is None


# -- final states are final ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED], ids=str)
@pytest.mark.parametrize(
    "write",
    [
        lambda s, i, t: s.save_steps(i, [step("a")], token=t),
        lambda s, i, t: s.record_attempt(i, fail("a", 1), token=t),
        lambda s, i, t: s.consume_signal(i, "go", "a", token=t),
        lambda s, i, t: s.finish(i, FinalState(Status.COMPLETED, b"late"), [step("a")], token=t),
        lambda s, i, t: s.finish(i, FinalState(Status.WAITING, wake_at=T0), [step("a")], token=t),
        lambda s, i, t: s.finish(i, FinalState(Status.CANCELLED, reason="r"), [], token=t),
    ],
    ids=["save_steps", "record_attempt", "consume_signal", "finish", "finish_parked",
         "finish_cancelled"],
)  # fmt: skip
def test_a_finished_run_refuses_every_engine_write(
    storage: Storage, iid: str, status: Status, write: Callable[[Storage, str, str], object]
) -> None:
    make(storage, iid)
    token = token_of(iid)
    storage.send_signal(iid, "go", b"event")
    final = FinalState(status, b"out" if status is Status.COMPLETED else None, "e")
    assert storage.finish(iid, final, [step("done", b"D")], token=token) is None
    before = get(storage, iid)
    with pytest.raises(RunFinishedError) as info:
        write(storage, iid, token)
    assert info.value.instance_id == iid and status.value in str(info.value)
    state = storage.load(iid)
    assert state is not None
    assert state.record == before
    assert state.checkpoints == {"done": b"D"}
    assert state.attempts == {}


def test_an_applied_cancel_stays_whatever_the_engine_writes(storage: Storage, iid: str) -> None:
    """The race of issue 10: a resume moves past an expired delay while a cancel is applied
    to the parked run; the engine's later writes (and its finish) must not undo the cancel."""
    make(storage, iid, Status.WAITING, wake_at=T0, park_node="d")
    token = token_of(iid)
    storage.send_signal(iid, "go", b"event")
    assert storage.request_control(iid, ControlRequest("cancel", "stop", "ops")) is Status.WAITING
    cancel = ControlRequest("cancel", "stop", "ops")
    before = get(storage, iid)
    assert storage.save_steps(iid, [step("a")], token=token) == cancel
    assert storage.record_attempt(iid, started("b", 1), token=token) == cancel
    assert storage.consume_signal(iid, "go", "sig", token=token) is None
    done = FinalState(Status.COMPLETED, b"out")
    assert storage.finish(iid, done, [step("a")], token=token) == cancel
    assert storage.finish(iid, FinalState(Status.CANCELLED, reason="engine"), [], token=token) == (
        cancel
    )
    state = storage.load(iid)
    assert state is not None
    assert state.record == before
    assert state.checkpoints == {} and state.attempts == {}


def test_an_applied_pause_stays_and_keeps_the_finished_work(storage: Storage, iid: str) -> None:
    make(storage, iid, Status.WAITING, wake_at=T0, park_node="d")
    token = token_of(iid)
    assert storage.request_control(iid, ControlRequest("pause", "hold", "ops")) is Status.WAITING
    pause = ControlRequest("pause", "hold", "ops")
    done = FinalState(Status.COMPLETED, b"out")
    assert storage.finish(iid, done, [step("last", b"L")], token=token) == pause
    rec = get(storage, iid)
    assert (rec.status, rec.output, rec.reason, rec.paused_by) == (
        Status.PAUSED, None, "hold", "ops"
    )  # fmt: skip
    assert rec.completed_at is None
    # The task's checkpoint is kept: unpause + resume continues after it.
    assert storage.get_checkpoint(iid, "last") == b"L"
    parked = FinalState(Status.WAITING, wake_at=T0 + 5, park_node="d2")
    assert storage.finish(iid, parked, [], token=token) == pause
    assert get(storage, iid).status is Status.PAUSED
    # A cancel still applies to a paused run (control_decision), also from the engine.
    stop = FinalState(Status.CANCELLED, reason="c", by="e")
    assert storage.finish(iid, stop, [], token=token) is None
    assert get(storage, iid).status is Status.CANCELLED
