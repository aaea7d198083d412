"""The run-list query of both SQL backends, built once from a filter, a sort and a cursor.

Filters are optional, so the statement is composed: each filter present adds one condition
(so the planner sees plain ``col = value`` predicates and picks the index that serves them,
which a catch-all ``(x IS NULL OR col = x)`` would hide from it). Columns come from a fixed
list, never from the caller; the table name arrives already quoted by the backend
(``psycopg.sql.Identifier`` on PostgreSQL). Pages are keyset: ``(sort column, instance_id)``
after the cursor's key, ``LIMIT n + 1`` to know whether another page follows. Never OFFSET.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sayiir.core.queries import RunFilter, RunSort

__all__ = ["Dialect", "count_sql", "glob_prefix", "like_prefix", "list_sql"]

_TIME_COLUMNS = ("created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one backend spells parameters and times.

    ``param(name)``: a named placeholder. ``time(p)``: an epoch-seconds parameter as a time
    value of the table. ``key(col)``: the exact, JSON-able cursor value of a time column;
    ``from_key(p)``: that value back as a time (both exact, so keyset never skips a row).
    ``epoch(col)``: a time column as epoch seconds (for the summary). ``prefix(p)``: the
    condition "instance_id starts with the pattern ``p``", which ``pattern(prefix)`` makes
    (a LIKE or GLOB pattern an index on instance_id serves, with the prefix escaped).
    """

    table: str
    param: Callable[[str], str]
    time: Callable[[str], str]
    key: Callable[[str], str]
    from_key: Callable[[str], str]
    epoch: Callable[[str], str]
    prefix: Callable[[str], str]
    pattern: Callable[[str], str]


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with ``prefix`` (escape character ``\\``).

    >>> like_prefix("a_b%")
    'a\\\\_b\\\\%%'
    """
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def glob_prefix(prefix: str) -> str:
    """A GLOB pattern matching strings that start with ``prefix`` (SQLite; case-sensitive).

    >>> glob_prefix("a*b")
    'a[*]b*'
    """
    escaped = "".join(f"[{c}]" if c in "*?[" else c for c in prefix)
    return escaped + "*"


def _where(d: Dialect, f: RunFilter) -> tuple[list[str], dict[str, Any]]:
    conds: list[str] = []
    params: dict[str, Any] = {}
    statuses = f.stored_statuses()
    if statuses:
        names = []
        for i, status in enumerate(statuses):
            params[f"s{i}"] = status
            names.append(d.param(f"s{i}"))
        conds.append(f"status IN ({', '.join(names)})")
    if f.workflow_id is not None:
        params["workflow_id"] = f.workflow_id
        conds.append(f"workflow_id = {d.param('workflow_id')}")
    if f.instance_prefix:
        params["prefix"] = d.pattern(f.instance_prefix)
        conds.append(d.prefix(d.param("prefix")))
    for name, value in f.epoch_bounds().items():
        if value is not None:
            column = name.split("_")[0] + "_at"
            params[name] = value
            op = ">=" if name.endswith("after") else "<"
            conds.append(f"{column} {op} {d.time(d.param(name))}")
    return conds, params


def list_sql(
    d: Dialect, f: RunFilter, sort: RunSort, after: list[Any] | None, limit: int
) -> tuple[str, dict[str, Any]]:
    """The page query: rows ``(instance_id, workflow_id, definition_hash, status,
    created_at, updated_at, error, *cursor key values)``, ``limit + 1`` of them at most."""
    conds, params = _where(d, f)
    direction = "DESC" if sort.descending else "ASC"
    op = "<" if sort.descending else ">"
    columns = sort.key_columns
    keys = [d.key(c) if c in _TIME_COLUMNS else c for c in columns]
    if after is not None:
        if len(after) != len(columns):
            raise ValueError("invalid cursor: pass back the next_cursor of a page")
        values = []
        for i, (column, value) in enumerate(zip(columns, after, strict=True)):
            params[f"k{i}"] = value
            values.append(
                d.from_key(d.param(f"k{i}")) if column in _TIME_COLUMNS else d.param(f"k{i}")
            )
        conds.append(f"({', '.join(columns)}) {op} ({', '.join(values)})")
    order = ", ".join(f"{c} {direction}" for c in columns)
    params["limit"] = limit + 1
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    text = (
        f"SELECT instance_id, workflow_id, definition_hash, status, "
        f"{d.epoch('created_at')}, {d.epoch('updated_at')}, error, {', '.join(keys)} "
        f"FROM {d.table} {where} ORDER BY {order} LIMIT {d.param('limit')}"
    )
    return text, params


def count_sql(d: Dialect, f: RunFilter, cap: int) -> tuple[str, dict[str, Any]]:
    """Count matching runs, reading at most ``cap + 1`` of them."""
    conds, params = _where(d, f)
    params["cap"] = cap + 1
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    text = (
        f"SELECT count(*) FROM (SELECT 1 FROM {d.table} {where} LIMIT {d.param('cap')}) AS capped"
    )
    return text, params
