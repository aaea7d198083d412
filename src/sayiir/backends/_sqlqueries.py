"""``RunQueries`` once for both SQL backends, over three hooks each backend provides.

SQLite and PostgreSQL keep their console queries in a ``console.sql`` of their own (same
names, same parameters, same result columns); this class composes the run list
(``_runlist``), runs the named queries and turns rows into the views (``_views``). A backend
supplies ``_dialect`` (how it spells parameters and times), ``_select`` (run a named read),
``_execute`` (run a named write), ``_compose`` (run a composed read) and ``_detail_rows``
(one snapshot of a run page), plus the writes that differ (``reopen_failed``,
``queue_stats``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sayiir.backends._runlist import Dialect, count_sql, list_sql
from sayiir.backends._views import (
    CheckpointRow,
    SignalRow,
    check_limit,
    child_ids,
    detail,
    status_counts_of,
    step_views,
    summary,
)
from sayiir.backends.protocol import RunQueries
from sayiir.core.codec import Codec
from sayiir.core.queries import (
    AuditEntry,
    DefinitionInfo,
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
from sayiir.core.records import AttemptRecord, InstanceRecord
from sayiir.errors import InstanceNotFoundError

__all__ = ["DetailRows", "SqlQueries"]

Rows = list[tuple[Any, ...]]
# (instance row, step page [(key, start)], checkpoints, attempts, signals, audit)
DetailRows = tuple[tuple[Any, ...], Rows, Rows, Rows, Rows, Rows]


class SqlQueries(RunQueries):
    """The shared half of ``RunQueries`` for SQLite and PostgreSQL (see the module doc)."""

    codec: Codec
    get_instance: Callable[[str], InstanceRecord | None]
    get_checkpoint: Callable[[str, str], bytes | None]

    # -- hooks -----------------------------------------------------------------------------

    def _dialect(self) -> Dialect:
        raise NotImplementedError

    def _select(self, name: str, params: dict[str, Any]) -> Rows:
        raise NotImplementedError

    def _execute(self, name: str, params: dict[str, Any]) -> None:
        raise NotImplementedError

    def _compose(self, doing: str, text: str, params: dict[str, Any]) -> Rows:
        raise NotImplementedError

    def _detail_rows(
        self, instance_id: str, after: list[Any], limit: int
    ) -> tuple[InstanceRecord, DetailRows] | None:
        raise NotImplementedError

    # -- RunQueries ------------------------------------------------------------------------

    def list_runs(
        self,
        filter: RunFilter,
        sort: RunSort = RunSort(),  # noqa: B008 (frozen, immutable)
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        check_limit("limit", limit)
        after = None if cursor is None else decode_cursor(cursor, sort.tag)
        text, params = list_sql(self._dialect(), filter, sort, after, limit)
        rows = self._compose("list_runs", text, params)
        runs = [_summary(r) for r in rows[:limit]]
        if len(rows) <= limit:
            return RunPage(runs, None)
        return RunPage(runs, encode_cursor(sort.tag, list(rows[limit - 1][7:])))

    def count_runs(self, filter: RunFilter, cap: int = 1000) -> tuple[int, bool]:
        check_limit("cap", cap, 1_000_000)
        text, params = count_sql(self._dialect(), filter, cap)
        n = int(self._compose("count_runs", text, params)[0][0])
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
        found = self._detail_rows(instance_id, after, steps_limit)
        if found is None:
            return None
        rec, (_, page, cps, atts, sigs, audit_rows) = found
        attempts = [AttemptRecord(*a) for a in atts]
        checkpoints = {c[0]: CheckpointRow(*c) for c in cps}
        audit = [_audit(a) for a in audit_rows]
        cursor = None
        if len(page) > steps_limit:
            key, start = page[steps_limit - 1]
            cursor = encode_cursor("steps", [start, key])
        keys = [k for k, _ in page[:steps_limit]]
        children = [summary(c) for c in map(self.get_instance, child_ids(audit)) if c]
        return detail(
            rec,
            self.codec,
            steps=step_views(keys, checkpoints, attempts, self.codec, preview_bytes),
            steps_next_cursor=cursor,
            signals=[SignalRow(*s) for s in sigs],
            audit=audit,
            children=children,
            preview_bytes=preview_bytes,
        )

    def step_output(self, instance_id: str, key: str) -> object:
        data = self.get_checkpoint(instance_id, key)
        if data is None:
            if self.get_instance(instance_id) is None:
                raise InstanceNotFoundError(instance_id)
            raise KeyError(f"run '{instance_id}' has no checkpoint {key!r}")
        return self.codec.decode(data)

    def _payload(self, instance_id: str, pick: str) -> object:
        rows = self._select("select_payload", {"instance_id": instance_id, "pick": pick})
        if not rows:
            raise InstanceNotFoundError(instance_id)
        return None if rows[0][0] is None else self.codec.decode(rows[0][0])

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
        rows = self._select("status_counts", params)
        return status_counts_of(since, until, start, bucket_secs, rows)

    def list_definitions(self) -> list[DefinitionInfo]:
        return [_definition(r) for r in self._select("select_definitions", {})]

    def get_definition(self, definition_hash: str) -> DefinitionInfo | None:
        rows = self._select("select_definition", {"definition_hash": definition_hash})
        return _definition(rows[0]) if rows else None

    def record_audit(self, entry: AuditEntry) -> None:
        params = {
            "at": to_epoch(entry.at),
            "actor": entry.actor,
            "action": entry.action,
            "instance_id": entry.instance_id,
            "detail": json.dumps(entry.detail, sort_keys=True),
        }
        self._execute("insert_audit", params)

    def list_audit(self, instance_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        check_limit("limit", limit)
        params: dict[str, Any] = {"instance_id": instance_id, "limit": limit}
        name = "select_audit" if instance_id is None else "select_audit_of"
        return [_audit(r) for r in self._select(name, params)]


def _audit(row: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(from_epoch(row[0]), row[1], row[2], row[3], json.loads(row[4]))


def _definition(row: tuple[Any, ...]) -> DefinitionInfo:
    return DefinitionInfo(row[0], row[1], json.loads(row[2]), from_epoch(row[3]))


def _summary(r: tuple[Any, ...]) -> RunSummary:
    return RunSummary(
        r[0], r[1], r[2], public_status(r[3]), from_epoch(r[4]), from_epoch(r[5]), r[6]
    )
