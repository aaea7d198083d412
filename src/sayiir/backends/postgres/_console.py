"""``RunQueries`` of ``PostgresBackend``: the hooks of ``SqlQueries`` (queries in console.sql).

The run list is composed by ``sayiir.backends._runlist`` (its table name quoted with
``psycopg.sql``) and paged by keyset over the indexes of migration 0006; cursor keys of time
columns are exact microseconds, so a page boundary never skips or repeats a row. Payloads
bigger than ``MAX_PREVIEW_SOURCE`` never leave the server for a preview.
"""

from __future__ import annotations

from collections.abc import Generator
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from sayiir.backends._runlist import Dialect, like_prefix
from sayiir.backends._sqlqueries import DetailRows, SqlQueries
from sayiir.backends._views import MAX_PREVIEW_SOURCE
from sayiir.backends.postgres import _ops
from sayiir.backends.postgres._ops import Composed, Op, Q, Rows
from sayiir.core.queries import QueueStats
from sayiir.core.records import InstanceRecord, Status

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
) -> Generator[Q, Rows, DetailRows | None]:
    """One page of a run, on one connection (each read its own snapshot, in autocommit)."""
    ids = {"instance_id": instance_id}
    inst = yield Q("get_instance", {"id": instance_id})
    if not inst:
        return None
    page = yield Q(
        "select_step_keys",
        {**ids, "after_t": after[0], "after_key": after[1], "limit": limit + 1},
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
    audit = yield Q("select_audit_of", {**ids, "limit": 100}, prepare=False)
    return inst[0], page, cps, atts, sigs, audit


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


class PostgresQueries(SqlQueries):
    """Mixed into ``PostgresBackend`` (its runner, codec and names)."""

    _schema: str
    _prefix: str
    _runner: Runner

    def _dialect(self) -> Dialect:
        return _dialect(self._schema, self._prefix)

    def _select(self, name: str, params: dict[str, Any]) -> Rows:
        rows: Rows = self._runner.run(name, lambda resent: _one(name, params))
        return rows

    def _execute(self, name: str, params: dict[str, Any]) -> None:
        self._runner.run(name, lambda resent: _one(name, params))

    def _compose(self, doing: str, text: str, params: dict[str, Any]) -> Rows:
        rows: Rows = self._runner.run(doing, lambda resent: _composed(text, params))
        return rows

    def _detail_rows(
        self, instance_id: str, after: list[Any], limit: int
    ) -> tuple[InstanceRecord, DetailRows] | None:
        found = self._runner.run(
            "run_detail", lambda resent: _detail_rows(instance_id, after, limit)
        )
        return None if found is None else (_ops.record_of(found[0]), found)

    def queue_stats(self) -> QueueStats | None:
        ready, claimed, oldest = self._select("queue_stats", {})[0]
        return QueueStats(int(ready), int(claimed), oldest)

    def reopen_failed(self, instance_id: str) -> Status | None:
        found = self._select("reopen_failed", {"instance_id": instance_id})[0][0]
        return None if found is None else Status(found)
