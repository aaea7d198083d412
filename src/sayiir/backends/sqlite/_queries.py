"""``RunQueries`` of ``SqliteBackend``: the hooks of ``SqlQueries`` (queries in console.sql).

Every read is one deferred transaction, so a page sees one snapshot. Times are stored as
Unix seconds (REAL), so cursors carry them as they are and keyset comparisons are exact.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sayiir.backends._runlist import Dialect, glob_prefix
from sayiir.backends._sqlfiles import load_queries
from sayiir.backends._sqlqueries import DetailRows, Rows, SqlQueries
from sayiir.backends._views import MAX_PREVIEW_SOURCE
from sayiir.backends.sqlite._connection import Database
from sayiir.core.queries import QueueStats
from sayiir.core.records import InstanceRecord, Status

__all__ = ["SqliteQueries"]

R = TypeVar("R")
_C = load_queries("sayiir.backends.sqlite", "console.sql")
_SELECT_INSTANCE = load_queries("sayiir.backends.sqlite")["select_instance"]
_DIALECT = Dialect(
    table="sayiir_workflow_instances",
    param=lambda name: f":{name}",
    time=lambda p: p,
    key=lambda col: col,
    from_key=lambda p: p,
    epoch=lambda col: col,
    prefix=lambda p: f"instance_id GLOB {p}",
    pattern=glob_prefix,
)


class SqliteQueries(SqlQueries):
    """Mixed into ``SqliteBackend`` (its database, codec and row decoding)."""

    _db: Database
    _defined: set[str]
    _record: Callable[[tuple[Any, ...]], InstanceRecord]

    def _read(self, what: str, fn: Callable[[sqlite3.Cursor], R]) -> R:
        return self._db.run(what, fn, "BEGIN DEFERRED")

    def _dialect(self) -> Dialect:
        return _DIALECT

    def _select(self, name: str, params: dict[str, Any]) -> Rows:
        return self._read(name, lambda cur: cur.execute(_C[name], params).fetchall())

    def _execute(self, name: str, params: dict[str, Any]) -> None:
        self._db.write(name, lambda cur: cur.execute(_C[name], params))

    def _compose(self, doing: str, text: str, params: dict[str, Any]) -> Rows:
        return self._read(doing, lambda cur: cur.execute(text, params).fetchall())

    def _detail_rows(
        self, instance_id: str, after: list[Any], limit: int
    ) -> tuple[InstanceRecord, DetailRows] | None:
        ids = {"instance_id": instance_id}

        def tx(cur: sqlite3.Cursor) -> DetailRows | None:
            row = cur.execute(_SELECT_INSTANCE, ids).fetchone()
            if row is None:
                return None
            page = cur.execute(
                _C["select_step_keys"],
                {**ids, "after_t": after[0], "after_key": after[1], "limit": limit + 1},
            ).fetchall()
            keys = json.dumps([k for k, _ in page[:limit]])
            cps = cur.execute(
                _C["select_step_checkpoints"],
                {**ids, "keys": keys, "max_preview": MAX_PREVIEW_SOURCE},
            ).fetchall()
            atts = cur.execute(_C["select_step_attempts"], {**ids, "keys": keys}).fetchall()
            sigs = cur.execute(_C["select_run_signals"], ids).fetchall()
            audit = cur.execute(_C["select_audit_of"], {**ids, "limit": 100}).fetchall()
            return row, page, cps, atts, sigs, audit

        found = self._read(f"run_detail({instance_id!r})", tx)
        return None if found is None else (self._record(found[0]), found)

    def _store_definition(self, cur: sqlite3.Cursor, record: InstanceRecord) -> bool:
        """Inside ``create_instance``'s transaction: insert the definition if this process
        has not stored it yet. True when the caller should remember it as stored."""
        if record.definition is None or record.definition_hash in self._defined:
            return False
        cur.execute(
            _C["insert_definition"],
            {
                "definition_hash": record.definition_hash,
                "workflow_id": record.workflow_id,
                "structure": record.definition,
                "first_seen": time.time(),
            },
        )
        return True

    def queue_stats(self) -> QueueStats | None:
        return None  # runs on SQLite execute in the caller's process: there is no queue

    def reopen_failed(self, instance_id: str) -> Status | None:
        ids = {"instance_id": instance_id}

        def tx(cur: sqlite3.Cursor) -> Status | None:
            row = cur.execute(_C["select_status"], ids).fetchone()
            if row is None:
                return None
            if row[0] == Status.FAILED.value:
                cur.execute(_C["reopen_failed"], {**ids, "now": time.time()})
                cur.execute(_C["delete_unfinished_attempts"], ids)
            return Status(row[0])

        return self._db.write(f"reopen_failed({instance_id!r})", tx)
