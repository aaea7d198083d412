"""Migrations of the PostgreSQL backend (spec/postgres.md §2; reliability plan R11, R12, R13).

Each test uses a table prefix (or schema) of its own in the module's fresh database.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sayiir import RateLimit, task
from sayiir.backends.postgres import PostgresBackend
from sayiir.backends.postgres._sql import identifiers, migrations, render
from sayiir.cli.app import main as cli
from sayiir.errors import BackendError

pytestmark = pytest.mark.postgres

LATEST = migrations()[-1].version
# The shipped versions: numbers are reserved per feature, so there may be gaps.
SHIPPED = [m.version for m in migrations()]


@pytest.fixture
def prefix() -> str:
    return f"m{secrets.token_hex(4)}_"


@pytest.fixture
def db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


def versions(db: psycopg.Connection[Any], prefix: str, schema: str = "public") -> list[int]:
    table = sql.Identifier(schema, prefix + "schema_migrations")
    query = sql.SQL("SELECT version FROM {} ORDER BY version").format(table)
    return [v for (v,) in db.execute(query).fetchall()]


def tables(db: psycopg.Connection[Any], prefix: str, schema: str = "public") -> set[str]:
    rows = db.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND starts_with(tablename, %s)",
        (schema, prefix),
    ).fetchall()
    return {name[len(prefix) :] for (name,) in rows}


FOUR = {"workflow_instances", "task_executions", "checkpoints", "workflow_signals"}
QUEUE = {"task_queue"}  # migration 0002
CONSOLE = {"workflow_definitions", "audit_log"}  # migration 0006
FLOW_CONTROL = {"schedules", "concurrency_slots", "dedupe_keys"}  # migration 0007
TASK_LIMITS = {"task_slots", "rate_windows", "task_waits"}  # migration 0011
ALL = FOUR | QUEUE | CONSOLE | FLOW_CONTROL | TASK_LIMITS


def test_first_use_creates_the_tables(pg_dsn: str, db: psycopg.Connection[Any]) -> None:
    with PostgresBackend(pg_dsn) as backend:
        assert backend.get_instance("nothing") is None
    assert tables(db, "sayiir_") == ALL | {"schema_migrations"}
    assert versions(db, "sayiir_") == SHIPPED
    row = db.execute(
        "SELECT name, length(checksum), applied_at <= now() FROM sayiir_schema_migrations"
        " WHERE version = 1"
    ).fetchone()
    assert row == ("initial", 64, True)


def test_migrate_is_idempotent(pg_dsn: str, prefix: str) -> None:
    with PostgresBackend(pg_dsn, table_prefix=prefix) as backend:
        assert backend.migrate() == [f"{m.version:04d}_{m.name}" for m in migrations()]
        assert backend.migrate() == []
        assert backend.pending_migrations() == []


MIGRATOR = """
import sys, time
from sayiir import RateLimit, task
from sayiir.backends.postgres import PostgresBackend
url, prefix, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
with PostgresBackend(url, table_prefix=prefix) as backend:
    print(len(backend.migrate()))
