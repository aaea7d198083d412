"""What only the SQLite backend promises: the file, WAL, migrations, errors, crashes, processes.

The storage semantics shared with every backend are in tests/contract/test_storage_contract.py.
Writer processes are real OS processes (a script run with this interpreter), killed with
SIGKILL where the test says so (reliability plan R24).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import pytest

from sayiir.backends._sqlfiles import Migration, load_migrations, load_queries
from sayiir.backends.adapters import ThreadedAsyncStorage
from sayiir.backends.sqlite import SqliteBackend
from sayiir.backends.sqlite._connection import Database
from sayiir.backends.sqlite._migrate import migrate, split_statements
from sayiir.core.codec import JsonCodec
from sayiir.core.records import (
    AttemptRecord,
    FinalState,
    InstanceRecord,
    Status,
    StepRecord,
)
from sayiir.errors import BackendError

PACKAGE = "sayiir.backends.sqlite"
QUERIES = load_queries(PACKAGE)
MIGRATIONS = load_migrations(f"{PACKAGE}.migrations")
# The highest version shipped (numbers are reserved per feature: there may be gaps).
LATEST = MIGRATIONS[-1].version


def record(iid: str, status: Status = Status.RUNNING) -> InstanceRecord:
    now = time.time()
    return InstanceRecord(iid, "wf", "hash", status, b"1", created_at=now, updated_at=now)


def step(key: str, output: bytes = b"1", task_id: str | None = "t") -> StepRecord:
    return StepRecord(key, output, task_id, 1, 10.0, 10.25, "worker")


@pytest.fixture
def path(tmp_sqlite_path: Path) -> Path:
    return tmp_sqlite_path


@pytest.fixture
def backend(path: Path) -> Iterator[SqliteBackend]:
    with SqliteBackend(path) as b:
        yield b


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain second connection (autocommit), as a DBA or another program would open the file."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        yield conn
    finally:
        conn.close()


def pragma(backend: SqliteBackend, name: str) -> object:
    """A pragma as seen by the backend's own connection (synchronous is per connection)."""
    sql = {"synchronous": "PRAGMA synchronous", "foreign_keys": "PRAGMA foreign_keys"}[name]
    return backend._db.run("test", lambda cur: cur.execute(sql).fetchone()[0], None)


# -- the file, pragmas, lifecycle --------------------------------------------------------------


def test_file_is_in_wal_mode_with_full_sync_and_foreign_keys(
    backend: SqliteBackend, path: Path
) -> None:
    with connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert pragma(backend, "synchronous") == 2  # FULL
    assert pragma(backend, "foreign_keys") == 1


def test_synchronous_normal_and_bad_values(path: Path) -> None:
    with SqliteBackend(path, synchronous="NORMAL") as b:
        assert pragma(b, "synchronous") == 1
    with pytest.raises(ValueError, match="synchronous"):
        SqliteBackend(path, synchronous="off")
    with pytest.raises(ValueError, match="busy_timeout_secs"):
        SqliteBackend(path, busy_timeout_secs=-1)


def test_repr_path_codec_context_manager_and_async_form(path: Path) -> None:
    codec = JsonCodec()
    with SqliteBackend(str(path), codec=codec) as b:
        assert repr(b) == f"SqliteBackend({str(path)!r})"
        assert b.path == str(path)
        assert b.codec is codec
        assert isinstance(b.async_storage(), ThreadedAsyncStorage)
        b.create_instance(record("a"), replace=False)
    with pytest.raises(BackendError, match=r"is closed"):
        b.get_instance("a")
    b.close()  # idempotent
    with SqliteBackend(path) as again:  # state survives the process's connection
        assert again.get_instance("a") is not None
        assert isinstance(again.codec, JsonCodec)


def test_async_close(path: Path) -> None:
    b = SqliteBackend(path)
    asyncio.run(b.async_storage().aclose())
    with pytest.raises(BackendError):
        b.load("x")


