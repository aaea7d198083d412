"""The partitioned layout of the PostgreSQL backend (issue 16 item 7; docs/postgres.md).

Each test uses a table prefix of its own in the module's fresh database. Runs are made in
past months through the storage API (a record carries its creation time), then the plain
tables are converted, so that each of those months has a partition of its own.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sayiir import Flow, PostgresBackend, WorkflowClient
from sayiir.backends.postgres import _partition
from sayiir.cli.app import main as cli
from sayiir.core.records import (
    AttemptRecord,
    FinalState,
    InstanceRecord,
    RunState,
    Status,
    StepRecord,
)
from sayiir.errors import BackendError

pytestmark = pytest.mark.postgres

DAY = 86400.0
NOW = time.time()


def month_start(months_ago: int) -> datetime:
    """The first instant (UTC) of the month ``months_ago`` months before this one."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - months_ago
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def in_month(months_ago: int, day: int = 10) -> float:
    return month_start(months_ago).timestamp() + day * DAY


def suffix(months_ago: int) -> str:
    return "_p" + month_start(months_ago).strftime("%Y%m")


@pytest.fixture
def prefix() -> str:
    return f"p{secrets.token_hex(4)}_"


@pytest.fixture
def db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


def relations(db: psycopg.Connection[Any], prefix: str) -> set[str]:
    rows = db.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " AND relkind IN ('r', 'p') AND starts_with(relname, %s)",
        (prefix,),
    ).fetchall()
    return {name[len(prefix) :] for (name,) in rows}


def relkind(db: psycopg.Connection[Any], prefix: str) -> str:
    row = db.execute(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)",
        (f"public.{prefix}workflow_instances",),
    ).fetchone()
    assert row is not None
    return str(row[0])


def make_run(
    backend: PostgresBackend,
    iid: str,
    created: float,
    *,
    finished: bool,
    steps: int = 2,
) -> None:
    rec = InstanceRecord(
        iid, "wf", "hash-1", Status.RUNNING, b"1", created_at=created, updated_at=created,
        token=f"00000000-0000-0000-0000-{secrets.token_hex(6)}",
    )  # fmt: skip
    assert backend.create_instance(rec, replace=False) is None
    backend.save_steps(
        iid,
        [StepRecord(f"s{n}", b"%d" % n, "t", 1, created, created + 1, "w") for n in range(steps)],
        token=rec.token,
    )
    backend.record_attempt(
        iid,
        AttemptRecord("retry", "t", 1, "failed", created, created + 1, error="x"),
        token=rec.token,
    )
    if finished:
        backend.finish(iid, FinalState(Status.COMPLETED, output=b"9"), [], token=rec.token)


def age_completion(db: psycopg.Connection[Any], prefix: str, ids: list[str]) -> None:
    """Make finished runs look finished an hour after their creation."""
    db.execute(
        sql.SQL(
            "UPDATE {} SET completed_at = created_at + interval '1 hour'"
            " WHERE instance_id = ANY(%s)"
        ).format(sql.Identifier(prefix + "workflow_instances")),
        (ids,),
    )


def limit_rows(backend: PostgresBackend, ids: list[str]) -> None:
    """A task slot and a task wait row for each run of ``ids`` (task limits, 0011)."""
    for iid in ids:
        assert backend.acquire_task_slot(f"t-{iid}", 1, iid, "s", "some-token", None)
        assert backend.take_rate_token("c", f"b-{iid}", 1, 60.0, NOW, "other", "s") == 0.0
        assert backend.take_rate_token("c", f"b-{iid}", 1, 60.0, NOW + 1, iid, "s") > 0


def limit_rows_of(db: psycopg.Connection[Any], prefix: str) -> set[str]:
    """The runs that have task-slot or task-wait rows."""
    found: set[str] = set()
    for table in ("task_slots", "task_waits"):
        rows = db.execute(
            sql.SQL("SELECT DISTINCT instance_id FROM {}").format(sql.Identifier(prefix + table))
        ).fetchall()
        found |= {r[0] for r in rows}
    return found


def state(backend: PostgresBackend, iid: str) -> RunState:
    run = backend.load(iid)
    assert run is not None
    return run


