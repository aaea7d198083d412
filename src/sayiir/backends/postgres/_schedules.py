"""The schedules of ``PostgresBackend`` (``ScheduleStorage``): operations and their mixin.

The queries are in ``schedules.sql``. A write re-sent after a lost connection whose first
attempt committed reports False (the row moved on meanwhile, by our own hand); callers
re-read and carry on, which is what they do when another firer won.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sayiir.backends.postgres._ops import Op, Q, Rows
from sayiir.core.schedules import ScheduleRecord

if TYPE_CHECKING:
    from sayiir.backends.postgres._runner import Runner

__all__ = ["PostgresSchedules"]

T = TypeVar("T")


def _records(rows: Rows) -> list[ScheduleRecord]:
    return [ScheduleRecord.from_row(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]


def put(record: ScheduleRecord, expected_version: int | None) -> Op[bool]:
    params = {
        "id": record.schedule_id,
        "version": record.version,
        "paused": record.paused,
        "fire_at": record.fire_at,
        "body": record.body(),
        "expected": expected_version,
    }
    name = "insert_schedule" if expected_version is None else "update_schedule"
    rows = yield Q(name, params)
    return bool(rows)


def select(name: str, params: dict[str, Any]) -> Op[list[ScheduleRecord]]:
    rows = yield Q(name, params)
    return _records(rows)


def delete(schedule_id: str) -> Op[bool]:
    rows = yield Q("delete_schedule", {"id": schedule_id})
    return bool(rows)


def next_at() -> Op[float | None]:
    rows = yield Q("select_next_schedule_at", {})
    return None if not rows or rows[0][0] is None else float(rows[0][0])


class PostgresSchedules:
    """Mixed into ``PostgresBackend``: runs the operations with its retry loop."""

    _runner: Runner

    def _do(self, doing: str, make: Callable[[], Op[T]]) -> T:
        result: T = self._runner.run(doing, lambda resent: make())
        return result

    def put_schedule(self, record: ScheduleRecord, expected_version: int | None) -> bool:
        return self._do("put_schedule", lambda: put(record, expected_version))

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        found = self._do("get_schedule", lambda: select("select_schedule", {"id": schedule_id}))
        return found[0] if found else None

    def list_schedules(self) -> list[ScheduleRecord]:
        return self._do("list_schedules", lambda: select("select_schedules", {}))

    def delete_schedule(self, schedule_id: str) -> bool:
        return self._do("delete_schedule", lambda: delete(schedule_id))

    def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        params = {"now": now, "limit": limit}
        return self._do("due_schedules", lambda: select("select_due_schedules", params))

    def next_schedule_at(self) -> float | None:
        return self._do("next_schedule_at", next_at)
