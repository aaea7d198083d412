"""The package's ``.sql`` files, compiled for one schema and table prefix.

Placeholders are filled only through ``psycopg.sql`` (``Identifier`` for names, ``SQL``
for the fragments of ``queries.sql``); the result is rendered once to bytes, which is
what the executors send (and what psycopg keys its prepared statements on).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import cache

from psycopg import sql

from sayiir.backends._sqlfiles import Migration, load_migrations, load_queries
from sayiir.backends.postgres._names import (
    BARE_NAMES,
    FUNCTIONS,
    TABLES,
    changes_channel,
    queue_channel,
)

__all__ = [
    "PACKAGE",
    "PARTITIONED",
    "VARIANTS",
    "Compiled",
    "compile_sql",
    "identifiers",
    "migration_script",
    "migrations",
    "render",
]

PACKAGE = "sayiir.backends.postgres"
MIGRATIONS_PACKAGE = "sayiir.backends.postgres.migrations"
# The named queries: the storage protocol's, then each feature's own file.
_QUERY_FILES = (
    "queries.sql",
    "console.sql",
    "schedules.sql",
    "limits.sql",
    "task_limits.sql",
    "partition.sql",
)
# The suffix of a fragment's form in the partitioned layout (partition.sql; _expand).
PARTITIONED = "__part"


@dataclass(frozen=True, slots=True)
class Compiled:
    """Everything a backend executes, with its names filled in."""

    queries: dict[str, bytes]
    scripts: dict[int, bytes]  # migration version -> its body


def identifiers(schema: str, table_prefix: str) -> dict[str, sql.Composable]:
    """Placeholder -> identifier for ``schema`` and ``table_prefix``.

    ``{channel}`` is the queue's NOTIFY channel as a string literal (``pg_notify`` takes
    text), ``{channel_name}`` the same name as an identifier (``LISTEN`` takes one);
    ``{changes_channel}`` and ``{changes_channel_name}`` the same for run changes;
    ``{f_*}`` the functions of the migrations (``{f_notify_changes}`` announces them);
    ``{lit_schema}`` and ``{lit_prefix}`` the schema and the prefix as string literals, for
    the functions of migration 0008 that compose names of partitions (with ``format('%I')``).
    """
    channel = queue_channel(schema, table_prefix)
    changes = changes_channel(schema, table_prefix)
    out: dict[str, sql.Composable] = {
        "schema": sql.Identifier(schema),
        "channel": sql.Literal(channel),
        "channel_name": sql.Identifier(channel),
        "changes_channel": sql.Literal(changes),
        "changes_channel_name": sql.Identifier(changes),
        "lit_schema": sql.Literal(schema),
        "lit_prefix": sql.Literal(table_prefix),
    }
    for key, name in FUNCTIONS.items():
        out[key] = sql.Identifier(schema, table_prefix + name)
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
    queries: dict[str, str] = {}
    for filename in _QUERY_FILES:
        texts = load_queries(PACKAGE, filename)
        clash = queries.keys() & texts.keys()
        if clash:
            raise ValueError(f"{filename} defines {sorted(clash)} again")
        queries.update({k: _strip_trailing_comments(v) for k, v in texts.items()})
    return queries, load_migrations(MIGRATIONS_PACKAGE)


def migrations() -> list[Migration]:
    """The numbered migrations shipped with this version, in order."""
    return _sources()[1]


# Switches of the SQL text: ``{_steps}`` (the steps a write carries) and ``{_items}`` (the
# queue entries it adds) each stand for one of several sources, chosen by a query-name
# suffix. A query is compiled once per combination of the switches it uses, and ``_ops``
# picks the variant that fits its arguments: binding arrays costs more client CPU than the
# statement's server time when there is one element or none.
VARIANTS: dict[str, dict[str, str]] = {
    "_steps": {"": "_steps_many", "/1": "_steps_one", "/0": "_steps_none"},
    "_free": {"": "_free_none", "/f": "_free_slots"},
    "_items": {"": "_items_many", "/q0": "_items_none"},
}
_FRAGMENT = re.compile(r"\{(_\w+)\}")


def _expand(text: str, sources: dict[str, str], choice: dict[str, str], layout: str) -> str:
    """Inline the fragments ``text`` names (fragments may name fragments). A switch of
    ``VARIANTS`` becomes the source ``choice`` gives it, or stays as it is. In the
    partitioned layout (``layout == PARTITIONED``) a fragment ``_x`` is replaced by
    ``_x__part`` where partition.sql defines one. Only our own file's text is inlined;
    identifiers are still filled by ``render`` alone."""

    def inline(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in VARIANTS:
            if name not in choice:
                return match.group(0)
            name = choice[name]
        if layout and name + layout in sources:
            name += layout
        return _expand(sources[name], sources, choice, layout)

    return _FRAGMENT.sub(inline, text)


def _variants(text: str, sources: dict[str, str], layout: str) -> dict[str, str]:
    """Query-name suffix -> expanded text, for every combination of the switches used."""
    skeleton = _expand(text, sources, {}, layout)
    used = [switch for switch in VARIANTS if "{" + switch + "}" in skeleton]
    out = {}
    for combo in itertools.product(*(VARIANTS[switch].items() for switch in used)):
        suffix = "".join(option for option, _ in combo)
        choice = {switch: source for switch, (_, source) in zip(used, combo, strict=True)}
        out[suffix] = _expand(skeleton, sources, choice, layout)
    return out


@cache
def compile_sql(schema: str, table_prefix: str, partitioned: bool = False) -> Compiled:
    """Render every query and migration for one schema + prefix and layout (cached)."""
    sources, migs = _sources()
    names = identifiers(schema, table_prefix)
    layout = PARTITIONED if partitioned else ""
    queries = {
        name + suffix: render(text, names)
        for name, source in sources.items()
        if not name.startswith("_")
        for suffix, text in _variants(source, sources, layout).items()
    }
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
