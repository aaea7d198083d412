"""What only the PostgreSQL backend promises about storage: one round trip per write, tables
as the contract describes them, retries that recognise their own commit, concurrency.

The semantics shared with every backend are checked by tests/contract/test_storage_contract.py
(and the engine suite, tests/engine, runs every workflow shape on PostgreSQL too).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from sayiir.backends.postgres import PostgresBackend
from sayiir.backends.postgres._io import DRIVER
from sayiir.core.records import (
    AttemptRecord,
    AttemptState,
    ControlRequest,
    FinalState,
    InstanceRecord,
    Status,
    StepRecord,
)

pytestmark = pytest.mark.postgres

T0 = 1_700_000_000.25


@pytest.fixture
def backend(pg_dsn: str) -> Iterator[PostgresBackend]:
    b = PostgresBackend(pg_dsn)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def iid() -> str:
    return f"inst-{uuid.uuid4().hex}"


def record(iid: str, status: Status = Status.RUNNING, **kw: Any) -> InstanceRecord:
    base = InstanceRecord(iid, "wf", "hash-1", status, b'{"n": 1}', created_at=T0, updated_at=T0)
    return replace(base, **kw)


def step(key: str, out: bytes = b"1", task_id: str | None = "t", attempt: int = 1) -> StepRecord:
    return StepRecord(key, out, task_id, attempt, T0 + 1, T0 + 1.5, "worker-1")


# -- one round trip per operation --------------------------------------------------------------


class StatementCounter:
    """Counts the statements psycopg sends (each is one network round trip here): every one
    goes through ``Cursor.execute``, ``Connection.execute`` included."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = psycopg.Cursor.execute

        def counting(cur: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(cur, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", counting)

    def take(self) -> int:
        n, self.count = self.count, 0
        return n


def test_every_storage_operation_is_one_statement(
    backend: PostgresBackend, iid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.get_instance("warm-up")  # connect and migrate first
    counter = StatementCounter(monkeypatch)
    calls: list[tuple[str, Callable[[], object]]] = [
        ("create_instance", lambda: backend.create_instance(record(iid), replace=False)),
        ("create_instance (exists)", lambda: backend.create_instance(record(iid), replace=False)),
        ("save_steps", lambda: backend.save_steps(iid, [step("a"), step("b"), step("m", b"2", None)])),  # noqa: E501
        ("record_attempt", lambda: backend.record_attempt(iid, AttemptRecord("c", "t", 1, "failed", T0))),  # noqa: E501
        ("load", lambda: backend.load(iid)),
        ("send_signal", lambda: backend.send_signal(iid, "go", b"1")),
        ("consume_signal", lambda: backend.consume_signal(iid, "go", "sig")),
        ("request_control", lambda: backend.request_control(iid, ControlRequest("pause"))),
        ("unpause", lambda: backend.unpause(iid)),
        ("get_instance", lambda: backend.get_instance(iid)),
        ("get_checkpoint", lambda: backend.get_checkpoint(iid, "a")),
        ("finish", lambda: backend.finish(iid, FinalState(Status.COMPLETED, b"9"), [step("z")])),
    ]  # fmt: skip
    for name, call in calls:
        call()
        assert counter.take() == 1, name


def test_a_definition_is_stored_by_the_first_run_start_of_each_process_only(
    backend: PostgresBackend, pg_dsn: str, iid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing definitions for the console adds no statement to a run start in steady
    state: each backend object inserts a hash once, then only remembers it."""
    backend.get_instance("warm-up")
    counter = StatementCounter(monkeypatch)
    shape = '{"workflow_id": "wf", "definition_hash": "hash-def", "root": {}}'
    defined = record(iid, definition_hash="hash-def", definition=shape)
    backend.create_instance(defined, replace=False)
    assert counter.take() == 2  # the definition, then the run
    backend.create_instance(replace(defined, instance_id=iid + "-2"), replace=False)
    assert counter.take() == 1
    with PostgresBackend(pg_dsn) as other:  # another process: inserts (nothing) once, too
        other.get_instance("warm-up")
        counter.take()
        other.create_instance(replace(defined, instance_id=iid + "-3"), replace=False)
        assert counter.take() == 2
        other.create_instance(replace(defined, instance_id=iid + "-4"), replace=False)
        assert counter.take() == 1
    info = backend.get_definition("hash-def")
    assert info is not None and info.structure["root"] == {}


# -- the tables --------------------------------------------------------------------------------


def test_tables_hold_what_the_contract_lists(
    backend: PostgresBackend, db: psycopg.Connection[Any], iid: str
) -> None:
    backend.create_instance(record(iid), replace=False)
    backend.record_attempt(iid, AttemptRecord("a", "task_a", 1, "failed", T0, T0 + 0.25, "boom"))
    backend.save_steps(iid, [StepRecord("a", b"12345", "task_a", 2, T0 + 1, T0 + 1.5, "w1")])
    backend.save_steps(iid, [StepRecord("timer", b"1.5", None, 1, T0, T0)])
    backend.send_signal(iid, "go", b"x")
    backend.finish(iid, FinalState(Status.COMPLETED, b'"done"'), [])

    inst = db.execute(
        "SELECT status, output, created_at = to_timestamp(%s), completed_at IS NOT NULL"
        " FROM sayiir_workflow_instances WHERE instance_id = %s",
        (T0, iid),
    ).fetchone()
    assert inst == ("completed", b'"done"', True, True)
    attempts = db.execute(
        "SELECT task_id, attempt, status, worker_id, duration_ms, error"
        " FROM sayiir_task_executions WHERE instance_id = %s ORDER BY attempt",
        (iid,),
    ).fetchall()
    assert attempts == [
        ("task_a", 1, "failed", None, 250.0, "boom"),
        ("task_a", 2, "completed", "w1", 500.0, None),
    ]
    checkpoints = db.execute(
        "SELECT key, task_id, size FROM sayiir_checkpoints WHERE instance_id = %s ORDER BY key",
        (iid,),
    ).fetchall()
    assert checkpoints == [("a", "task_a", 5), ("timer", None, 3)]
    signals = db.execute(
        "SELECT signal_name, payload, consumed_at IS NULL FROM sayiir_workflow_signals"
        " WHERE instance_id = %s",
        (iid,),
    ).fetchall()
    assert signals == [("go", b"x", True)]
    types = dict(
        db.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'sayiir_workflow_instances'"
        ).fetchall()
    )
    for column in ("created_at", "updated_at", "completed_at", "wake_at"):
        assert types[column] == "timestamp with time zone"
    assert types["input"] == types["output"] == "bytea"


def test_spec_monitoring_query_counts_each_run_once(
    backend: PostgresBackend, db: psycopg.Connection[Any]
) -> None:
    run = uuid.uuid4().hex
    now = time.time()
    for i, status in enumerate([Status.RUNNING, Status.WAITING, Status.FAILED, Status.FAILED]):
        rid = f"{run}-{i}"
        backend.create_instance(record(rid, status, created_at=now), replace=False)
        if status is Status.RUNNING:
            backend.save_steps(rid, [step("a"), step("b")])
    rows = db.execute(
        """SELECT status, COUNT(*) FROM sayiir_workflow_instances
WHERE created_at > NOW() - INTERVAL '1 hour' GROUP BY status;"""
    ).fetchall()
    counts = dict(rows)
    assert counts["failed"] >= 2 and counts["waiting"] >= 1 and counts["running"] >= 1
    mine = db.execute(
        "SELECT count(*) FROM sayiir_workflow_instances WHERE instance_id LIKE %s", (f"{run}-%",)
    ).fetchone()
    assert mine == (4,)


def test_indexes_serve_the_lookups(db: psycopg.Connection[Any], backend: PostgresBackend) -> None:
    backend.get_instance("warm-up")
    indexed = {
        (table, column)
        for table, column in db.execute(
            """SELECT t.relname, a.attname
            FROM pg_index x
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
            WHERE t.relname LIKE 'sayiir\\_%'"""
        ).fetchall()
    }
    for needed in [
        ("sayiir_workflow_instances", "instance_id"),
        ("sayiir_workflow_instances", "workflow_id"),
        ("sayiir_workflow_instances", "status"),
        ("sayiir_workflow_instances", "created_at"),
        ("sayiir_task_executions", "instance_id"),
        ("sayiir_task_executions", "task_id"),
        ("sayiir_checkpoints", "instance_id"),
        ("sayiir_workflow_signals", "instance_id"),
    ]:
        assert needed in indexed, needed
    options = db.execute(
        "SELECT reloptions FROM pg_class WHERE relname = 'sayiir_workflow_instances'"
    ).fetchone()
    assert options == (["fillfactor=80"],)


# -- retries recognise their own commit --------------------------------------------------------


class LoseConnectionAfterCommit:
    """Make the next ``n`` operations run, commit, then fail as if the connection broke.

    The backend cannot know whether its write committed, so it re-sends it: the re-sent
    write must recognise its own first attempt (reliability plan R3).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, n: int = 1) -> None:
        self.left = n
        original = DRIVER.execute

        def execute(conn: Any, compiled: Any, op: Any) -> Any:
            result = original(conn, compiled, op)
            if self.left > 0:
                self.left -= 1
                conn.close()
                raise psycopg.OperationalError(
                    "consuming input failed: server closed the connection"
                )
            return result

        monkeypatch.setattr(DRIVER, "execute", execute)


def test_retried_create_is_not_a_conflict(
    backend: PostgresBackend, iid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.get_instance("warm-up")
    LoseConnectionAfterCommit(monkeypatch)
    assert backend.create_instance(record(iid), replace=False) is None
    # ... while a genuinely different start still sees the existing run.
    assert backend.create_instance(record(iid), replace=False) is not None


def test_retried_send_signal_stores_the_event_once(
    backend: PostgresBackend, iid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.create_instance(record(iid, Status.AWAITING_SIGNAL), replace=False)
    LoseConnectionAfterCommit(monkeypatch)
    assert backend.send_signal(iid, "go", b"once") is Status.AWAITING_SIGNAL
    assert backend.consume_signal(iid, "go", "k1") == b"once"
    assert backend.consume_signal(iid, "go", "k2") is None


def test_retried_consume_does_not_take_a_second_event(
    backend: PostgresBackend, iid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.create_instance(record(iid, Status.AWAITING_SIGNAL), replace=False)
    backend.send_signal(iid, "go", b"first")
    backend.send_signal(iid, "go", b"second")
    LoseConnectionAfterCommit(monkeypatch)
    assert backend.consume_signal(iid, "go", "k") == b"first"
    assert backend.consume_signal(iid, "go", "k2") == b"second"


def test_retried_writes_do_not_duplicate_rows(
    backend: PostgresBackend, db: psycopg.Connection[Any], iid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.create_instance(record(iid), replace=False)
    LoseConnectionAfterCommit(monkeypatch, n=3)
    backend.record_attempt(iid, AttemptRecord("a", "t", 1, "failed", T0, T0, "e", T0 + 1))
    backend.save_steps(iid, [step("a", attempt=2)])
    backend.finish(iid, FinalState(Status.COMPLETED, b"1"), [step("b")])
    rows = db.execute(
        "SELECT task_key, attempt, status FROM sayiir_task_executions WHERE instance_id = %s"
        " ORDER BY task_key, attempt",
        (iid,),
    ).fetchall()
    assert rows == [("a", 1, "failed"), ("a", 2, "completed"), ("b", 1, "completed")]
    assert backend.get_instance(iid).status is Status.COMPLETED  # type: ignore[union-attr]


# -- concurrency -------------------------------------------------------------------------------


def run_threads(n: int, target: Any) -> list[Any]:
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_starts_of_one_id_create_one_run(backend: PostgresBackend, iid: str) -> None:
    backend.get_instance("warm-up")
    results = run_threads(
        8, lambda i: backend.create_instance(record(iid, input=b"%d" % i), replace=False)
    )
    assert sum(r is None for r in results) == 1
    winner = backend.get_instance(iid)
    assert all(r == winner for r in results if r is not None)


def test_concurrent_consumers_take_each_event_once(backend: PostgresBackend, iid: str) -> None:
    backend.create_instance(record(iid, Status.AWAITING_SIGNAL), replace=False)
    for i in range(6):
        backend.send_signal(iid, "go", b"%d" % i)
    taken = run_threads(6, lambda i: backend.consume_signal(iid, "go", f"k{i}"))
    assert sorted(taken) == [b"%d" % i for i in range(6)]


def test_replace_waits_for_a_concurrent_writer_and_drops_its_rows(
    backend: PostgresBackend, pg_dsn: str, iid: str
) -> None:
    backend.create_instance(record(iid), replace=False)
    # A writer of the old run, mid-statement: it holds the instance row and has written a
    # checkpoint that is not committed yet.
    with psycopg.connect(pg_dsn) as writer:
        writer.execute(
            "UPDATE sayiir_workflow_instances SET updated_at = now() WHERE instance_id = %s",
            (iid,),
        )
        writer.execute(
            "INSERT INTO sayiir_checkpoints (instance_id, key, output) VALUES (%s, 'late', 'x')",
            (iid,),
        )
        done = threading.Event()

        def replace_it() -> None:
            backend.create_instance(record(iid, workflow_id="new"), replace=True)
            done.set()

        thread = threading.Thread(target=replace_it)
        thread.start()
        assert not done.wait(0.3), "replace must wait for the writer's row lock"
        writer.commit()
    thread.join()
    state = backend.load(iid)
    assert state is not None and state.record.workflow_id == "new"
    assert state.checkpoints == {}


def test_load_folds_attempts_in_insertion_order(backend: PostgresBackend, iid: str) -> None:
    backend.create_instance(record(iid), replace=False)
    backend.record_attempt(iid, AttemptRecord("a", "t", 1, "running", T0, deadline=T0 + 5))
    backend.record_attempt(iid, AttemptRecord("a", "t", 1, "failed", T0, T0 + 1, "e1", T0 + 2))
    backend.record_attempt(iid, AttemptRecord("a", "t", 2, "running", T0 + 2, deadline=T0 + 9))
    state = backend.load(iid)
    assert state is not None
    assert state.attempts == {"a": AttemptState(1, "e1", T0 + 2, T0 + 9)}
