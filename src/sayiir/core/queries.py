"""What the operator console and the ``sayiir runs`` CLI read: filters, pages and views.

Every backend answers the same questions (``sayiir.backends.protocol.RunQueries``) with these
frozen records, so the CLI and the web console work the same on memory, SQLite and
PostgreSQL. Lists are paged by *keyset* (the cursor is the sort key of the last row seen):
page 50 costs what page 1 costs, and nothing ever counts a whole table.

Statuses are the public words of ``get_status`` (``in_progress`` for a stored ``running``).

>>> f = RunFilter(status=("failed",), workflow_id="orders")
>>> f.stored_statuses()
('failed',)
>>> RunFilter(status=("in_progress",)).stored_statuses()
('running',)
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "PUBLIC_STATUSES",
    "SORT_COLUMNS",
    "AttemptView",
    "AuditEntry",
    "DefinitionInfo",
    "QueueStats",
    "RunDetail",
    "RunFilter",
    "RunPage",
    "RunSort",
    "RunSummary",
    "SignalView",
    "StatusCounts",
    "StepView",
    "decode_cursor",
    "encode_cursor",
    "from_epoch",
    "preview",
    "public_status",
    "to_epoch",
]

# Public status word -> stored status word.
_STORED = {
    "in_progress": "running",
    "waiting": "waiting",
    "awaiting_signal": "awaiting_signal",
    "paused": "paused",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}
PUBLIC_STATUSES = tuple(_STORED)
SortColumn = Literal["created_at", "updated_at", "instance_id", "workflow_id", "status"]
SORT_COLUMNS: tuple[str, ...] = ("created_at", "updated_at", "instance_id", "workflow_id", "status")


def public_status(stored: str) -> str:
    """The public word of a stored status (``running`` -> ``in_progress``)."""
    return "in_progress" if stored == "running" else stored


def from_epoch(ts: float) -> datetime:
    """Epoch seconds -> an aware UTC datetime (what every view carries)."""
    return datetime.fromtimestamp(ts, tz=UTC)


def to_epoch(dt: datetime) -> float:
    """An aware datetime -> epoch seconds; a naive one is refused (which zone would it be?)."""
    if dt.tzinfo is None:
        raise ValueError(f"{dt!r} has no time zone: pass an aware datetime (tz=UTC)")
    return dt.timestamp()


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a list (or a bulk action) covers; every field narrows, empty means all.

    ``status`` holds public words; ``failed_only`` is ``status=("failed",)`` combined with
    any other status filter. Times are aware datetimes, bounds inclusive of after, exclusive
    of before.
    """

    status: tuple[str, ...] = ()
    workflow_id: str | None = None
    instance_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    failed_only: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.status, str):
            object.__setattr__(self, "status", (self.status,))
        bad = [s for s in self.status if s not in _STORED]
        if bad:
            raise ValueError(f"unknown status {bad[0]!r}: use one of {', '.join(PUBLIC_STATUSES)}")
        for name in ("created_after", "created_before", "updated_after", "updated_before"):
            value = getattr(self, name)
            if value is not None:
                to_epoch(value)  # refuses a naive datetime, naming it

    def stored_statuses(self) -> tuple[str, ...]:
        """The stored status words to match (empty: any); ``failed_only`` narrows to failed.

        A filter that can match nothing (failed_only with other statuses) returns a
        status no run has, so every backend returns nothing the same way.
        """
        wanted = tuple(_STORED[s] for s in self.status)
        if self.failed_only:
            return ("failed",) if not wanted or "failed" in wanted else ("-none-",)
        return wanted

    def epoch_bounds(self) -> dict[str, float | None]:
        """The time bounds as epoch seconds (``None`` when unset), keyed by field name."""
        names = ("created_after", "created_before", "updated_after", "updated_before")
        out: dict[str, float | None] = {}
        for name in names:
            value = getattr(self, name)
            out[name] = None if value is None else to_epoch(value)
        return out