"""


def test_eight_processes_migrating_an_empty_database_at_once(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any]
) -> None:
    start = time.time() + 2.0  # every process is up and waiting before anyone begins
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATOR, pg_dsn, prefix, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    applied = [int(out.strip()) for out, _ in outputs]
    assert sum(applied) == len(migrations())  # each migration applied by exactly one process
    assert versions(db, prefix) == SHIPPED
    assert tables(db, prefix) == ALL | {"schema_migrations"}
    locks = db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    assert locks == (0,)


def _dump(url: str, schema: str) -> str:
    out = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "-n", schema, url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    out = re.sub(r"^--.*$", "", out, flags=re.MULTILINE)  # comments carry the schema name
    out = re.sub(r"^\\(un)?restrict .*$", "", out, flags=re.MULTILINE)  # a random key per dump
    out = out.replace(f'"{schema}"', "SCHEMA").replace(f"{schema}.", "SCHEMA.")
    out = re.sub(rf"\b{schema}\b", "SCHEMA", out)
    return "\n".join(line for line in out.splitlines() if line.strip())


@pytest.mark.skipif(
    subprocess.run(["which", "pg_dump"], capture_output=True).returncode != 0,
    reason="pg_dump is not installed",
)
def test_migrations_equal_schema_sql(pg_dsn: str, db: psycopg.Connection[Any]) -> None:
    suffix = secrets.token_hex(3)
    migrated, fresh = f"mig_{suffix}", f"fresh_{suffix}"
    with PostgresBackend(pg_dsn, schema=migrated) as backend:
        backend.migrate()
    db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(fresh)))
    text = resources.files("sayiir.backends.postgres").joinpath("schema.sql").read_text()
    db.execute(render(text, identifiers(fresh, "sayiir_")))
    a, b = _dump(pg_dsn, migrated), _dump(pg_dsn, fresh)
    assert "CREATE TABLE SCHEMA.sayiir_workflow_instances" in a
    assert a == b


def test_a_newer_database_is_refused(pg_dsn: str, prefix: str, db: psycopg.Connection[Any]) -> None:
    with PostgresBackend(pg_dsn, table_prefix=prefix) as backend:
        backend.migrate()
    table = sql.Identifier(prefix + "schema_migrations")
    db.execute(
        sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, 'future', 'x')").format(
            table
        ),
        (LATEST + 1,),
    )
    with (
        PostgresBackend(pg_dsn, table_prefix=prefix) as backend,
        pytest.raises(BackendError) as info,
    ):
        backend.get_instance("x")
    message = str(info.value)
    assert f"version {LATEST + 1}" in message and f"version {LATEST})" in message
    assert "newer" in message


def test_an_edited_migration_is_refused(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any]
) -> None:
    with PostgresBackend(pg_dsn, table_prefix=prefix) as backend:
        backend.migrate()
    table = sql.Identifier(prefix + "schema_migrations")
    db.execute(sql.SQL("UPDATE {} SET checksum = 'abc' WHERE version = 1").format(table))
    with (
        PostgresBackend(pg_dsn, table_prefix=prefix) as backend,
        pytest.raises(BackendError, match=r"0001_initial.*checksum.*changed"),
    ):
        backend.get_instance("x")


def test_auto_migrate_off_verifies_and_names_the_command(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any]
) -> None:
    with (
        PostgresBackend(pg_dsn, table_prefix=prefix, auto_migrate=False) as backend,
        pytest.raises(BackendError) as info,
    ):
        backend.get_instance("x")
    message = str(info.value)
    assert f"schema not migrated (have 0, need {LATEST})" in message
    assert f"sayiir migrate URL --table-prefix {prefix}" in message
    assert tables(db, prefix) == set()  # verify-only: no DDL at all
    assert cli(["migrate", pg_dsn, "--table-prefix", prefix]) == 0
    with PostgresBackend(pg_dsn, table_prefix=prefix, auto_migrate=False) as backend:
        assert backend.get_instance("x") is None


def test_two_prefixes_in_one_database_are_isolated(pg_dsn: str, prefix: str) -> None:
    from sayiir.core.records import InstanceRecord, Status, StepRecord

    other = prefix + "b_"
    with (
        PostgresBackend(pg_dsn, table_prefix=prefix) as a,
        PostgresBackend(pg_dsn, table_prefix=other) as b,
    ):
        a.create_instance(
            InstanceRecord("same-id", "wf-a", "h", Status.RUNNING, b"a"), replace=False
        )
        b.create_instance(
            InstanceRecord("same-id", "wf-b", "h", Status.RUNNING, b"b"), replace=False
        )
        a.save_steps("same-id", [StepRecord("k", b"from-a", "t")])
        a.send_signal("same-id", "go", b"sig-a")
        state_b = b.load("same-id")
        assert state_b is not None
        assert state_b.record.workflow_id == "wf-b" and state_b.checkpoints == {}
        assert b.consume_signal("same-id", "go", "s") is None
        assert a.consume_signal("same-id", "go", "s") == b"sig-a"


def test_schema_is_created_when_missing(pg_dsn: str, db: psycopg.Connection[Any]) -> None:
    schema = f"s_{secrets.token_hex(4)}"
    with PostgresBackend(pg_dsn, schema=schema) as backend:
        assert backend.get_instance("x") is None
    assert tables(db, "sayiir_", schema) == ALL | {"schema_migrations"}


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_dry_run_prints_the_sql_and_applies_nothing(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["migrate", pg_dsn, "--table-prefix", prefix, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-- 0001_initial" in out
    assert f'CREATE TABLE "public"."{prefix}workflow_instances"' in out
    assert "pg_advisory_xact_lock" in out and out.rstrip().endswith("COMMIT;")
    assert tables(db, prefix) == set()
    # The printed script is exactly what a DBA can apply by hand.
    db.execute(out)
    assert versions(db, prefix) == SHIPPED
    with PostgresBackend(pg_dsn, table_prefix=prefix, auto_migrate=False) as backend:
        assert backend.get_instance("x") is None
    assert cli(["migrate", pg_dsn, "--table-prefix", prefix, "--dry-run"]) == 0
    assert "0 pending migration(s)" in capsys.readouterr().out


def test_cli_migrate_and_errors(
    pg_dsn: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["migrate", pg_dsn, "--table-prefix", prefix]) == 0
    assert f"applied {len(SHIPPED)} migration(s)" in capsys.readouterr().out
    assert cli(["migrate", pg_dsn, "--table-prefix", prefix]) == 0
    assert "schema up to date" in capsys.readouterr().out
    assert cli(["migrate", pg_dsn, "--table-prefix", 'x"; DROP TABLE canary; --']) == 1
    assert "table_prefix" in capsys.readouterr().err
    bad = "postgresql://postgres:Pa55word@127.0.0.1:1/nodb"
    assert cli(["migrate", bad, "--timeout", "0.2"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1:1/nodb" in err and "unreachable" in err
    assert "Pa55word" not in err
    assert cli(["migrate"]) == 1  # usage error


def test_cli_as_a_module(pg_dsn: str, prefix: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sayiir.cli", "migrate", pg_dsn, "--table-prefix", prefix],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "0001_initial" in done.stdout


# -- across releases (docs/compatibility.md) ---------------------------------------------------


CALLS: list[int] = []


def _plus_one(x: int) -> int:
    CALLS.append(x)
    return x + 1


def test_the_first_released_schema_is_upgraded_and_its_runs_continue(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database migrated by a release that shipped only 0001 (before the worker queue),
    holding a run that had checkpointed its first task (written as that release wrote it: no
    start token): this release applies the rest on first use, and the run continues where it
    stopped."""
    from sayiir import Flow, WorkflowClient, resume_workflow, send_signal

    shipped = migrations()
    monkeypatch.setattr("sayiir.backends.postgres._sql.migrations", lambda: shipped[:1])
    with PostgresBackend(pg_dsn, table_prefix=prefix) as old:
        old.migrate()
    monkeypatch.undo()
    assert versions(db, prefix) == [1]
    assert tables(db, prefix) == FOUR | {"schema_migrations"}
    flow = Flow("upgrade").then(_plus_one).wait_for_signal("go").then(_plus_one, name="again")
    workflow = flow.build()
    names = {t: sql.Identifier(prefix + t) for t in FOUR}
    db.execute(
        sql.SQL(
            "INSERT INTO {} (instance_id, workflow_id, definition_hash, status, input)"
            " VALUES ('old-run', 'upgrade', %s, 'running', '1')"
        ).format(names["workflow_instances"]),
        (workflow.definition_hash,),
    )
    db.execute(
        sql.SQL(
            "INSERT INTO {} (instance_id, key, task_id, output)"
            " VALUES ('old-run', '_plus_one', '_plus_one', '2')"
        ).format(names["checkpoints"])
    )
    CALLS.clear()

    with PostgresBackend(pg_dsn, table_prefix=prefix) as new:
        assert resume_workflow(workflow, "old-run", new).status == "awaiting_signal"
        send_signal("old-run", "go", 10, new)
        assert resume_workflow(workflow, "old-run", new).output == 11
        assert CALLS == [10]  # the checkpointed first task did not run again
        client = WorkflowClient(new)
        assert client.submit(workflow, "new-run", 5).status == "in_progress"  # 0002's queue
    assert versions(db, prefix) == SHIPPED
    assert tables(db, prefix) == ALL | {"schema_migrations"}


