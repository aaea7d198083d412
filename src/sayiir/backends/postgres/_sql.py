"""The package's ``.sql`` files, compiled for one schema and table prefix.

Placeholders are filled only through ``psycopg.sql`` (``Identifier`` for names, ``SQL``
for the fragments of ``queries.sql``); the result is rendered once to bytes, which is
what the executors send (and what psycopg keys its prepared statements on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from psycopg import sql

from sayiir.backends._sqlfiles import Migration, load_migrations, load_queries
from sayiir.backends.postgres._names import BARE_NAMES, TABLES, queue_channel

__all__ = [
    "PACKAGE",
    "STEP_SOURCES",
    "Compiled",
    "compile_sql",
    "identifiers",
    "migration_script",
    "migrations",
    "render",
]

PACKAGE = "sayiir.backends.postgres"
MIGRATIONS_PACKAGE = "sayiir.backends.postgres.migrations"


@dataclass(frozen=True, slots=True)
class Compiled:
    """Everything a backend executes, with its names filled in."""

    queries: dict[str, bytes]
    scripts: dict[int, bytes]  # migration version -> its body


def identifiers(schema: str, table_prefix: str) -> dict[str, sql.Composable]:
    """Placeholder -> identifier for ``schema`` and ``table_prefix``.

    ``{channel}`` is the queue's NOTIFY channel as a string literal (``pg_notify`` takes
    text), ``{channel_name}`` the same name as an identifier (``LISTEN`` takes one).
    """
    channel = queue_channel(schema, table_prefix)
    out: dict[str, sql.Composable] = {
        "schema": sql.Identifier(schema),
        "channel": sql.Literal(channel),
        "channel_name": sql.Identifier(channel),
    }
    for key, name in TABLES.items():
        out[key] = sql.Identifier(schema, table_prefix + name)
    for key, name in BARE_NAMES.items():
        out[key] = sql.Identifier(table_prefix + name)
    return out


def render(text: str, names: dict[str, sql.Composable]) -> bytes:
    """Fill the placeholders of ``text``; braces are never used for anything else."""
    return sql.SQL(text).format(**names).as_bytes(None)


def _strip_trailing_comments(body: str) -> str:
    """Drop the comment lines that introduce the *next* block of the file."""
    lines = body.rstrip().splitlines()
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("--")):
        lines.pop()
    return "\n".join(lines)


@cache
def _sources() -> tuple[dict[str, str], list[Migration]]:
    queries = {k: _strip_trailing_comments(v) for k, v in load_queries(PACKAGE).items()}
    return queries, load_migrations(MIGRATIONS_PACKAGE)


def migrations() -> list[Migration]:
    """The numbered migrations shipped with this version, in order."""
    return _sources()[1]


# The sources of ``{_steps}`` by query-name suffix: a query that carries steps is compiled
# once per source, and ``_ops`` picks the variant by the number of steps it writes.
STEP_SOURCES = {"": "_steps_many", "/1": "_steps_one", "/0": "_steps_none"}
_FRAGMENT = re.compile(r"\{(_\w+)\}")


def _expand(text: str, sources: dict[str, str], steps: str) -> str:
    """Inline the fragments ``text`` names (fragments may name fragments), with ``steps``
    standing for ``{_steps}``. Only our own file's text is inlined; identifiers are still
    filled by ``render`` alone."""

    def inline(match: re.Match[str]) -> str:
        name = match.group(1)
        return _expand(sources[steps if name == "_steps" else name], sources, steps)

    return _FRAGMENT.sub(inline, text)


@cache
def compile_sql(schema: str, table_prefix: str) -> Compiled:
    """Render every query and migration for one schema + prefix (cached per pair)."""
    sources, migs = _sources()
    names = identifiers(schema, table_prefix)
    queries: dict[str, bytes] = {}
    for name, text in sources.items():
        if name.startswith("_"):
            continue
        texts = {suffix: _expand(text, sources, src) for suffix, src in STEP_SOURCES.items()}
        for suffix, expanded in texts.items():
            if not suffix or expanded != texts[""]:
                queries[name + suffix] = render(expanded, names)
    return Compiled(queries, {m.version: render(m.sql, names) for m in migs})


def migration_script(
    compiled: Compiled, migration: Migration, lock_key: str, *, create_schema: bool
) -> str:
    """What the migrator runs for ``migration``, as one script a DBA can review or apply.

    The statements are the ones of ``queries.sql`` and the migration file; the few values
    (lock key, version row) are quoted with ``psycopg.sql.Literal``.
    """
    q = compiled.queries

    def literal(value: object) -> str:
        return sql.Literal(value).as_string(None)

    parts = [q["begin"].decode(), q["migration_lock"].decode() % {"key": literal(lock_key)}]
    if create_schema:
        parts.append(q["create_schema"].decode())
    parts.append(q["create_migrations_table"].decode())
    parts.append(compiled.scripts[migration.version].decode().strip().rstrip(";"))
    record = {
        "version": literal(migration.version),
        "name": literal(migration.name),
        "checksum": literal(migration.checksum),
    }
    parts.append(q["record_migration"].decode() % record)
    parts.append(q["commit"].decode())
    return ";\n\n".join(parts) + ";\n"
