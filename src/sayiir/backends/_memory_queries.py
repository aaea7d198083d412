"""``RunQueries`` of ``InMemoryBackend``: the reference answers, by scanning the dicts.

Pagination is keyset as in the SQL backends (the cursor is the sort key of the last row), so
the three behave alike on ties, filters and cursors; the contract suite checks it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sayiir.backends._views import (
    CheckpointRow,
    SignalRow,
    check_limit,
    child_ids,
    detail,
    step_views,
    summary,
)
from sayiir.backends.protocol import RunQueries
from sayiir.core.codec import Codec
from sayiir.core.queries import (
    AuditEntry,
    DefinitionInfo,
    QueueStats,
    RunDetail,
    RunFilter,
    RunPage,
    RunSort,
    StatusCounts,
    decode_cursor,
    encode_cursor,
    from_epoch,
    public_status,
    to_epoch,
)
from sayiir.core.records import AttemptRecord, InstanceRecord, QueueItem, Status
from sayiir.errors import InstanceNotFoundError

if TYPE_CHECKING:
    from sayiir.backends.memory import _Instance

__all__ = ["MemoryQueries", "StepMeta"]

# (task_id, attempt, started_at, finished_at, stored_at) of a checkpoint.
StepMeta = tuple[str | None, int, float, float, float]


def _key(rec: InstanceRecord, sort: RunSort) -> list[Any]:
    return [
        rec.status.value if column == "status" else getattr(rec, column)
        for column in sort.key_columns
    ]


def _matches(rec: InstanceRecord, f: RunFilter, stored: tuple[str, ...]) -> bool:
    b = f.epoch_bounds()
    return not (
        (stored and rec.status.value not in stored)
        or (f.workflow_id is not None and rec.workflow_id != f.workflow_id)
        or (f.instance_prefix is not None and not rec.instance_id.startswith(f.instance_prefix))
        or (b["created_after"] is not None and rec.created_at < b["created_after"])
        or (b["created_before"] is not None and rec.created_at >= b["created_before"])
        or (b["updated_after"] is not None and rec.updated_at < b["updated_after"])
        or (b["updated_before"] is not None and rec.updated_at >= b["updated_before"])
    )


class MemoryQueries(RunQueries):
    """Mixed into ``InMemoryBackend`` (its dicts, lock and codec)."""

    codec: Codec
    _lock: threading.Lock
    _instances: dict[str, _Instance]
    _signals: dict[tuple[str, str], deque[tuple[bytes, float]]]
    _definitions: dict[str, DefinitionInfo]
    _audit: list[AuditEntry]
    _enqueue: Callable[[_Instance, Sequence[QueueItem]], None]

    def _store_definition(self, record: InstanceRecord) -> None:
        """Called under the lock by ``create_instance``: keep the first of each hash."""
        text = record.definition
        if text is not None and record.definition_hash not in self._definitions:
            self._definitions[record.definition_hash] = DefinitionInfo(
                record.definition_hash,
                record.workflow_id,
                json.loads(text),
                from_epoch(time.time()),
            )

    def list_runs(
        self,
        filter: RunFilter,
        sort: RunSort = RunSort(),  # noqa: B008 (frozen, immutable)
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        check_limit("limit", limit)
        after = None if cursor is None else decode_cursor(cursor, sort.tag)
        stored = filter.stored_statuses()
        with self._lock:
            rows = [
                i.record for i in self._instances.values() if _matches(i.record, filter, stored)
            ]
        rows.sort(key=lambda r: _key(r, sort), reverse=sort.descending)
        if after is not None:
            if sort.descending:
                rows = [r for r in rows if _key(r, sort) < after]
            else:
                rows = [r for r in rows if _key(r, sort) > after]
        page = rows[:limit]
        more = len(rows) > limit
        next_cursor = encode_cursor(sort.tag, _key(page[-1], sort)) if more else None
        return RunPage([summary(r) for r in page], next_cursor)

    def count_runs(self, filter: RunFilter, cap: int = 1000) -> tuple[int, bool]:
        check_limit("cap", cap, 1_000_000)
        stored = filter.stored_statuses()
        with self._lock:
            n = sum(1 for i in self._instances.values() if _matches(i.record, filter, stored))
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
        after = None if steps_cursor is None else decode_cursor(steps_cursor, "steps")
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return None
            rec = inst.record
            attempts = list(inst.attempts)
            checkpoints: dict[str, CheckpointRow] = {}
            starts: dict[str, float] = {}
            for key, output in inst.checkpoints.items():
                task_id, n, started, finished, stored_at = inst.meta.get(
                    key, (None, 1, 0.0, 0.0, rec.created_at)
                )
                checkpoints[key] = CheckpointRow(key, task_id, len(output), output, stored_at)
                if task_id is not None:
                    attempts.append(AttemptRecord(key, task_id, n, "completed", started, finished))
                starts[key] = started or stored_at
            for a in inst.attempts:
                starts[a.key] = min(starts.get(a.key, a.started_at), a.started_at)
            signals = [SignalRow(*s) for s in inst.consumed]
            for (iid, name), queue in self._signals.items():
                if iid == instance_id:
                    signals.extend(SignalRow(name, p, at, None) for p, at in queue)
            audit = self._audit_of(instance_id, 100)
            children = [
                summary(self._instances[c].record) for c in child_ids(audit) if c in self._instances
            ]
        order = sorted((t, k) for k, t in starts.items())
        if after is not None:
            order = [o for o in order if [o[0], o[1]] > after]
        page = order[:steps_limit]
        more = len(order) > steps_limit
        keys = [k for _, k in page]
        return detail(
            rec,
            self.codec,
            steps=step_views(keys, checkpoints, attempts, self.codec, preview_bytes),
            steps_next_cursor=encode_cursor("steps", list(page[-1])) if more else None,
            signals=sorted(signals, key=lambda s: s.created_at),
            audit=audit,
            children=children,
            preview_bytes=preview_bytes,
        )

    def _payload(self, instance_id: str, pick: str, key: str = "") -> bytes | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                raise InstanceNotFoundError(instance_id)
            if pick == "input":
                return inst.record.input
            if pick == "output":
                return inst.record.output
            if key not in inst.checkpoints:
                raise KeyError(f"run '{instance_id}' has no checkpoint {key!r}")
            return inst.checkpoints[key]

    def step_output(self, instance_id: str, key: str) -> object:
        data = self._payload(instance_id, "step", key)
        return None if data is None else self.codec.decode(data)

    def run_input(self, instance_id: str) -> object:
        data = self._payload(instance_id, "input")
        return None if data is None else self.codec.decode(data)

    def run_output(self, instance_id: str) -> object:
        data = self._payload(instance_id, "output")
        return None if data is None else self.codec.decode(data)

    def status_counts(
        self, since: datetime, until: datetime, bucket_secs: float = 3600.0
    ) -> StatusCounts:
        start, end = to_epoch(since), to_epoch(until)
        if not bucket_secs > 0:
            raise ValueError(f"bucket_secs must be > 0, not {bucket_secs!r}")
        totals: dict[str, int] = {}
        buckets: dict[tuple[float, str], int] = {}
        with self._lock:
            for inst in self._instances.values():
                rec = inst.record
                if start <= rec.created_at < end:
                    status = public_status(rec.status.value)
                    totals[status] = totals.get(status, 0) + 1
                    b = start + ((rec.created_at - start) // bucket_secs) * bucket_secs
                    buckets[(b, status)] = buckets.get((b, status), 0) + 1
        return StatusCounts(
            since,
            until,
            totals,
            [(from_epoch(b), s, n) for (b, s), n in sorted(buckets.items())],
        )

    def queue_stats(self) -> QueueStats | None:
        now = time.time()
        ready = claimed = 0
        oldest: float | None = None
        with self._lock:
            for inst in self._instances.values():
                for entry in inst.queue.values():
                    if entry.worker_id is not None:
                        claimed += 1
                    elif entry.available_at <= now:
                        ready += 1
                        oldest = (
                            entry.available_at
                            if oldest is None
                            else min(oldest, entry.available_at)
                        )
        return QueueStats(ready, claimed, None if oldest is None else now - oldest)

    def list_definitions(self) -> list[DefinitionInfo]:
        with self._lock:
            return sorted(self._definitions.values(), key=lambda d: d.first_seen, reverse=True)

    def get_definition(self, definition_hash: str) -> DefinitionInfo | None:
        with self._lock:
            return self._definitions.get(definition_hash)

    def record_audit(self, entry: AuditEntry) -> None:
        with self._lock:
            self._audit.append(entry)

    def reopen_failed(self, instance_id: str) -> Status | None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None:
                return None
            rec = inst.record
            found = rec.status
            if found is Status.FAILED:
                inst.attempts = [a for a in inst.attempts if a.key in inst.checkpoints]
                rec.status, rec.error, rec.completed_at = Status.RUNNING, None, None
                rec.lease_until = rec.request = None
                rec.updated_at = time.time()
                if rec.distributed:
                    self._enqueue(inst, [QueueItem("")])
            return found

    def list_audit(self, instance_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        check_limit("limit", limit)
        with self._lock:
            return self._audit_of(instance_id, limit)

    def _audit_of(self, instance_id: str | None, limit: int) -> list[AuditEntry]:
        rows = [e for e in self._audit if instance_id is None or e.instance_id == instance_id]
        return rows[::-1][:limit]