def test_open_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "x.db"
    with pytest.raises(BackendError, match=re.escape(repr(str(missing)))):
        SqliteBackend(missing)
    not_a_db = tmp_path / "text.db"
    not_a_db.write_text("this is not a database " * 100)
    with pytest.raises(BackendError, match=r"text\.db") as info:
        SqliteBackend(not_a_db)
    assert isinstance(info.value.__cause__, sqlite3.Error)


def test_memory_database_works(tmp_path: Path) -> None:
    with SqliteBackend(":memory:") as b:
        b.create_instance(record("a"), replace=False)
        b.save_steps("a", [step("k")])
        assert b.get_checkpoint("a", "k") == b"1"


# -- tables and rows (what SQL users and the PostgreSQL contract see) --------------------------


def test_task_executions_rows(backend: SqliteBackend, path: Path) -> None:
    backend.create_instance(record("a"), replace=False)
    backend.record_attempt("a", AttemptRecord("k1", "t", 1, "running", 10.0, deadline=99.0))
    backend.record_attempt("a", AttemptRecord("k1", "t", 1, "failed", 10.0, 11.5, "boom", 20.0))
    backend.record_attempt("a", AttemptRecord("k1", "t", 2, "running", 21.0, deadline=99.0))
    backend.save_steps("a", [StepRecord("k1", b"ok", "t", 2, 21.0, 21.5, "w2")])
    backend.save_steps("a", [step("marker", task_id=None)])
    backend.finish("a", FinalState(Status.COMPLETED, b"1"), [step("k2")])
    with connect(path) as conn:
        rows = conn.execute(
            "SELECT key, task_id, attempt, status, worker_id, duration_ms, error"
            " FROM sayiir_task_executions ORDER BY key, attempt"
        ).fetchall()
        sizes = dict(conn.execute("SELECT key, size FROM sayiir_checkpoints").fetchall())
    assert rows == [
        ("k1", "t", 1, "failed", None, 1500.0, "boom"),
        ("k1", "t", 2, "completed", "w2", 500.0, None),
        ("k2", "t", 1, "completed", "worker", 250.0, None),
    ]
    assert sizes == {"k1": 2, "marker": 1, "k2": 1}


def test_consumed_signals_are_kept_and_marked(backend: SqliteBackend, path: Path) -> None:
    backend.create_instance(record("a", Status.AWAITING_SIGNAL), replace=False)
    backend.send_signal("a", "go", b"1")
    backend.send_signal("a", "go", b"2")
    assert backend.consume_signal("a", "go", "k") == b"1"
    with connect(path) as conn:
        rows = conn.execute(
            "SELECT payload, consumed_at IS NOT NULL FROM sayiir_workflow_signals ORDER BY id"
        ).fetchall()
    assert rows == [(b"1", 1), (b"2", 0)]


def test_monitoring_query_counts_each_run_once(backend: SqliteBackend, path: Path) -> None:
    for i, status in enumerate([Status.RUNNING, Status.COMPLETED, Status.COMPLETED]):
        backend.create_instance(record(f"i{i}", status), replace=False)
    with connect(path) as conn:
        counts = conn.execute(
            "SELECT status, COUNT(*) FROM sayiir_workflow_instances"
            " WHERE created_at > CAST(strftime('%s', 'now') AS REAL) - 3600"
            " GROUP BY status ORDER BY status"
        ).fetchall()
    assert counts == [("completed", 2), ("running", 1)]


