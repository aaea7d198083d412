"""Schema migrations, as sans-IO operations (run by the same executors as storage ops).

Rules (spec/postgres.md §2, reliability plan §3.4):

* numbered ``migrations/NNNN_*.sql`` files; each is applied in its own transaction together
  with its row (version, name, checksum) in ``<prefix>schema_migrations``;
* every migrating transaction first takes ``pg_advisory_xact_lock`` on a key made of the
  schema and the prefix, then re-reads the applied versions: many processes starting at
  once apply each migration exactly once, and a migrator that dies releases the lock;
* an applied migration whose file changed (checksum) and a database newer than this code
  are refused, with both versions in the message;
* a user who may not create tables gets told which schema and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sayiir.backends._sqlfiles import Migration
from sayiir.backends.postgres._names import TABLES, migration_lock_key
from sayiir.backends.postgres._ops import Op, Q, Script
from sayiir.errors import BackendError

__all__ = ["MIN_SERVER_VERSION", "Plan", "inspect", "migrate", "verify"]

MIN_SERVER_VERSION = 130000


@dataclass(frozen=True, slots=True)
class Plan:
    """Where the database stands: its version, ours, and what is left to apply."""

    have: int
    need: int
    pending: list[Migration]
    user: str
    database: str


def _server_version_text(num: int) -> str:
    major = num // 10000
    return f"{major}.{num % 10000}" if major >= 10 else f"{major}.{num // 100 % 100}.{num % 100}"


def _applied(schema: str, table_prefix: str) -> Op[dict[int, tuple[str, str]] | None]:
    """``{version: (name, checksum)}``; ``None`` when the migrations table does not exist."""
    rows = yield Q(
        "migrations_table_exists",
        {"schema": schema, "table": table_prefix + "schema_migrations"},
        prepare=False,
    )
    if not rows[0][0]:
        return None
    rows = yield Q("applied_migrations", prepare=False)
    return {int(v): (str(n), str(c)) for v, n, c in rows}


def _check(
    applied: dict[int, tuple[str, str]], migrations: Sequence[Migration], where: str
) -> list[Migration]:
    latest = migrations[-1].version
    have = max(applied, default=0)
    if have > latest:
        raise BackendError(
            f"the sayiir schema at {where} is at version {have}, newer than this version of "
            f"sayiir supports (version {latest}): a newer release migrated it. Upgrade sayiir; "
            "running older code against a newer schema is refused to avoid corrupting runs."
        )
    for m in migrations:
        found = applied.get(m.version)
        if found is not None and found[1] != m.checksum:
            raise BackendError(
                f"migration {m.version:04d}_{m.name} applied at {where} has checksum "
                f"{found[1][:12]}…, but this version of sayiir ships {m.checksum[:12]}…: the "
                "migration file was changed after it was applied. Restore the released file."
            )
    return [m for m in migrations if m.version not in applied]


def inspect(
    schema: str, table_prefix: str, migrations: Sequence[Migration], where: str
) -> Op[Plan]:
    """Check the server version and read the applied migrations (no lock, no writes)."""
    rows = yield Q("server_info", prepare=False)
    num, user, database = int(rows[0][0]), str(rows[0][1]), str(rows[0][2])
    if num < MIN_SERVER_VERSION:
        raise BackendError(
            f"PostgreSQL 13 or later is required; the server at {where} runs "
            f"{_server_version_text(num)}"
        )
    applied = (yield from _applied(schema, table_prefix)) or {}
    pending = _check(applied, migrations, where)
    return Plan(max(applied, default=0), migrations[-1].version, pending, user, database)


def migrate_command(schema: str, table_prefix: str, command: str = "migrate") -> str:
    """The CLI line that applies the migrations for this schema and prefix (or runs another
    schema ``command``, e.g. ``partition``, with the same options)."""
    cmd = f"sayiir {command} URL"
    if schema != "public":
        cmd += f" --schema {schema}"
    if table_prefix != "sayiir_":
        cmd += f" --table-prefix {table_prefix}"
    return cmd


def verify(schema: str, table_prefix: str, migrations: Sequence[Migration], where: str) -> Op[Plan]:
    """``auto_migrate=False``: fail clearly unless every migration is applied."""
    plan = yield from inspect(schema, table_prefix, migrations, where)
    if plan.pending:
        raise BackendError(
            f"schema not migrated (have {plan.have}, need {plan.need}) at {where}; run "
            f"`{migrate_command(schema, table_prefix)}` (or use auto_migrate=True)"
        )
    return plan


def _privilege_error(
    schema: str, exists: bool, may_create_schema: bool, plan: Plan, where: str
) -> BackendError | None:
    user = plan.user
    if not exists and not may_create_schema:
        return BackendError(
            f'schema "{schema}" does not exist at {where} and user "{user}" may not create it. '
            f"Have an administrator run: CREATE SCHEMA {schema} AUTHORIZATION {user}; "
            f"(or GRANT CREATE ON DATABASE {plan.database} TO {user};)"
        )
    if exists:
        hint = (
            'Since PostgreSQL 15 ordinary users may not create tables in schema "public": '
            'use PostgresBackend(url, schema="sayiir"), which creates that schema with your '
            f"database privilege, or have an administrator run: GRANT CREATE ON SCHEMA "
            f"public TO {user};"
            if schema == "public"
            else f"Have an administrator run: GRANT CREATE ON SCHEMA {schema} TO {user}; or "
            f'use another schema= that "{user}" owns.'
        )
        return BackendError(
            f'permission denied: user "{user}" may not create the sayiir tables in schema '
            f'"{schema}" at {where}. {hint}'
        )
    return None


def _refuse_foreign_tables(schema: str, table_prefix: str, where: str) -> Op[None]:
    """Before the first migration, no table may already carry one of our names.

    The reference sayiir 1.x names a table ``sayiir_workflow_signals`` too: installing
    beside it would fail half-way (or, worse, reuse a table of another shape).
    """
    names = [table_prefix + t for key, t in TABLES.items() if key != "t_migrations"]
    rows = yield Q("existing_tables", {"schema": schema, "names": names}, prepare=False)
    if rows:
        found = ", ".join(f'"{schema}.{r[0]}"' for r in rows)
        raise BackendError(
            f"PostgreSQL at {where}: {found} already exist(s) but were not created by "
            f"sayiir's migrations (no {table_prefix}schema_migrations rows). They may belong "
            "to the reference sayiir 1.x or to another application. Use a dedicated database, "
            'or keep both apart with PostgresBackend(url, schema="...") or table_prefix="...".'
        )


def migrate(
    schema: str, table_prefix: str, migrations: Sequence[Migration], where: str
) -> Op[list[Migration]]:
    """Apply what is pending, one locked transaction per migration; return what we applied."""
    plan = yield from inspect(schema, table_prefix, migrations, where)
    if not plan.pending:
        return []
    rows = yield Q("privileges", {"schema": schema}, prepare=False)
    exists, may_create, may_create_schema = (bool(v) for v in rows[0])
    if not (exists and may_create):
        error = _privilege_error(schema, exists, may_create_schema, plan, where)
        if error is not None:
            raise error
    key = migration_lock_key(schema, table_prefix)
    done: list[Migration] = []
    for m in plan.pending:
        yield Q("begin", prepare=False)
        yield Q("migration_lock", {"key": key}, prepare=False)
        if not exists:
            yield Q("create_schema", prepare=False)
            exists = True
        applied = yield from _applied(schema, table_prefix)
        if applied is None:
            yield Q("create_migrations_table", prepare=False)
            applied = {}
        _check(applied, migrations, where)
        if not applied:
            yield from _refuse_foreign_tables(schema, table_prefix, where)
        if m.version not in applied:  # else another process applied it while we waited
            yield Script(m.version)
            yield Q(
                "record_migration",
                {"version": m.version, "name": m.name, "checksum": m.checksum},
                prepare=False,
            )
            done.append(m)
        yield Q("commit", prepare=False)
    return done
