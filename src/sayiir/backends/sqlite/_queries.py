"""``RunQueries`` of ``SqliteBackend``: the console's reads (queries in console.sql).

Every read is one deferred transaction, so a page sees one snapshot. The run list is
composed by ``sayiir.backends._runlist``; times are stored as Unix seconds (REAL), so
cursors carry them as they are and keyset comparisons are exact.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sayiir.backends._runlist import Dialect, count_sql, glob_prefix, list_sql
from sayiir.backends._sqlfiles import load_queries
from sayiir.backends._views import (
    MAX_PREVIEW_SOURCE,
    CheckpointRow,
    SignalRow,
    check_limit,
    child_ids,
    detail,
    status_counts_of,
    step_views,
    summary,
)
from sayiir.backends.sqlite._connection import Database
from sayiir.core.codec import Codec
from sayiir.core.queries import (
    AuditEntry,
    DefinitionInfo,
    QueueStats,
    RunDetail,
    RunFilter,
    RunPage,
    RunSort,
    RunSummary,
    StatusCounts,
    decode_cursor,
    encode_cursor,
    from_epoch,
    public_status,
    to_epoch,
)
from sayiir.core.records import AttemptRecord, InstanceRecord, Status
from sayiir.errors import InstanceNotFoundError

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


def _audit(row: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(from_epoch(row[0]), row[1], row[2], row[3], json.loads(row[4]))


def _definition(row: tuple[Any, ...]) -> DefinitionInfo:
    return DefinitionInfo(row[0], row[1], json.loads(row[2]), from_epoch(row[3]))


class SqliteQueries:
    """Mixed into ``SqliteBackend`` (its database, codec and row decoding)."""

    codec: Codec
    _db: Database
    _defined: set[str]
    _record: Callable[[tuple[Any, ...]], InstanceRecord]
    get_instance: Callable[[str], InstanceRecord | None]
    get_checkpoint: Callable[[str, str], bytes | None]

    def _read(self, what: str, fn: Callable[[sqlite3.Cursor], R]) -> R:
        return self._db.run(what, fn, "BEGIN DEFERRED")

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

    def list_runs(
        self,
        filter: RunFilter,
        sort: RunSort = RunSort(),  # noqa: B008 (frozen, immutable)
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        check_limit("limit", limit)
        after = None if cursor is None else decode_cursor(cursor, sort.tag)
        text, params = list_sql(_DIALECT, filter, sort, after, limit)
        rows = self._read("list_runs", lambda cur: cur.execute(text, params).fetchall())
        runs = [_summary(r) for r in rows[:limit]]
        if len(rows) <= limit:
            return RunPage(runs, None)
        return RunPage(runs, encode_cursor(sort.tag, list(rows[limit - 1][7:])))

    def count_runs(self, filter: RunFilter, cap: int = 1000) -> tuple[int, bool]:
        check_limit("cap", cap, 1_000_000)
        text, params = count_sql(_DIALECT, filter, cap)
        n = self._read("count_runs", lambda cur: cur.execute(text, params).fetchone()[0])
        return min(n, cap), n > cap

    def run_detail(
        self,
        instance_id: str,
        *,
        steps_cursor: str | None = None,
        steps_limit: int = 500,
        preview_bytes: int = 2048,
    ) -> RunDetail | None:
        check_limit("steps_limit", steps_limit)
        after = [None, None] if steps_cursor is None else decode_cursor(steps_cursor, "steps")
        ids = {"instance_id": instance_id}

        def tx(cur: sqlite3.Cursor) -> tuple[Any, ...] | None:
            row = cur.execute(_SELECT_INSTANCE, ids).fetchone()
            if row is None:
                return None
            page = cur.execute(
                _C["select_step_keys"],
                {**ids, "after_t": after[0], "after_key": after[1], "limit": steps_limit + 1},
            ).fetchall()
            keys = json.dumps([k for k, _ in page[:steps_limit]])
            cps = cur.execute(
                _C["select_step_checkpoints"],
                {**ids, "keys": keys, "max_preview": MAX_PREVIEW_SOURCE},
            ).fetchall()
            atts = cur.execute(_C["select_step_attempts"], {**ids, "keys": keys}).fetchall()
            sigs = cur.execute(_C["select_run_signals"], ids).fetchall()
            audit = cur.execute(_C["select_audit_of"], {**ids, "limit": 100}).fetchall()
            return row, page, cps, atts, sigs, audit

        found = self._read(f"run_detail({instance_id!r})", tx)
        if found is None:
            return None
        row, page, cps, atts, sigs, audit_rows = found
        rec = self._record(row)
        attempts = [AttemptRecord(*a) for a in atts]
        task_ids = {a.key: a.task_id for a in attempts}
        checkpoints = {c[0]: CheckpointRow(c[0], task_ids.get(c[0]), c[1], c[2], c[3]) for c in cps}
        audit = [_audit(a) for a in audit_rows]
        more = len(page) > steps_limit
        keys = [k for k, _ in page[:steps_limit]]
        return detail(
            rec,
            self.codec,
            steps=step_views(keys, checkpoints, attempts, self.codec, preview_bytes),
            steps_next_cursor=_steps_cursor(page, steps_limit) if more else None,
            signals=[SignalRow(*s) for s in sigs],
            audit=audit,
            children=self._summaries(child_ids(audit)),
            preview_bytes=preview_bytes,
        )

    def _summaries(self, ids: list[str]) -> list[RunSummary]:
        out = []
        for iid in ids:
            rec = self.get_instance(iid)
            if rec is not None:
                out.append(summary(rec))
        return out

    def step_output(self, instance_id: str, key: str) -> object:
        data = self.get_checkpoint(instance_id, key)
        if data is None:
            if self.get_instance(instance_id) is None:
                raise InstanceNotFoundError(instance_id)
            raise KeyError(f"run '{instance_id}' has no checkpoint {key!r}")
        return self.codec.decode(data)

    def _payload(self, instance_id: str, pick: str) -> object:
        params = {"instance_id": instance_id, "pick": pick}
        row = self._read(
            f"run_{pick}({instance_id!r})",
            lambda cur: cur.execute(_C["select_payload"], params).fetchone(),
        )
        if row is None:
            raise InstanceNotFoundError(instance_id)
        return None if row[0] is None else self.codec.decode(row[0])

    def run_input(self, instance_id: str) -> object:
        return self._payload(instance_id, "input")

    def run_output(self, instance_id: str) -> object:
        return self._payload(instance_id, "output")

    def status_counts(
        self, since: datetime, until: datetime, bucket_secs: float = 3600.0
    ) -> StatusCounts:
        if not bucket_secs > 0:
            raise ValueError(f"bucket_secs must be > 0, not {bucket_secs!r}")
        start = to_epoch(since)
        params = {"since": start, "until": to_epoch(until), "bucket": float(bucket_secs)}
        rows = self._read(
            "status_counts", lambda cur: cur.execute(_C["status_counts"], params).fetchall()
        )
        return status_counts_of(since, until, start, bucket_secs, rows)

    def queue_stats(self) -> QueueStats | None:
        return None  # runs on SQLite execute in the caller's process: there is no queue

    def list_definitions(self) -> list[DefinitionInfo]:
        rows = self._read(
            "list_definitions", lambda cur: cur.execute(_C["select_definitions"]).fetchall()
        )
        return [_definition(r) for r in rows]

    def get_definition(self, definition_hash: str) -> DefinitionInfo | None:
        params = {"definition_hash": definition_hash}
        row = self._read(
            "get_definition",
            lambda cur: cur.execute(_C["select_definition"], params).fetchone(),
        )
        return None if row is None else _definition(row)

    def record_audit(self, entry: AuditEntry) -> None:
        params = {
            "at": to_epoch(entry.at),
            "actor": entry.actor,
            "action": entry.action,
            "instance_id": entry.instance_id,
            "detail": json.dumps(entry.detail, sort_keys=True),
        }
        self._db.write("record_audit", lambda cur: cur.execute(_C["insert_audit"], params))

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

    def list_audit(self, instance_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        check_limit("limit", limit)
        params: dict[str, Any] = {"instance_id": instance_id, "limit": limit}
        query = _C["select_audit" if instance_id is None else "select_audit_of"]
        rows = self._read("list_audit", lambda cur: cur.execute(query, params).fetchall())
        return [_audit(r) for r in rows]


def _summary(r: tuple[Any, ...]) -> RunSummary:
    return RunSummary(
        r[0], r[1], r[2], public_status(r[3]), from_epoch(r[4]), from_epoch(r[5]), r[6]
    )


def _steps_cursor(page: list[tuple[Any, ...]], limit: int) -> str:
    key, started = page[limit - 1]
    return encode_cursor("steps", [started, key])