def test_every_lookup_uses_an_index(backend: SqliteBackend, path: Path) -> None:
    skip = ("pragma_", "begin_", "commit", "rollback", "create_migrations_table")
    full_scan_ok = {"migrations_table_exists", "applied_migrations"}  # tiny tables
    # Not table scans: a VALUES row, a subquery's rows, a JSON array given as a parameter.
    harmless = ("SCAN CONSTANT ROW", "SCAN (subquery", "SCAN json_each ", "SCAN t VIRTUAL")
    # The claim walks unclaimed entries in claim order and stops after LIMIT rows.
    ordered_walk = {"queue_claimable": "SCAN q USING INDEX sayiir_task_queue_ready_idx"}
    with connect(path) as conn:
        for name, sql in QUERIES.items():
            if name.startswith(skip) or name in full_scan_ok:
                continue
            params = dict.fromkeys(re.findall(r":(\w+)", sql))
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            scans = [
                line
                for line in plan
                if line.startswith("SCAN")
                and not line.startswith(harmless)
                and line != ordered_walk.get(name)
            ]
            assert not scans, f"{name}: {plan}"


def test_corrupt_rows_do_not_break_other_instances(backend: SqliteBackend, path: Path) -> None:
    for iid in ("good", "bad-status", "bad-bytes"):
        backend.create_instance(record(iid), replace=False)
        backend.save_steps(iid, [step("k", b'{"v": 1}')])
    with connect(path) as conn:
        conn.execute(
            "UPDATE sayiir_workflow_instances SET status = 'zombie'"
            " WHERE instance_id = 'bad-status'"
        )
        # Stored as TEXT holding invalid UTF-8: still handed back as bytes, for the codec to judge.
        conn.execute(
            "UPDATE sayiir_checkpoints SET output = CAST(X'FF00FE' AS TEXT)"
            " WHERE instance_id = 'bad-bytes'"
        )
        conn.execute(
            "UPDATE sayiir_workflow_instances SET input = 'plain text'"
            " WHERE instance_id = 'bad-bytes'"
        )
    with pytest.raises(BackendError, match=r"'bad-status'.*'zombie'"):
        backend.load("bad-status")
    state = backend.load("bad-bytes")
    assert state is not None
    assert state.checkpoints == {"k": b"\xff\x00\xfe"}
    assert state.record.input == b"plain text"
    assert backend.get_checkpoint("bad-bytes", "k") == b"\xff\x00\xfe"
    good = backend.load("good")
    assert good is not None and good.checkpoints == {"k": b'{"v": 1}'}
    assert backend.save_steps("good", [step("k2")]) is None


def test_online_backup_continues_every_run(
    backend: SqliteBackend, path: Path, tmp_path: Path
) -> None:
    backend.create_instance(record("a"), replace=False)
    backend.save_steps("a", [step("k")])
    backend.finish("a", FinalState(Status.AWAITING_SIGNAL, signal_name="go"), [])
    backend.send_signal("a", "go", b"x")
    copy = tmp_path / "copy.db"
    with connect(path) as source, connect(copy) as target:
        source.backup(target)  # what `sqlite3 runs.db ".backup copy.db"` does
    with SqliteBackend(copy) as restored:
        state = restored.load("a")
        assert state is not None and state.checkpoints == {"k": b"1"}
        assert state.record.status is Status.AWAITING_SIGNAL
        assert restored.consume_signal("a", "go", "sig") == b"x"


# -- busy handling and error translation -------------------------------------------------------


def test_waits_for_a_writer_that_lets_go(path: Path) -> None:
    with SqliteBackend(path, busy_timeout_secs=10) as b:
        b.create_instance(record("a"), replace=False)
        with connect(path) as holder:
            holder.execute("BEGIN IMMEDIATE")
            letting_go = threading.Event()

            def let_go() -> None:
                letting_go.set()  # before the COMMIT: the save cannot finish ahead of it
                holder.execute("COMMIT")

            timer = threading.Timer(0.3, let_go)
            timer.start()
            try:
                assert b.save_steps("a", [step("k")]) is None
                assert letting_go.is_set()  # it waited for the writer, not failed or raced it
            finally:
                timer.join()