def test_conversion_keeps_every_row_and_partitions_by_month(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any]
) -> None:
    ids = {f"old-{n}": in_month(n % 3 + 2) for n in range(9)} | {"new": NOW}
    with PostgresBackend(pg_dsn, table_prefix=prefix) as plain:
        for n, (iid, created) in enumerate(ids.items()):
            make_run(plain, iid, created, finished=n % 2 == 0)
        before = {iid: state(plain, iid) for iid in ids}
        assert plain.count_finished(0) == 5
    assert relkind(db, prefix) == "r"
    with PostgresBackend(pg_dsn, table_prefix=prefix) as backend:
        assert backend.partition_tables() is True
        assert backend.partition_tables() is False  # once only
        after = {iid: state(backend, iid) for iid in ids}
    assert after == before
    assert relkind(db, prefix) == "p"
    names = relations(db, prefix)
    for table in ("workflow_instances", "task_executions", "checkpoints"):
        assert table + "_default" in names
        for months_ago in range(-_partition.MONTHS_AHEAD, 5):
            assert table + suffix(months_ago) in names
    assert not {n for n in names if n.endswith("_new")}
    count = db.execute(
        sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(prefix + "checkpoints" + suffix(2))
        )
    ).fetchone()
    assert count == (6,)  # the three runs of that month, two checkpoints each
    # Every process sees the layout, whatever its partition= says.
    with PostgresBackend(pg_dsn, table_prefix=prefix) as other:
        assert state(other, "new") == before["new"]


def test_a_failed_conversion_leaves_the_tables_as_they_were(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any]
) -> None:
    with PostgresBackend(pg_dsn, table_prefix=prefix) as plain:
        make_run(plain, "a", in_month(2), finished=True)
        before = state(plain, "a")
    tables = relations(db, prefix)
    # A trigger that a partitioned table cannot have (a row trigger with a transition
    # table): its copy, the very last step, fails after every row was copied.
    db.execute(
        "CREATE FUNCTION pg_temp.nothing() RETURNS trigger LANGUAGE plpgsql"
        " AS 'BEGIN RETURN NULL; END'"
    )
    db.execute(
        sql.SQL(
            "CREATE TRIGGER boom AFTER INSERT ON {} REFERENCING NEW TABLE AS n"
            " FOR EACH ROW EXECUTE FUNCTION pg_temp.nothing()"
        ).format(sql.Identifier(prefix + "workflow_instances"))
    )
    with (
        PostgresBackend(pg_dsn, table_prefix=prefix) as backend,
        pytest.raises(BackendError, match="transition tables"),
    ):
        backend.partition_tables()
    assert relkind(db, prefix) == "r"
    assert relations(db, prefix) == tables
    fks = db.execute(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND starts_with(conname, %s)",
        (prefix,),
    ).fetchone()
    assert fks == (4,)  # executions, checkpoints, queue and slots still point at the runs
    db.execute(
        sql.SQL("DROP TRIGGER boom ON {}").format(sql.Identifier(prefix + "workflow_instances"))
    )
    with PostgresBackend(pg_dsn, table_prefix=prefix) as plain:
        assert state(plain, "a") == before


def test_partition_month_on_plain_tables_names_the_command(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any]
) -> None:
    with PostgresBackend(pg_dsn, table_prefix=prefix) as plain:
        assert plain.get_instance("x") is None
    with (
        PostgresBackend(pg_dsn, table_prefix=prefix, partition="month") as backend,
        pytest.raises(BackendError) as info,
    ):
        backend.get_instance("x")
    assert f"sayiir partition URL --table-prefix {prefix}" in str(info.value)
    assert relkind(db, prefix) == "r"
    assert cli(["partition", pg_dsn, "--table-prefix", prefix]) == 0
    assert relkind(db, prefix) == "p"
    with PostgresBackend(pg_dsn, table_prefix=prefix, partition="month") as backend:
        assert backend.get_instance("x") is None


@pytest.mark.parametrize("value", ["day", "Month", 1, True])
def test_a_bad_partition_value_is_refused(pg_dsn: str, value: Any) -> None:
    with pytest.raises(ValueError, match=r'partition=.* is not supported: use partition="month"'):
        PostgresBackend(pg_dsn, partition=value)


