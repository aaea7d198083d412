"""Task limits on ``SqliteBackend`` (``TaskLimitStorage``, ``TaskWaitStorage``; migration
0010): each operation is one ``BEGIN IMMEDIATE`` transaction, so one process at a time
reads the slots (or a rate window) and writes its own."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from sayiir.backends._sqlfiles import load_queries
from sayiir.core.task_limits import TaskWait, rate_wait

if TYPE_CHECKING:
    from sayiir.backends.sqlite._connection import Database

__all__ = ["SqliteTaskLimits", "take_slot", "take_start"]

_Q = load_queries("sayiir.backends.sqlite", "task_limits.sql")


def _put_wait(cur: sqlite3.Cursor, params: dict[str, Any]) -> None:
    cur.execute(_Q["put_task_wait"], params)


def take_slot(
    cur: sqlite3.Cursor, task_id: str, limit: int, instance_id: str, step_key: str, owner: str,
    attempt: int | None,
) -> bool:  # fmt: skip
    """``acquire_task_slot`` inside the caller's write transaction."""
    params: dict[str, Any] = {
        "task": task_id, "id": instance_id, "key": step_key, "owner": owner,
        "attempt": attempt, "now": time.time(),
    }  # fmt: skip
    rows = cur.execute(_Q["select_task_slots"], params).fetchall()
    mine = [row[0] for row in rows if row[2]]
    blocked = {row[0] for row in rows if row[3] and not row[2]}
    free = next((n for n in range(limit) if n not in blocked), None)
    if mine and mine[0] < limit:
        free = mine[0]
    if free is None:
        _put_wait(cur, {**params, "kind": "slot", "name": task_id, "limit": limit,
                        "per": None, "retry_at": None})  # fmt: skip
        return False
    cur.execute(_Q["put_task_slot"], {**params, "slot": free})
    cur.execute(_Q["forget_task_wait"], params)
    return True


def take_start(
    cur: sqlite3.Cursor, task_id: str, bucket: str, n: int, per: float, now: float,
    instance_id: str, step_key: str,
) -> float:  # fmt: skip
    """``take_rate_token`` inside the caller's write transaction."""
    params: dict[str, Any] = {"bucket": bucket, "id": instance_id, "key": step_key}
    row = cur.execute(_Q["select_rate_window"], params).fetchone()
    starts = sorted(x for x in json.loads(row[0]) if x >= now - per) if row else []
    wait = rate_wait(starts, n, per, now)
    if wait > 0:
        _put_wait(
            cur,
            {**params, "task": task_id, "kind": "rate", "name": bucket, "limit": n,
             "per": per, "retry_at": now + wait, "now": now},
        )  # fmt: skip
        return wait
    starts.append(now)
    starts.sort()
    cur.execute(_Q["put_rate_window"], {**params, "starts": json.dumps(starts)})
    cur.execute(_Q["forget_task_wait"], params)
    return 0.0


class SqliteTaskLimits:
    """Mixed into ``SqliteBackend``: needs its ``_db``."""

    _db: Database

    def acquire_task_slot(
        self,
        task_id: str,
        limit: int,
        instance_id: str,
        step_key: str,
        owner: str,
        attempt: int | None,
    ) -> bool:
        return self._db.write(
            "taking a task slot",
            lambda cur: take_slot(cur, task_id, limit, instance_id, step_key, owner, attempt),
        )

    def release_task_slot(self, task_id: str, instance_id: str, step_key: str) -> None:
        params = {"task": task_id, "id": instance_id, "key": step_key}

        def write(cur: sqlite3.Cursor) -> None:
            cur.execute(_Q["release_task_slot"], params)

        self._db.write("giving a task slot back", write)

    def take_rate_token(
        self,
        task_id: str,
        bucket: str,
        n: int,
        per: float,
        now: float,
        instance_id: str,
        step_key: str,
    ) -> float:
        return self._db.write(
            "taking a rate-limit start",
            lambda cur: take_start(cur, task_id, bucket, n, per, now, instance_id, step_key),
        )

    def task_wait(self, instance_id: str, now: float) -> TaskWait | None:
        def read(cur: sqlite3.Cursor) -> TaskWait | None:
            row = cur.execute(_Q["select_task_wait"], {"id": instance_id}).fetchone()
            if row is None:
                return None
            task_id, kind, name, limit, per, retry_at, step_key = row
            holders: tuple[str, ...] = ()
            if kind == "slot":
                slots = cur.execute(
                    _Q["select_task_slots"],
                    {"task": task_id, "id": instance_id, "key": step_key, "now": time.time()},
                ).fetchall()
                holders = tuple(sorted(r[1] for r in slots if r[3]))
            return TaskWait(task_id, kind, name, int(limit), per, retry_at, holders)

        return self._db.run("reading a task wait", read, None)
