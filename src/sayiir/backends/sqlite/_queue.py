"""The worker queue on SQLite: the statements of ``QueueStorage``, each on an open cursor.

``SqliteBackend`` runs every function here inside the ``BEGIN IMMEDIATE`` transaction of one
call, so one connection of one process at a time reads and changes the queue: a claim needs no
row locks (PostgreSQL's ``SKIP LOCKED``), and a write made under a claim checks that the claim
is still current and writes in the same transaction, so a fenced-off worker writes nothing.
The semantics are ``InMemoryBackend``'s (the shared contract suite checks them).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sayiir.core.limits import ConcurrencyState
from sayiir.core.records import Claim, QueueItem, lease_expired, queue_priority

__all__ = [
    "claim",
    "claimable",
    "concurrency_state",
    "delete_entry",
    "delete_run",
    "enqueue",
    "heartbeat",
    "held",
    "next_due",
    "release",
    "take_next",
]

Queries = Mapping[str, str]


def _servable(definition_hashes: Sequence[str], tags: Sequence[str]) -> dict[str, str]:
    return {"hashes": json.dumps(list(definition_hashes)), "served": json.dumps(list(tags))}


def enqueue(
    q: Queries,
    cur: sqlite3.Cursor,
    instance_id: str,
    definition_hash: str,
    items: Sequence[QueueItem],
    now: float,
    concurrency: tuple[str, int] | None = None,
) -> bool:
    """Add ``items`` (``InMemoryBackend._enqueue``): a checkpointed key is skipped, a queued one
    keeps its entry (an unclaimed one its earliest due time). True when any was given.
    ``concurrency``: the run's key and limit, for its start entry (a submit's)."""
    if not items:
        return False
    key, limit = concurrency if concurrency is not None else (None, None)
    rows = [
        {
            "instance_id": instance_id,
            "key": item.key,
            "task_id": item.task_id,
            "definition_hash": definition_hash,
            "priority": queue_priority(item.priority),
            "tags": json.dumps(sorted(item.tags)),
            "available_at": item.available_at if item.available_at is not None else now,
            "concurrency_key": key if item.key == "" else None,
            "concurrency_limit": limit if item.key == "" else None,
        }
        for item in items
    ]
    cur.executemany(q["queue_insert"], rows)
    return True


def claimable(
    q: Queries, cur: sqlite3.Cursor, definition_hashes: Sequence[str], tags: Sequence[str]
) -> bool:
    """Whether ``claim`` would find an entry now (a read: no write lock taken)."""
    params = {"now": time.time(), "n": 1, **_servable(definition_hashes, tags)}
    return cur.execute(q["queue_claimable"], params).fetchone() is not None


def claim(
    q: Queries,
    cur: sqlite3.Cursor,
    worker_id: str,
    definition_hashes: Sequence[str],
    tags: Sequence[str],
    limit: int,
    lease_secs: float,
) -> list[Claim]:
    """Take up to ``limit`` claimable entries (``QueueStorage.claim``), in claim order."""
    now = time.time()
    params = {"now": now, "n": limit, **_servable(definition_hashes, tags)}
    rows = cur.execute(q["queue_claimable"], params).fetchall()
    claims = []
    for row in rows:
        entry_id, instance_id, key, attempt, holder, last_error, definition_hash = row[:7]
        concurrency_key, concurrency_limit, needs_slot = row[7:]
        if needs_slot and not _take_slot(q, cur, instance_id, concurrency_key, concurrency_limit):
            continue  # an earlier entry of this claim took the key's last slot: it waits
        if holder is not None:  # taken over: its lease ran out
            last_error = lease_expired(holder, attempt)
        take = {
            "id": entry_id,
            "worker_id": worker_id,
            "lease_expires_at": now + lease_secs,
            "last_error": last_error,
        }
        cur.execute(q["queue_take"], take)
        claims.append(Claim(instance_id, key, attempt + 1, worker_id, definition_hash, last_error))
    return claims


def _take_slot(q: Queries, cur: sqlite3.Cursor, instance_id: str, key: str, limit: int) -> bool:
    """Take a slot of ``key`` for the run when fewer than ``limit`` unfinished runs hold one."""
    ids = {"key": key, "instance_id": instance_id, "limit": limit}
    cur.execute(q["queue_free_slots"], ids)
    return bool(cur.execute(q["queue_take_slot"], ids).rowcount)


def concurrency_state(q: Queries, cur: sqlite3.Cursor, instance_id: str) -> ConcurrencyState | None:
    """``ConcurrencyStorage.concurrency_state``: where a run waiting for its first claim stands."""
    row = cur.execute(q["queue_concurrency_state"], {"instance_id": instance_id}).fetchone()
    if row is None:
        return None
    key, limit, holders = row
    held = tuple(json.loads(holders or "[]"))
    return ConcurrencyState(key, int(limit), held, instance_id in held)


def next_due(
    q: Queries, cur: sqlite3.Cursor, definition_hashes: Sequence[str], tags: Sequence[str]
) -> float | None:
    now = time.time()
    params = {"now": now, **_servable(definition_hashes, tags)}
    (due,) = cur.execute(q["queue_next_due"], params).fetchone()
    return None if due is None else float(due) - now


def _claim_params(claim: Claim) -> dict[str, Any]:
    return {
        "instance_id": claim.instance_id,
        "key": claim.key,
        "attempt": claim.attempt,
        "worker_id": claim.worker_id,
    }


def heartbeat(
    q: Queries, cur: sqlite3.Cursor, claims: Sequence[Claim], lease_secs: float
) -> list[Claim]:
    """Extend the leases still held; return the claims that were lost."""
    until = time.time() + lease_secs
    lost = []
    for c in claims:
        if not cur.execute(
            q["queue_heartbeat"], {**_claim_params(c), "lease_expires_at": until}
        ).rowcount:
            lost.append(c)
    return lost


def held(q: Queries, cur: sqlite3.Cursor, claim: Claim) -> bool:
    """Whether ``claim`` is still the current claim of its entry."""
    found = cur.execute(q["queue_select_entry"], _claim_params(claim)).fetchone()
    return found is not None and found[0] == claim.attempt and found[1] == claim.worker_id


def release(q: Queries, cur: sqlite3.Cursor, claim: Claim, error: str, retry_in: float) -> bool:
    """Give ``claim`` up without an outcome (``QueueStorage.abandon``)."""
    params = {
        **_claim_params(claim),
        "available_at": time.time() + max(retry_in, 0.0),
        "error": error,
    }
    return bool(cur.execute(q["queue_abandon"], params).rowcount)


def delete_entry(q: Queries, cur: sqlite3.Cursor, claim: Claim) -> None:
    cur.execute(q["queue_delete_entry"], {"instance_id": claim.instance_id, "key": claim.key})


def delete_run(q: Queries, cur: sqlite3.Cursor, instance_id: str) -> None:
    cur.execute(q["queue_delete_run"], {"instance_id": instance_id})


def take_next(
    q: Queries,
    cur: sqlite3.Cursor,
    claim: Claim,
    item: QueueItem,
    definition_hash: str,
    lease_secs: float,
) -> Claim | None:
    """``advance(next_item=...)``: the worker holds ``item`` at once: a new entry, or its
    entry when queued, due and never claimed (a spread fork branch nobody took yet). ``None``
    when that key is checkpointed or its entry is not free to take."""
    ids = {"instance_id": claim.instance_id, "key": item.key}
    if cur.execute(q["select_checkpoint"], ids).fetchone() is not None:
        return None
    now = time.time()
    lease = {"worker_id": claim.worker_id, "now": now, "lease_expires_at": now + lease_secs}
    if cur.execute(q["queue_select_entry"], ids).fetchone() is not None:
        if not cur.execute(q["queue_take_entry"], {**ids, **lease}).rowcount:
            return None
        return Claim(claim.instance_id, item.key, 1, claim.worker_id, definition_hash)
    row = {
        **ids,
        **lease,
        "task_id": item.task_id,
        "definition_hash": definition_hash,
        "priority": queue_priority(item.priority),
        "tags": json.dumps(sorted(item.tags)),
    }
    cur.execute(q["queue_insert_claimed"], row)
    return Claim(claim.instance_id, item.key, 1, claim.worker_id, definition_hash)
