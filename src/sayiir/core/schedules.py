"""The stored state of a schedule, as backends keep it.

A backend stores a schedule as a few columns it can index (``schedule_id``, ``version``,
``paused``, ``fire_at``) and an opaque ``body`` (JSON of the rest, written and read here), so
every backend stores it the same way and the firing logic lives once, in
``sayiir.distributed.schedules``.

``version`` makes every change a compare-and-set: a firer that read version 7 writes version
8 only if the row is still at 7 (``ScheduleStorage.put_schedule``). Of two workers deciding
the same tick at once, one wins; the other re-reads.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["OVERLAP_POLICIES", "ScheduleRecord"]

# What a tick does while the schedule's previous run is still active (docs/schedules.md).
OVERLAP_POLICIES = ("skip", "buffer_one", "allow_all", "cancel_other", "terminate_other")


@dataclass(slots=True)
class ScheduleRecord:
    """One schedule: its definition (what to start, when) and its cursor (what was fired).

    Times are epoch seconds (UTC). ``next_tick`` is the earliest tick not decided yet;
    ``fire_at`` is when it falls due (the tick plus its jitter, or sooner when a buffered
    tick waits for the previous run to end). ``pending_tick``: a tick decided (the cursor
    moved past it) whose run may not be created yet: whoever sees it creates the run
    (idempotent: the run id is derived from the tick) and clears it.
    """

    schedule_id: str
    workflow_id: str
    definition_hash: str
    priority: int
    cron: str
    timezone: str
    input: bytes
    overlap: str
    catchup_window: float
    jitter: float
    next_tick: float
    fire_at: float
    paused: bool = False
    pending_tick: float | None = None
    buffered_tick: float | None = None
    last_instance_id: str | None = None
    last_fired_at: float | None = None
    fired: int = 0
    skipped: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 1
    # The run limit of the schedule's runs (sayiir.core.limits): the workflow's concurrency
    # key, computed from the schedule's input when it was stored, and its limit.
    concurrency_key: str | None = None
    concurrency_limit: int = 0

    def body(self) -> bytes:
        """Everything but the indexed columns, as JSON (what the backends store)."""
        data = asdict(self)
        for column in ("schedule_id", "version", "paused", "fire_at"):
            del data[column]
        data["input"] = base64.b64encode(self.input).decode("ascii")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_row(
        cls, schedule_id: str, version: int, paused: bool, fire_at: float, body: bytes
    ) -> ScheduleRecord:
        data: dict[str, Any] = json.loads(body)
        data["input"] = base64.b64decode(data["input"])
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in known}  # fields of a newer release
        return cls(
            schedule_id=schedule_id,
            version=int(version),
            paused=bool(paused),
            fire_at=float(fire_at),
            **kept,
        )
