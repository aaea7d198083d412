"""The console's views built from stored rows, once for every backend.

Each backend reads its own rows (a dict, SQLite, PostgreSQL) and hands them here, so a run
page, a step's attempts and a payload preview look the same whatever stores them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sayiir.core.codec import Codec
from sayiir.core.queries import (
    AttemptView,
    AuditEntry,
    RunDetail,
    RunSummary,
    SignalView,
    StatusCounts,
    StepView,
    from_epoch,
    preview,
    public_status,
)
from sayiir.core.records import AttemptRecord, InstanceRecord

__all__ = [
    "FORK",
    "FORKED_FROM",
    "CheckpointRow",
    "SignalRow",
    "check_limit",
    "child_ids",
    "detail",
    "parent_id",
    "payload_preview",
    "status_counts_of",
    "step_views",
    "summary",
]

# Audit actions that link runs: "fork" on the source (detail new_instance_id), "forked_from"
# on the new run (detail source_instance_id). Children and parents come from these.
FORK = "fork"
FORKED_FROM = "forked_from"

# A stored payload bigger than this is not decoded for a preview (load it on demand).
MAX_PREVIEW_SOURCE = 64 * 1024


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A checkpoint as a list needs it: ``output`` is ``None`` when too big to preview."""

    key: str
    task_id: str | None
    size: int
    output: bytes | None
    created_at: float | None


@dataclass(frozen=True, slots=True)
class SignalRow:
    name: str
    payload: bytes
    created_at: float
    consumed_at: float | None


def check_limit(name: str, value: int, maximum: int = 10_000) -> int:
    """Validate a page size (shared by every backend)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValueError(f"{name} must be an int from 1 to {maximum}, not {value!r}")
    return value


def summary(rec: InstanceRecord, parent: str | None = None) -> RunSummary:
    return RunSummary(
        rec.instance_id,
        rec.workflow_id,
        rec.definition_hash,
        public_status(rec.status.value),
        from_epoch(rec.created_at),
        from_epoch(rec.updated_at),
        rec.error,
        parent,
    )


def payload_preview(codec: Codec, data: bytes | None, size: int, limit: int) -> str | None:
    """The decoded payload as JSON text cut to ``limit``; a note when it is too big to decode
    here or does not decode (the full value is loaded on demand)."""
    if data is None:
        return None if size == 0 else f"({size} bytes: load in full on demand)"
    try:
        value = codec.decode(data)
    except Exception as exc:
        return f"(undecodable with codec '{codec.name}': {type(exc).__name__})"
    return preview(value, limit)


def _attempt(a: AttemptRecord) -> AttemptView:
    error = a.error
    trace = None
    if error is not None and "\n" in error:
        trace = error
        error = error.splitlines()[0] or error
    return AttemptView(
        a.attempt,
        from_epoch(a.started_at) if a.started_at else None,
        from_epoch(a.finished_at) if a.finished_at else None,
        a.status,
        error,
        trace,
    )


def step_views(
    keys: Sequence[str],
    checkpoints: Mapping[str, CheckpointRow],
    attempts: Sequence[AttemptRecord],
    codec: Codec,
    preview_bytes: int,
) -> list[StepView]:
    """One view per key, in ``keys`` order, from its checkpoint and its attempts."""
    by_key: dict[str, list[AttemptRecord]] = {}
    for a in sorted(attempts, key=lambda a: a.attempt):
        by_key.setdefault(a.key, []).append(a)
    out = []
    for key in keys:
        cp = checkpoints.get(key)
        tries = by_key.get(key, [])
        task_id = tries[0].task_id if tries else (cp.task_id if cp is not None else None)
        if cp is not None:
            status = "completed"
        elif tries and tries[-1].status == "running":
            status = "running"
        else:
            status = "failed"
        starts = [a.started_at for a in tries if a.started_at]
        ends = [a.finished_at for a in tries if a.finished_at]
        start = min(starts) if starts else (cp.created_at if cp is not None else None)
        end = (
            max(ends)
            if ends and status != "running"
            else (cp.created_at if cp is not None else None)
        )
        out.append(
            StepView(
                key,
                task_id,
                "task" if task_id is not None else "marker",
                status,
                from_epoch(start) if start else None,
                from_epoch(end) if end else None,
                [_attempt(a) for a in tries],
                None if cp is None else payload_preview(codec, cp.output, cp.size, preview_bytes),
                None if cp is None else cp.size,
            )
        )
    return out


def child_ids(audit: Sequence[AuditEntry]) -> list[str]:
    """The runs forked from this one (oldest first), from its audit entries."""
    ids = [e.detail.get("new_instance_id") for e in reversed(audit) if e.action == FORK]
    return [i for i in ids if isinstance(i, str)]


def parent_id(audit: Sequence[AuditEntry]) -> str | None:
    """The run this one was forked from, if any."""
    for e in audit:
        source = e.detail.get("source_instance_id")
        if e.action == FORKED_FROM and isinstance(source, str):
            return source
    return None


def detail(
    rec: InstanceRecord,
    codec: Codec,
    *,
    steps: list[StepView],
    steps_next_cursor: str | None,
    signals: Sequence[SignalRow],
    audit: list[AuditEntry],
    children: list[RunSummary],
    preview_bytes: int,
) -> RunDetail:
    def small(data: bytes | None) -> bytes | None:
        return data if data is None or len(data) <= MAX_PREVIEW_SOURCE else None

    return RunDetail(
        summary(rec, parent_id(audit)),
        payload_preview(codec, small(rec.input), len(rec.input), preview_bytes),
        payload_preview(
            codec, small(rec.output), len(rec.output) if rec.output else 0, preview_bytes
        ),
        steps,
        steps_next_cursor,
        [
            SignalView(
                s.name,
                "pending" if s.consumed_at is None else "consumed",
                payload_preview(codec, small(s.payload), len(s.payload), preview_bytes),
                from_epoch(s.consumed_at if s.consumed_at is not None else s.created_at),
            )
            for s in signals
        ],
        children,
        audit,
        rec.reason,
        from_epoch(rec.wake_at) if rec.wake_at is not None else None,
        rec.signal_name,
    )


def decode_full(codec: Codec, data: bytes) -> Any:
    """A stored payload, decoded in full (the console's "load on demand")."""
    return codec.decode(data)


def status_counts_of(
    since: datetime,
    until: datetime,
    start: float,
    bucket_secs: float,
    rows: Sequence[tuple[Any, ...]],
) -> StatusCounts:
    """``StatusCounts`` from rows ``(bucket number, stored status, count)`` (SQL backends)."""
    totals: dict[str, int] = {}
    buckets = []
    for b, status, n in sorted(rows):
        word = public_status(status)
        totals[word] = totals.get(word, 0) + int(n)
        buckets.append((from_epoch(start + int(b) * bucket_secs), word, int(n)))
    return StatusCounts(since, until, totals, buckets)
