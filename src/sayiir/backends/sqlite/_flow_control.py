"""Flow control on ``SqliteBackend``: schedules (``ScheduleStorage``, one row each,
compare-and-set) and the keys of idempotent submits (``DedupeStorage``)."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from sayiir.backends._sqlfiles import load_queries
from sayiir.core.schedules import ScheduleRecord

if TYPE_CHECKING:
    from sayiir.backends.sqlite._connection import Database

__all__ = ["SqliteDedupe", "SqliteSchedules"]

_Q = load_queries("sayiir.backends.sqlite", "flow_control.sql")


def _record(row: tuple[Any, ...]) -> ScheduleRecord:
    return ScheduleRecord.from_row(row[0], row[1], bool(row[2]), row[3], bytes(row[4]))


class SqliteSchedules:
    """Mixed into ``SqliteBackend``: needs its ``_db``."""

    _db: Database

    def put_schedule(self, record: ScheduleRecord, expected_version: int | None) -> bool:
        params = {
            "id": record.schedule_id,
            "version": record.version,
            "paused": int(record.paused),
            "fire_at": record.fire_at,
            "body": record.body(),
            "now": time.time(),
            "expected": expected_version,
        }
        query = _Q["insert_schedule" if expected_version is None else "update_schedule"]

        def write(cur: sqlite3.Cursor) -> bool:
            return cur.execute(query, params).rowcount == 1

        return self._db.write("storing a schedule", write)

    def _read_schedules(
        self, what: str, query: str, params: dict[str, Any]
    ) -> list[ScheduleRecord]:
        def read(cur: sqlite3.Cursor) -> list[ScheduleRecord]:
            return [_record(row) for row in cur.execute(_Q[query], params).fetchall()]

        return self._db.run(what, read, None)

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        found = self._read_schedules("reading a schedule", "select_schedule", {"id": schedule_id})
        return found[0] if found else None

    def list_schedules(self) -> list[ScheduleRecord]:
        return self._read_schedules("listing schedules", "select_schedules", {})

    def delete_schedule(self, schedule_id: str) -> bool:
        def write(cur: sqlite3.Cursor) -> bool:
            return cur.execute(_Q["delete_schedule"], {"id": schedule_id}).rowcount == 1

        return self._db.write("deleting a schedule", write)

    def due_schedules(self, now: float, limit: int) -> list[ScheduleRecord]:
        params = {"now": now, "limit": limit}
        return self._read_schedules("reading due schedules", "select_due_schedules", params)

    def next_schedule_at(self) -> float | None:
        def read(cur: sqlite3.Cursor) -> float | None:
            row = cur.execute(_Q["select_next_schedule_at"]).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return self._db.run("reading the next schedule", read, None)


class SqliteDedupe:
    """Mixed into ``SqliteBackend``: needs its ``_db``."""

    _db: Database

    def take_dedupe_key(self, key: str, instance_id: str, now: float, expires: float) -> str:
        params = {"key": key, "run": instance_id, "now": now, "expires": expires}

        def write(cur: sqlite3.Cursor) -> str:
            cur.execute(_Q["upsert_dedupe_key"], params)
            row = cur.execute(_Q["select_dedupe_key"], params).fetchone()
            return str(row[0])

        return self._db.write("taking a dedupe key", write)

    def purge_dedupe_keys(self, now: float, limit: int) -> int:
        params = {"now": now, "limit": limit}

        def write(cur: sqlite3.Cursor) -> int:
            return cur.execute(_Q["purge_dedupe_keys"], params).rowcount

        return self._db.write("purging dedupe keys", write)
