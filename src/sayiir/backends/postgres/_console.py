"""``RunQueries`` of ``PostgresBackend``: the console's reads (fixed queries in console.sql).

The run list is composed by ``sayiir.backends._runlist`` (its table name quoted with
``psycopg.sql``) and paged by keyset over the indexes of migration 0006; cursor keys of time
columns are exact microseconds, so a page boundary never skips or repeats a row. Payloads
bigger than ``MAX_PREVIEW_SOURCE`` never leave the server for a preview.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from sayiir.backends._runlist import Dialect, count_sql, like_prefix, list_sql
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
from sayiir.backends.postgres import _ops
from sayiir.backends.postgres._ops import Composed, Op, Q, Rows
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

if TYPE_CHECKING:
    from sayiir.backends.postgres._runner import Runner

__all__ = ["PostgresQueries", "with_definition"]

T = TypeVar("T")


@cache
def _dialect(schema: str, prefix: str) -> Dialect:
    from sayiir.backends.postgres._sql import identifiers, render

    table = render("{t_instances}", identifiers(schema, prefix)).decode()
    return Dialect(
        table=table,
        param=lambda name: f"%({name})s",
        time=lambda p: f"to_timestamp({p}::float8)",
        key=lambda col: f"(date_part('epoch', {col}) * 1000000)::int8",
        from_key=lambda p: f"('epoch'::timestamptz + {p}::int8 * interval '1 microsecond')",
        epoch=lambda col: f"date_part('epoch', {col})",
        prefix=lambda p: f"instance_id LIKE {p}",
        pattern=like_prefix,
    )


def _one(name: str, params: dict[str, Any]) -> Op[Rows]:
    rows = yield Q(name, params, prepare=False)
    return rows


def _detail_rows(
    instance_id: str, after: list[Any], limit: int
) -> Generator[Q, Rows, tuple[Any, ...] | None]:
    ids = {"id": instance_id}
    inst = yield Q("get_instance", ids)
    if not inst:
        return None
    page = yield Q(
        "select_step_keys",
        {**ids, "after_us": after[0], "after_key": after[1], "limit": limit + 1},
        prepare=False,
    )
    keys = [k for k, _ in page[:limit]]
    cps = yield Q(
        "select_step_checkpoints",
        {**ids, "keys": keys, "max_preview": MAX_PREVIEW_SOURCE},
        prepare=False,
    )
    atts = yield Q("select_step_attempts", {**ids, "keys": keys}, prepare=False)
    sigs = yield Q("select_run_signals", ids, prepare=False)
    audit = yield Q("select_audit_of", {"instance_id": instance_id, "limit": 100}, prepare=False)
    return inst[0], page, cps, atts, sigs, audit


def _audit(row: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(from_epoch(row[0]), row[1], row[2], row[3], json.loads(row[4]))


def _definition(row: tuple[Any, ...]) -> DefinitionInfo:
    return DefinitionInfo(row[0], row[1], json.loads(row[2]), from_epoch(row[3]))


def _summary(r: tuple[Any, ...]) -> RunSummary:
    return RunSummary(
        r[0], r[1], r[2], public_status(r[3]), from_epoch(r[4]), from_epoch(r[5]), r[6]
    )


def with_definition(record: InstanceRecord, op: Op[T], defined: set[str]) -> Op[T]:
    """``op`` (a create_instance), preceded by the insert of the run's definition the first
    time this backend object sees its hash: steady state adds no statement to a run start."""
    if record.definition is None or record.definition_hash in defined:
        return op
    return _definition_then(record, op, defined)


def _definition_then(record: InstanceRecord, op: Op[T], defined: set[str]) -> Op[T]:
    params = {
        "definition_hash": record.definition_hash,
        "workflow_id": record.workflow_id,
        "structure": record.definition,
    }
    yield Q("insert_definition", params, prepare=False)
    defined.add(record.definition_hash)
    return (yield from op)


def _composed(text: str, params: dict[str, Any]) -> Op[Rows]:
    rows = yield Composed(text, params)
    return rows


class PostgresQueries:
    """Mixed into ``PostgresBackend`` (its runner, codec and names)."""

    codec: Codec
    _schema: str
    _prefix: str
    _runner: Runner
    get_instance: Callable[[str], InstanceRecord | None]
    get_checkpoint: Callable[[str, str], bytes | None]

    def _run(self, doing: str, make: Callable[[bool], Op[T]]) -> T:
        return self._runner.run(doing, make)

    def _fetch(self, doing: str, text: str, params: dict[str, Any]) -> Rows:
        """Run one composed read (the run list) with the retry policy of every call."""
        return self._run(doing, lambda resent: _composed(text, params))

    def list_runs(
        self,
        filter: RunFilter,
        sort: RunSort = RunSort(),  # noqa: B008 (frozen, immutable)
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        check_limit("limit", limit)
        after = None if cursor is None else decode_cursor(cursor, sort.tag)
        text, params = list_sql(_dialect(self._schema, self._prefix), filter, sort, after, limit)
        rows = self._fetch("list_runs", text, params)
        runs = [_summary(r) for r in rows[:limit]]
        if len(rows) <= limit:
            return RunPage(runs, None)
        return RunPage(runs, encode_cursor(sort.tag, list(rows[limit - 1][7:])))

    def count_runs(self, filter: RunFilter, cap: int = 1000) -> tuple[int, bool]:
        check_limit("cap", cap, 1_000_000)
        text, params = count_sql(_dialect(self._schema, self._prefix), filter, cap)
        n = int(self._fetch("count_runs", text, params)[0][0])
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
        found = self._run("run_detail", lambda retry: _detail_rows(instance_id, after, steps_limit))
        if found is None:
            return None
        row, page, cps, atts, sigs, audit_rows = found
        rec = _ops.record_of(row)
        attempts = [AttemptRecord(*a) for a in atts]
        checkpoints = {c[0]: CheckpointRow(*c) for c in cps}
        audit = [_audit(a) for a in audit_rows]
        more = len(page) > steps_limit
        keys = [k for k, _ in page[:steps_limit]]
        cursor = None
        if more:
            key, us = page[steps_limit - 1]
            cursor = encode_cursor("steps", [us, key])
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
        params = {"id": instance_id, "pick": pick}
        rows: Rows = self._run(f"run_{pick}", lambda retry: _one("select_payload", params))
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
        rows: Rows = self._run("status_counts", lambda retry: _one("status_counts", params))
        return status_counts_of(since, until, start, bucket_secs, rows)

    def queue_stats(self) -> QueueStats | None:
        rows: Rows = self._run("queue_stats", lambda retry: _one("queue_stats", {}))
        ready, claimed, oldest = rows[0]
        return QueueStats(int(ready), int(claimed), oldest)

    def list_definitions(self) -> list[DefinitionInfo]:
        rows: Rows = self._run("list_definitions", lambda retry: _one("select_definitions", {}))
        return [_definition(r) for r in rows]

    def get_definition(self, definition_hash: str) -> DefinitionInfo | None:
        params = {"definition_hash": definition_hash}
        rows: Rows = self._run("get_definition", lambda retry: _one("select_definition", params))
        return _definition(rows[0]) if rows else None

    def record_audit(self, entry: AuditEntry) -> None:
        params = {
            "at": to_epoch(entry.at),
            "actor": entry.actor,
            "action": entry.action,
            "instance_id": entry.instance_id,
            "detail": json.dumps(entry.detail, sort_keys=True),
        }
        self._run("record_audit", lambda retry: _one("insert_audit", params))

    def reopen_failed(self, instance_id: str) -> Status | None:
        params = {"id": instance_id}
        rows: Rows = self._run("reopen_failed", lambda retry: _one("reopen_failed", params))
        found = rows[0][0]
        return None if found is None else Status(found)

    def list_audit(self, instance_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        check_limit("limit", limit)
        params: dict[str, Any] = {"instance_id": instance_id, "limit": limit}
        name = "select_audit" if instance_id is None else "select_audit_of"
        rows: Rows = self._run("list_audit", lambda retry: _one(name, params))
        return [_audit(r) for r in rows]