def test_cli_refuses_a_newer_database_and_changes_nothing(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["migrate", pg_dsn, "--table-prefix", prefix]) == 0
    table = sql.Identifier(prefix + "schema_migrations")
    db.execute(
        sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, 'future', 'x')").format(
            table
        ),
        (LATEST + 1,),
    )
    capsys.readouterr()
    for dry_run in ([], ["--dry-run"]):
        assert cli(["migrate", pg_dsn, "--table-prefix", prefix, *dry_run]) == 1
        err = capsys.readouterr().err
        assert f"at version {LATEST + 1}, newer than" in err, err
        assert "Upgrade sayiir" in err
    assert versions(db, prefix) == [*SHIPPED, LATEST + 1]


@task(max_concurrent=1, rate_limit=RateLimit(5, "1s"))
def _limited_plus_one(x: int) -> int:
    return x + 1


def test_the_schema_before_task_limits_is_upgraded_and_runs_with_limits(
    pg_dsn: str, prefix: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database migrated by the release before task limits (0010, with a run in flight)
    gets 0011 on first use: its run continues, and workflows with task limits run."""
    from sayiir import Flow, resume_workflow, run_durable_workflow

    shipped = migrations()
    before = [m for m in shipped if m.version < 11]
    monkeypatch.setattr("sayiir.backends.postgres._sql.migrations", lambda: before)
    plain = Flow("before").then(_plus_one).wait_for_signal("go").then(_plus_one, name="b").build()
    with PostgresBackend(pg_dsn, table_prefix=prefix) as old:
        assert run_durable_workflow(plain, "old-run", 1, backend=old).status == "awaiting_signal"
    monkeypatch.undo()
    assert versions(db, prefix) == [m.version for m in before]
    assert not tables(db, prefix) & TASK_LIMITS
    limited = Flow("limited").then(_limited_plus_one).build()
    with PostgresBackend(pg_dsn, table_prefix=prefix) as new:
        assert run_durable_workflow(limited, "new-run", 1, backend=new).output == 2
        from sayiir import send_signal

        send_signal("old-run", "go", 10, new)
        assert resume_workflow(plain, "old-run", new).output == 11
    assert versions(db, prefix) == SHIPPED
    assert tables(db, prefix) >= TASK_LIMITS