def test_new_tables_with_partition_month_are_partitioned_and_months_are_made_ahead(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any]
) -> None:
    with PostgresBackend(pg_dsn, table_prefix=prefix, partition="month") as backend:
        make_run(backend, "a", NOW, finished=False)
    assert relkind(db, prefix) == "p"
    last = "workflow_instances" + suffix(-_partition.MONTHS_AHEAD)
    assert last in relations(db, prefix)
    for table in ("workflow_instances", "task_executions", "checkpoints"):
        db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(prefix + table + suffix(-3))))
    assert last not in relations(db, prefix)
    with PostgresBackend(pg_dsn, table_prefix=prefix) as backend:  # open: made again
        assert state(backend, "a").checkpoints == {"s0": b"0", "s1": b"1"}
    assert last in relations(db, prefix)
    for table in ("workflow_instances", "task_executions", "checkpoints"):
        db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(prefix + table + suffix(-3))))
    with PostgresBackend(pg_dsn, table_prefix=prefix, auto_migrate=False) as backend:
        backend.delete_finished(30 * DAY)  # retention makes them too
    assert last in relations(db, prefix)


def test_retention_drops_whole_months_and_keeps_runs_in_progress(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any]
) -> None:
    finished = [f"done-{n}" for n in range(6)]
    with PostgresBackend(pg_dsn, table_prefix=prefix) as plain:
        for n, iid in enumerate(finished):
            make_run(plain, iid, in_month(n % 2 + 2), finished=n > 0)
        plain.send_signal("done-0", "sig", b"x")
        assert plain.consume_signal("done-0", "sig", "k") == b"x"
        plain.finish("done-0", FinalState(Status.COMPLETED), [])
        plain.send_signal("future", "sig", b"y")  # buffered for a run to come
        make_run(plain, "running", in_month(3), finished=False)
        make_run(plain, "late", in_month(3), finished=True)  # finished now: kept
        make_run(plain, "recent", NOW, finished=True)
        limit_rows(plain, ["done-1", "done-2", "running"])
        plain.partition_tables()
    age_completion(db, prefix, [*finished, "recent"])
    db.execute(
        sql.SQL(
            "UPDATE {} SET completed_at = now() - interval '1 hour' WHERE instance_id = 'recent'"
        ).format(sql.Identifier(prefix + "workflow_instances"))
    )
    kept = {}
    with PostgresBackend(pg_dsn, table_prefix=prefix, partition="month") as backend:
        kept = {iid: state(backend, iid) for iid in ("running", "late", "recent")}
        assert backend.count_finished(DAY) == 6
        told: list[int] = []
        assert backend.delete_finished(DAY, progress=told.append) == 6
        assert sum(told) == 6
        assert backend.count_finished(DAY) == 0
        for iid in finished:
            assert backend.get_instance(iid) is None
            assert backend.load(iid) is None
        assert {iid: state(backend, iid) for iid in kept} == kept
        # The stragglers still take writes, in the default partitions now.
        backend.save_steps("running", [StepRecord("s9", b"9", "t", 1, NOW, NOW, "w")])
        assert state(backend, "running").checkpoints["s9"] == b"9"
    names = relations(db, prefix)
    for table in ("workflow_instances", "task_executions", "checkpoints"):
        assert table + suffix(2) not in names and table + suffix(3) not in names
        assert table + suffix(0) in names
    default = db.execute(
        sql.SQL("SELECT array_agg(instance_id ORDER BY instance_id) FROM {}").format(
            sql.Identifier(prefix + "workflow_instances_default")
        )
    ).fetchone()
    assert default == (["late", "running"],)
    signals = db.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(prefix + "workflow_signals"))
    ).fetchone()
    assert signals == (1,)  # the consumed event went; the buffered one stays, as with rows
    assert limit_rows_of(db, prefix) == {"running"}  # the task limits' rows went with the runs