def test_lock_held_past_the_timeout_raises_backend_error(path: Path) -> None:
    with SqliteBackend(path, busy_timeout_secs=0.2) as b:
        b.create_instance(record("a"), replace=False)
        with connect(path) as holder:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(BackendError) as info:
                b.save_steps("a", [step("k")])
            holder.execute("ROLLBACK")
        message = str(info.value)
        assert str(path) in message and "locked" in message and "busy_timeout_secs" in message
        assert b.get_checkpoint("a", "k") is None
        assert b.save_steps("a", [step("k")]) is None  # usable again


def test_busy_errors_outside_the_busy_handler_are_retried(backend: SqliteBackend) -> None:
    # SQLite returns some SQLITE_BUSY errors without calling its busy handler (WAL recovery, a
    # concurrent switch to WAL mode): the whole transaction is retried, never surfaced.
    calls = []

    def flaky(cur: sqlite3.Cursor) -> str:
        calls.append(cur.connection.in_transaction)
        if len(calls) < 3:
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = 5
            raise exc
        return "done"

    assert backend._db.write("test", flaky) == "done"
    assert calls == [True, True, True]  # each attempt in its own BEGIN IMMEDIATE


def test_sqlite_errors_are_translated(backend: SqliteBackend, path: Path) -> None:
    backend.create_instance(record("a"), replace=False)
    before = backend.get_instance("a")
    with connect(path) as conn:
        conn.execute("DROP TABLE sayiir_checkpoints")
    with pytest.raises(BackendError, match=r"save_steps\('a'\) failed: no such table") as info:
        backend.save_steps("a", [step("k")])
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert str(path) in str(info.value)
    # The failed transaction was rolled back: the touch of the instance did not persist.
    assert backend.get_instance("a") == before


# -- migrations --------------------------------------------------------------------------------


def _schema(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name"
    ).fetchall()
    # Layout-insensitive: ALTER TABLE ADD COLUMN stores "REAL , x TEXT)" where a fresh
    # CREATE TABLE says "REAL, x TEXT )".
    return [(kind, name, re.sub(r"\s*([,()])\s*", r"\1", " ".join(sql.split())))
            for kind, name, sql in rows]  # fmt: skip


def test_migrations_give_exactly_schema_sql(tmp_path: Path) -> None:
    SqliteBackend(tmp_path / "migrated.db").close()
    schema_sql = resources.files(PACKAGE).joinpath("schema.sql").read_text(encoding="utf-8")
    with connect(tmp_path / "fresh.db") as fresh, connect(tmp_path / "migrated.db") as migrated:
        fresh.executescript(schema_sql)
        assert _schema(migrated) == _schema(fresh)
        assert {name for _, name, _ in _schema(fresh)} >= {
            "sayiir_schema_migrations",
            "sayiir_workflow_instances",
            "sayiir_checkpoints",
            "sayiir_task_executions",
            "sayiir_workflow_signals",
        }


def test_migrations_are_recorded_once_and_idempotent(path: Path) -> None:
    SqliteBackend(path).close()
    with connect(path) as conn:
        first = conn.execute("SELECT * FROM sayiir_schema_migrations").fetchall()
    assert [(v, n, c) for v, n, c, _ in first] == [
        (m.version, m.name, m.checksum) for m in MIGRATIONS
    ]
    for _ in range(3):
        SqliteBackend(path).close()
    with connect(path) as conn:
        assert conn.execute("SELECT * FROM sayiir_schema_migrations").fetchall() == first


def test_concurrent_opens_of_a_new_file_migrate_once(path: Path) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_it() -> None:
        try:
            barrier.wait()
            SqliteBackend(path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sayiir_schema_migrations").fetchone()[0] == len(
            MIGRATIONS
        )


