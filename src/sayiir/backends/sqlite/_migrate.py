"""Apply the numbered migrations of the SQLite backend when a database is opened.

Safe when several processes open the same new file at once: each migration runs in its own
``BEGIN IMMEDIATE`` transaction together with its row in ``sayiir_schema_migrations``, and the
applied versions are re-read after the write lock is taken, so a migration another process
applied meanwhile is skipped, never run twice. An up-to-date database costs one read.
"""

from __future__ import annotations

import sqlite3
import time

from sayiir.backends._sqlfiles import Migration
from sayiir.backends.sqlite._connection import Database, Queries
from sayiir.errors import BackendError

__all__ = ["migrate", "split_statements"]

_Applied = list[tuple[int, str, str]]


def migrate(db: Database, queries: Queries, migrations: list[Migration]) -> None:
    """Bring the database to the newest schema this code knows, or refuse a foreign one."""

    def read_applied(cur: sqlite3.Cursor) -> _Applied:
        if cur.execute(queries["migrations_table_exists"]).fetchone() is None:
            return []
        return [tuple(row) for row in cur.execute(queries["applied_migrations"])]

    applied = db.run("reading the schema version", read_applied, queries["begin_deferred"])
    check_versions(db.path, applied, migrations)
    done = {version for version, _, _ in applied}
    for migration in migrations:
        if migration.version not in done:
            _apply(db, queries, migrations, migration)


def _apply(db: Database, queries: Queries, migrations: list[Migration], m: Migration) -> None:
    what = f"applying migration {m.version:04d}_{m.name}"
    statements = split_statements(m.sql)

    def record(cur: sqlite3.Cursor) -> bool:
        """Create the version table if needed; False when ``m`` is already applied."""
        cur.execute(queries["create_migrations_table"])
        applied: _Applied = [tuple(row) for row in cur.execute(queries["applied_migrations"])]
        check_versions(db.path, applied, migrations)
        if any(version == m.version for version, _, _ in applied):
            return False
        cur.execute(
            queries["insert_migration"],
            {
                "version": m.version,
                "name": m.name,
                "checksum": m.checksum,
                "applied_at": time.time(),
            },
        )
        return True

    if m.transactional:

        def apply(cur: sqlite3.Cursor) -> None:
            if record(cur):  # False: another process applied it while we waited for the lock
                for statement in statements:
                    cur.execute(statement)

        db.write(what, apply)
        return

    # "-- sayiir: no-transaction" (e.g. VACUUM): such a file must be idempotent, since two
    # processes may both run it before one records it.
    def run_statements(cur: sqlite3.Cursor) -> None:
        for statement in statements:
            cur.execute(statement)

    db.run(what, run_statements, None)
    db.write(what, record)


def check_versions(path: str, applied: _Applied, migrations: list[Migration]) -> None:
    """Refuse a database migrated by newer code, or by a migration file edited since."""
    latest = max((m.version for m in migrations), default=0)
    known = {m.version: m for m in migrations}
    current = max((version for version, _, _ in applied), default=0)
    if current > latest:
        raise BackendError(
            f"SQLite database {path!r} has schema version {current}, but this sayiir knows "
            f"versions up to {latest}: the database was migrated by a newer sayiir release. "
            "Upgrade sayiir to use it (an older release must not write to it)."
        )
    for version, name, checksum in applied:
        expected = known.get(version)
        if expected is None:
            raise BackendError(
                f"SQLite database {path!r} applied migration {version:04d}_{name}, which "
                "this sayiir does not know: the database was migrated by another release. "
                "Use that release (or a newer one) with it."
            )
        if checksum != expected.checksum:
            raise BackendError(
                f"SQLite database {path!r} (schema version {current}; this sayiir: {latest}) "
                f"applied migration {version:04d}_{name} with checksum {checksum[:12]}, but "
                f"this sayiir's {expected.version:04d}_{expected.name}.sql has checksum "
                f"{expected.checksum[:12]}: a released migration was edited. Restore the "
                "original file (migrations are append-only) or use the release that created "
                "the database."
            )


def split_statements(sql: str) -> list[str]:
    """The statements of a migration script, for ``execute`` inside our own transaction.

    ``executescript`` cannot be used: it commits any open transaction first. SQLite itself
    decides where a statement ends (``sqlite3.complete_statement`` knows about strings,
    comments and trigger bodies); comment-only text is dropped.
    """
    statements: list[str] = []
    buffer = ""
    parts = sql.split(";")
    for part in parts[:-1]:
        buffer += part + ";"
        if sqlite3.complete_statement(buffer):
            if not _blank(buffer[:-1]):
                statements.append(buffer.strip())
            buffer = ""
    tail = buffer + parts[-1]
    if not _blank(tail):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {tail[:80]!r}")
    return statements


def _blank(text: str) -> bool:
    """Only whitespace and ``--`` comments."""
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