def test_a_month_with_too_many_stragglers_is_left_to_row_deletes(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_partition, "MAX_STRAGGLERS", 1)
    with PostgresBackend(pg_dsn, table_prefix=prefix) as plain:
        for n in range(3):
            make_run(plain, f"done-{n}", in_month(2), finished=True)
        make_run(plain, "a", in_month(2), finished=False)
        make_run(plain, "b", in_month(2), finished=False)
        limit_rows(plain, ["done-0", "done-2", "a"])
        plain.partition_tables()
    age_completion(db, prefix, [f"done-{n}" for n in range(3)])
    with PostgresBackend(pg_dsn, table_prefix=prefix) as backend:
        assert backend.delete_finished(DAY, batch_size=2) == 3
        assert backend.get_instance("done-1") is None
        assert state(backend, "a").checkpoints == {"s0": b"0", "s1": b"1"}
        assert state(backend, "b").attempts
    assert "workflow_instances" + suffix(2) in relations(db, prefix)
    rows = db.execute(
        sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(prefix + "checkpoints" + suffix(2))
        )
    ).fetchone()
    assert rows == (4,)  # the row deletes took the finished runs' checkpoints too
    assert limit_rows_of(db, prefix) == {"a"}  # and their task limits' rows


def test_an_instance_id_is_unique_across_partitions(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any]
) -> None:
    with PostgresBackend(pg_dsn, table_prefix=prefix, partition="month", max_connections=8) as b:
        make_run(b, "x", in_month(0, day=1), finished=False)
        other = InstanceRecord("x", "wf", "hash-2", Status.RUNNING, b"2", created_at=NOW + 40 * DAY)
        existing = b.create_instance(other, replace=False)
        assert existing is not None and existing.definition_hash == "hash-1"
        # Many creators of one id at once, each in another month: one run.
        results: list[InstanceRecord | None] = []
        gate = threading.Barrier(8)

        def create(n: int) -> None:
            rec = InstanceRecord(
                "y", "wf", f"h{n}", Status.RUNNING, b"1", created_at=NOW + n * 31 * DAY
            )
            gate.wait()
            results.append(b.create_instance(rec, replace=False))

        threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is None for r in results) == 1
        # Replacing a run with a creation time in another month moves it there.
        moved = InstanceRecord("x", "wf", "hash-3", Status.RUNNING, b"3", created_at=NOW + 31 * DAY)
        assert b.create_instance(moved, replace=True) is None
        assert b.save_steps("x", [StepRecord("k", b"1", "t", 1, NOW, NOW, "w")]) is None
        assert state(b, "x").record.definition_hash == "hash-3"
        assert state(b, "x").checkpoints == {"k": b"1"}
    for iid in ("x", "y"):
        row = db.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE instance_id = %s").format(
                sql.Identifier(prefix + "workflow_instances")
            ),
            (iid,),
        ).fetchone()
        assert row == (1,)


def test_workers_run_workflows_on_converted_tables(pg_dsn: str, prefix: str) -> None:
    from sayiir import Worker

    wf = (
        Flow("part-wf")
        .then(lambda x: x + 1, name="inc")
        .fork()
        .branch(lambda x: x * 2, name="dbl")
        .branch(lambda x: x * 3, name="tri")
        .join(lambda parts: parts["dbl"] + parts["tri"], name="sum")
        .build()
    )
    with PostgresBackend(pg_dsn, table_prefix=prefix) as plain:
        WorkflowClient(plain).submit(wf, "before", 1)
        plain.partition_tables()
    with PostgresBackend(pg_dsn, table_prefix=prefix, partition="month") as backend:
        client = WorkflowClient(backend)
        for n in range(5):
            client.submit(wf, f"run-{n}", n)
        handle = Worker("w1", backend, poll_interval=0.05).start([wf])
        try:
            deadline = time.monotonic() + 60
            ids = ["before", *(f"run-{n}" for n in range(5))]
            while not all(client.status(i).is_completed() for i in ids):
                assert time.monotonic() < deadline, [client.status(i) for i in ids]
                time.sleep(0.05)
        finally:
            handle.shutdown()
            handle.join(10)
        assert client.status("before").output == 2 * 2 + 2 * 3
        assert [client.status(f"run-{n}").output for n in range(5)] == [
            (n + 1) * 5 for n in range(5)
        ]