def test_database_newer_than_the_code_is_refused(path: Path) -> None:
    SqliteBackend(path).close()
    newer = MIGRATIONS[-1].version + 1
    with connect(path) as conn:
        conn.execute(
            "INSERT INTO sayiir_schema_migrations VALUES (?, 'from_the_future', 'abc', 0)",
            (newer,),
        )
    with pytest.raises(BackendError) as info:
        SqliteBackend(path)
    message = str(info.value)
    assert f"schema version {newer}" in message and f"up to {newer - 1}" in message
    assert str(path) in message


def test_migrations_apply_by_set_and_one_this_code_lacks_is_refused(path: Path) -> None:
    """Numbers may have gaps (reserved by features built side by side): a database gets the
    versions it lacks, whatever their order; one that applied a version this build lacks was
    migrated by another build, and is refused."""
    SqliteBackend(path).close()
    latest = MIGRATIONS[-1].version
    alter = "ALTER TABLE sayiir_checkpoints ADD COLUMN {} TEXT;"
    other = Migration(latest + 1, "elsewhere", alter.format("other"), "c-other", True)
    mine = Migration(latest + 2, "mine", alter.format("mine"), "c-mine", True)
    db = Database(str(path), QUERIES, synchronous="full", busy_timeout=5.0)
    try:
        migrate(db, QUERIES, [*MIGRATIONS, mine])  # a gap before it
        migrate(db, QUERIES, [*MIGRATIONS, other, mine])  # the gap filled later
        with pytest.raises(BackendError, match=rf"applied migration {latest + 1:04d}_elsewhere"):
            migrate(db, QUERIES, [*MIGRATIONS, mine])
    finally:
        db.close()
    with connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sayiir_checkpoints)")]
    assert {"other", "mine"} <= set(columns)


def test_edited_migration_is_refused(path: Path) -> None:
    SqliteBackend(path).close()
    with connect(path) as conn:
        conn.execute("UPDATE sayiir_schema_migrations SET checksum = 'deadbeef' WHERE version = 1")
    with pytest.raises(BackendError, match=r"0001_initial.*deadbeef.*edited") as info:
        SqliteBackend(path)
    assert f"this sayiir: {MIGRATIONS[-1].version}" in str(info.value)


def test_upgrade_applies_only_the_new_migrations(path: Path) -> None:
    SqliteBackend(path).close()
    n = MIGRATIONS[-1].version
    newer = [
        *MIGRATIONS,
        Migration(
            n + 1, "add_note", "ALTER TABLE sayiir_checkpoints ADD COLUMN note TEXT;", "c2", True
        ),
        Migration(n + 2, "vacuum", "-- sayiir: no-transaction\nVACUUM;\n", "c3", False),
    ]
    db = Database(str(path), QUERIES, synchronous="full", busy_timeout=5.0)
    try:
        migrate(db, QUERIES, newer)
        migrate(db, QUERIES, newer)  # idempotent
    finally:
        db.close()
    with connect(path) as conn:
        versions = conn.execute("SELECT version, name FROM sayiir_schema_migrations").fetchall()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sayiir_checkpoints)")]
    assert versions == [(m.version, m.name) for m in newer]
    assert "note" in columns
    with pytest.raises(BackendError, match=f"schema version {n + 2}"):  # this release is older
        SqliteBackend(path)


def test_the_schema_before_task_limits_is_upgraded_and_runs_with_limits(path: Path) -> None:
    """A file migrated by the release before task limits (0009) gets 0010 when opened, and
    workflows with task limits run on it."""
    from sayiir import Flow, RateLimit, run_durable_workflow, task

    before = [m for m in MIGRATIONS if m.version < 10]
    db = Database(str(path), QUERIES, synchronous="full", busy_timeout=5.0)
    try:
        migrate(db, QUERIES, before)
    finally:
        db.close()
    with connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "sayiir_task_slots" not in names

    @task(max_concurrent=1, rate_limit=RateLimit(5, "1s"))
    def limited(x: int) -> int:
        return x + 1

    with SqliteBackend(path) as backend:
        wf = Flow("limited").then(limited).build()
        assert run_durable_workflow(wf, "r", 1, backend=backend).output == 2
    with connect(path) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM sayiir_schema_migrations")]
    assert versions == [m.version for m in MIGRATIONS]


