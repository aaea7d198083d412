"""The schedules of ``InMemoryBackend`` (``ScheduleStorage``), the reference semantics."""

from __future__ import annotations

import threading
from dataclasses import replace

from sayiir.core.schedules import ScheduleRecord

__all__ = ["MemorySchedules"]


class MemorySchedules:
    """A dict of schedule records behind a lock; records go in and out as copies."""

    def __init__(self) -> None:
        self._schedules: dict[str, ScheduleRecord] = {}
        self._schedules_lock = threading.Lock()

    def put_schedule(self, record: ScheduleRecord, expected_version: int | None) -> bool:
        with self._schedules_lock:
            current = self._schedules.get(record.schedule_id)
            if expected_version is None:
                if current is not None:
                    return False
            elif current is None or current.version != expected_version:
                return False
            self._schedules[record.schedule_id] = replace(record)
            return True

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        with self._schedules_lock:
            found = self._schedules.get(schedule_id)
            return None if found is None else replace(found)

    def list_schedules(self) -> list[ScheduleRecord]:
        with self._schedules_lock:
            return [replace(self._schedules[k]) for k in sorted(self._schedules)]

    def delete_schedule(self, schedule_id: str) -> bool:
        with self._schedules_lock:
            return self._schedules.pop(schedule_id, None) is not None

    def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        with self._schedules_lock:
            due = [r for r in self._schedules.values() if not r.paused and r.fire_at <= now]
            due.sort(key=lambda r: (r.fire_at, r.schedule_id))
            return [replace(r) for r in due[:limit]]

    def next_schedule_at(self) -> float | None:
        with self._schedules_lock:
            return min((r.fire_at for r in self._schedules.values() if not r.paused), default=None)