@dataclass(frozen=True, slots=True)
class RunSort:
    """The order of a run list: one listed column, then ``instance_id`` to break ties."""

    column: SortColumn = "created_at"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.column not in SORT_COLUMNS:
            raise ValueError(
                f"cannot sort runs by {self.column!r}: use one of {', '.join(SORT_COLUMNS)}"
            )

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns of the keyset, in order: the sort column, ``created_at`` after a
        status or workflow id (so one index serves filter and order), ``instance_id`` last.

        >>> RunSort("status").key_columns
        ('status', 'created_at', 'instance_id')
        """
        if self.column == "instance_id":
            return ("instance_id",)
        if self.column in ("status", "workflow_id"):
            return (self.column, "created_at", "instance_id")
        return (self.column, "instance_id")

    @property
    def tag(self) -> str:
        """The order's name in a cursor (a cursor of another order is refused)."""
        return f"{self.column}:{'desc' if self.descending else 'asc'}"


def encode_cursor(order: str, key: list[Any]) -> str:
    """The opaque cursor after a row whose sort key is ``key`` (backend-native values), in
    the order named ``order`` (``RunSort.tag``, or ``"steps"``).

    >>> c = encode_cursor(RunSort().tag, [1.5, "run-1"])
    >>> decode_cursor(c, RunSort().tag)
    [1.5, 'run-1']
    """
    doc = {"o": order, "k": key}
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str, order: str) -> list[Any]:
    """The sort key a cursor holds; ``ValueError`` if it is malformed or of another order."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        found, key = doc["o"], doc["k"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            f"invalid cursor {cursor[:40]!r}: pass back the next_cursor of a page"
        ) from None
    if found != order or not isinstance(key, list):
        raise ValueError("this cursor belongs to another sort order: start again without one")
    return key


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of a run list."""

    instance_id: str
    workflow_id: str
    definition_hash: str
    status: str  # public word
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    parent_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunPage:
    """A page of runs; ``next_cursor`` is ``None`` on the last page."""

    runs: list[RunSummary]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One attempt of a step: ``outcome`` is ``completed``, ``failed`` or ``running``.

    ``traceback`` is the stored error text when it spans several lines (the engine stores
    ``"Type: message"`` and, where known, the formatted traceback after it)."""

    attempt: int
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str
    error: str | None = None
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class StepView:
    """One checkpointed (or attempted) step of a run, in the order it started.

    ``kind`` is ``task`` for a task's output, ``marker`` for an engine marker (a timer, a
    route decision, a signal payload). ``status``: ``completed``, ``failed`` (its last
    attempt failed, no output) or ``running``. ``output_preview`` is the decoded output as
    JSON text (else its repr), cut to the preview size; ``output_bytes`` its stored size.
    """

    key: str
    task_id: str | None
    kind: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    attempts: list[AttemptView] = field(default_factory=list)
    output_preview: str | None = None
    output_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class SignalView:
    """A signal event of a run: still buffered (``pending``) or taken by a wait."""

    name: str
    state: Literal["pending", "consumed"]
    payload_preview: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An operator action: who did what to which run, when (``detail`` is JSON-able)."""

    at: datetime
    actor: str
    action: str
    instance_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunDetail:
    """Everything a run page shows; steps come a page at a time (``steps_next_cursor``)."""

    run: RunSummary
    input_preview: str | None
    output_preview: str | None
    steps: list[StepView]
    steps_next_cursor: str | None
    signals: list[SignalView]
    children: list[RunSummary]
    audit: list[AuditEntry]
    reason: str | None = None
    wake_at: datetime | None = None
    signal_name: str | None = None


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """Runs created in ``[window_start, window_end)`` by their status now; ``buckets`` splits
    them by creation time (bucket start, status, count), oldest first."""

    window_start: datetime
    window_end: datetime
    totals: dict[str, int]
    buckets: list[tuple[datetime, str, int]]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The worker queue now: entries ready to claim, entries held, age of the oldest ready."""

    ready: int
    claimed: int
    oldest_ready_age_secs: float | None


@dataclass(frozen=True, slots=True)
class DefinitionInfo:
    """A stored workflow definition (``sayiir.core.graph.definition_json``)."""

    definition_hash: str
    workflow_id: str
    structure: dict[str, Any]
    first_seen: datetime


def preview(value: Any, limit: int) -> str:
    """``value`` as JSON text (else its repr), cut to ``limit`` characters with a marker.

    >>> preview({"a": 1}, 100)
    '{"a": 1}'
    >>> preview("x" * 10, 4)  # 4 characters kept, the marker "…" included
    '"xx… (12 chars)'
    """
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (ValueError, TypeError):  # circular, or a repr that raises
        text = repr(value)
    if len(text) > limit:
        return f"{text[: max(limit - 1, 0)]}… ({len(text)} chars)"
    return text