def test_a_failing_migration_leaves_no_trace(path: Path) -> None:
    SqliteBackend(path).close()
    n = MIGRATIONS[-1].version
    sql = "CREATE TABLE x (a INT); SELECT * FROM nowhere;"
    broken = Migration(n + 1, "broken", sql, "c2", True)
    db = Database(str(path), QUERIES, synchronous="full", busy_timeout=5.0)
    try:
        with pytest.raises(BackendError, match=rf"{n + 1:04d}_broken failed: no such table"):
            migrate(db, QUERIES, [*MIGRATIONS, broken])
    finally:
        db.close()
    with connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM sayiir_schema_migrations").fetchone() == (n,)
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'x'").fetchone() is None


def test_a_database_from_before_run_tokens_keeps_working(path: Path) -> None:
    """A file migrated by the release before 0002_run_token holds runs without a token:
    they are upgraded in place, resumed, and accept every write."""
    db = Database(str(path), QUERIES, synchronous="full", busy_timeout=5.0)
    try:
        migrate(db, QUERIES, MIGRATIONS[:1])
    finally:
        db.close()
    with connect(path) as conn:
        conn.execute(
            "INSERT INTO sayiir_workflow_instances (instance_id, workflow_id, definition_hash,"
            " status, input, created_at, updated_at) VALUES ('old', 'wf', 'h', 'running', ?, 0, 0)",
            (b"1",),
        )
    with SqliteBackend(path) as backend:
        rec = backend.get_instance("old")
        assert rec is not None and rec.token is None
        assert backend.save_steps("old", [StepRecord("a", b"2", "t")], token="any") is None
        assert backend.get_checkpoint("old", "a") == b"2"


def test_split_statements() -> None:
    sql = """
    -- header; with a semicolon
    CREATE TABLE t (a TEXT DEFAULT 'x;y'); CREATE TABLE u (b INT);
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        INSERT INTO u VALUES (1);
        INSERT INTO u VALUES (2);
    END;
    -- trailing comment
    """
    statements = split_statements(sql)
    assert len(statements) == 3
    assert statements[0].endswith("CREATE TABLE t (a TEXT DEFAULT 'x;y');")
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")
    with connect(Path(":memory:")) as conn:
        for statement in statements:
            conn.execute(statement)
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE v (a INT)")


# -- threads, processes, crashes ---------------------------------------------------------------


def test_threads_writing_and_reading_concurrently(backend: SqliteBackend) -> None:
    backend.create_instance(record("shared"), replace=False)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def branch(n: int) -> None:
        try:
            barrier.wait()
            for i in range(40):
                backend.save_steps("shared", [step(f"{n}-{i}", f"{n}:{i}".encode())])
                backend.send_signal("shared", f"s{n}", str(i).encode())
                state = backend.load("shared")
                assert state is not None and state.checkpoints[f"{n}-{i}"] == f"{n}:{i}".encode()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=branch, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    state = backend.load("shared")
    assert state is not None and len(state.checkpoints) == 320
    for n in range(8):  # each thread's signals in the order it sent them
        got = [backend.consume_signal("shared", f"s{n}", f"c{n}-{i}") for i in range(40)]
        assert got == [str(i).encode() for i in range(40)]


WRITER = """
import sys, time
from sayiir.backends.sqlite import SqliteBackend
from sayiir.core.records import FinalState, InstanceRecord, Status, StepRecord

path, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
backend = SqliteBackend(path)
i = 0
while count == 0 or i < count:
    iid = f"{prefix}-{i}"
    now = time.time()
    rec = InstanceRecord(iid, "wf", "h", Status.RUNNING, b"in", created_at=now, updated_at=now)
    backend.create_instance(rec, replace=False)
    for k in range(4):
        backend.save_steps(iid, [StepRecord(f"s{k}", bytes(2000), "t", 1, now, now, prefix)])
    backend.send_signal("shared", "go", iid.encode())
    backend.finish(iid, FinalState(Status.COMPLETED, b"out"), [])
    print(i, flush=True)
    i += 1
backend.close()
"""


def _writer(tmp_path: Path, db: Path, prefix: str, count: int) -> subprocess.Popen[str]:
    script = tmp_path / "writer.py"
    if not script.exists():
        script.write_text(WRITER)
    return subprocess.Popen(
        [sys.executable, str(script), str(db), prefix, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_integrity(db: Path) -> None:
    with connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_kill_9_of_a_writer_loses_nothing_committed(tmp_path: Path, path: Path) -> None:
    SqliteBackend(path).close()
    for round_ in range(3):
        proc = _writer(tmp_path, path, f"r{round_}", 0)
        assert proc.stdout is not None
        done = []
        for line in proc.stdout:
            done.append(int(line))
            if len(done) >= 15 + 5 * round_:
                break
        time.sleep(0.01 * round_)  # land the kill at different points of a transaction
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()  # reaps it and closes the pipes
        assert proc.returncode == -signal.SIGKILL
        _check_integrity(path)
        with SqliteBackend(path) as b:
            for i in done:
                state = b.load(f"r{round_}-{i}")
                assert state is not None and state.record.status is Status.COMPLETED
                assert state.checkpoints == {f"s{k}": bytes(2000) for k in range(4)}
            # The instance in flight at the kill is whole up to its last commit.
            partial = b.load(f"r{round_}-{done[-1] + 1}")
            if partial is not None:
                keys = sorted(partial.checkpoints)
                assert keys == [f"s{k}" for k in range(len(keys))]


def test_four_processes_write_one_file_without_lock_errors(tmp_path: Path, path: Path) -> None:
    # The file does not exist yet: the four processes also race to create and migrate it.
    count = 40
    procs = [_writer(tmp_path, path, f"p{n}", count) for n in range(4)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert "locked" not in err
        assert proc.returncode == 0, err
        assert out.split() == [str(i) for i in range(count)]
    _check_integrity(path)
    with connect(path) as conn:
        statuses = conn.execute(
            "SELECT status, count(*) FROM sayiir_workflow_instances GROUP BY status"
        ).fetchall()
        checkpoints = conn.execute("SELECT count(*) FROM sayiir_checkpoints").fetchone()[0]
        signals = conn.execute("SELECT count(*) FROM sayiir_workflow_signals").fetchone()[0]
        versions = conn.execute("SELECT count(*) FROM sayiir_schema_migrations").fetchone()[0]
    assert statuses == [("completed", 4 * count)]
    assert checkpoints == 4 * count * 4
    assert signals == 4 * count
    assert versions == len(MIGRATIONS)


FORKER = """
import os, sys, traceback
from sayiir.backends.sqlite import SqliteBackend
from sayiir.core.records import InstanceRecord, Status, StepRecord

backend = SqliteBackend(sys.argv[1])
backend.create_instance(InstanceRecord("f", "wf", "h", Status.RUNNING, b"1"), replace=False)
backend.save_steps("f", [StepRecord("parent-1", b"1")])
pid = os.fork()
if pid == 0:
    try:
        backend.save_steps("f", [StepRecord("child", b"2")])
        code = 0
    except BaseException:
        traceback.print_exc()
        code = 1
    os._exit(code)
_, status = os.waitpid(pid, 0)
backend.save_steps("f", [StepRecord("parent-2", b"3")])
print(os.waitstatus_to_exitcode(status), sorted(backend.load("f").checkpoints))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path, path: Path) -> None:
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    result = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0 ['child', 'parent-1', 'parent-2']"
    _check_integrity(path)
