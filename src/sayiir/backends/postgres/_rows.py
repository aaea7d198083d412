"""The rows our queries return, read by column name.

Each shape lists, in order, the columns of a SELECT list of ``queries.sql``; the operations
turn a result row into its shape once (``Shape._make``) and read fields by name from then
on. Rows stay plain tuples on the wire (psycopg's default row maker, the cheapest), and a
test checks each shape against its SELECT list (tests/backends/test_postgres_unit.py).
"""

from __future__ import annotations

from typing import NamedTuple
from uuid import UUID

__all__ = [
    "INSTANCE_WIDTH",
    "AdvanceRow",
    "ClaimRow",
    "HeldRow",
    "InstanceRow",
    "LoadRow",
    "RecoverRow",
    "TouchedRow",
]


class InstanceRow(NamedTuple):
    """``_instance_columns``: a run's row, times as epoch seconds."""

    instance_id: str
    workflow_id: str
    definition_hash: str
    status: str
    input: bytes
    output: bytes | None
    error: str | None
    reason: str | None
    cancelled_by: str | None
    paused_by: str | None
    wake_at: float | None
    park_node: str | None
    signal_name: str | None
    request_kind: str | None
    request_reason: str | None
    request_by: str | None
    created_at: float
    updated_at: float
    completed_at: float | None
    distributed: bool
    start_token: UUID | None
    lease_until: float | None
    traceparent: str | None


INSTANCE_WIDTH = len(InstanceRow._fields)


class LoadRow(NamedTuple):
    """``load``, after the instance's columns: its checkpoints and the attempts of the
    tasks it has no checkpoint for, as parallel arrays (``None`` when there are none)."""

    keys: list[str] | None
    outputs: list[bytes] | None
    attempt_keys: list[str] | None
    task_ids: list[str] | None
    attempts: list[int] | None
    statuses: list[str] | None
    started: list[float | None] | None
    finished: list[float | None] | None
    errors: list[str | None] | None
    next_retry: list[float | None] | None
    deadlines: list[float | None] | None
    workers: list[str | None] | None


class TouchedRow(NamedTuple):
    """``_touch`` (``save_steps``, ``record_attempt``): what the engine must obey next."""

    status: str
    reason: str | None
    cancelled_by: str | None
    paused_by: str | None
    request_kind: str | None
    request_reason: str | None
    request_by: str | None


class AdvanceRow(NamedTuple):
    """``advance``: whether the claim was held, the ``_touch`` columns, and the claim
    moved or renewed to the next entry (its attempt; ``None``: none)."""

    held: bool
    status: str  # this and the rest: NULL when not held
    reason: str | None
    cancelled_by: str | None
    paused_by: str | None
    request_kind: str | None
    request_reason: str | None
    request_by: str | None
    definition_hash: str | None
    next_attempt: int | None
    woken: int
    fresh: bool  # the statement's snapshot had every write of the run (see queries.sql)


class RecoverRow(NamedTuple):
    """``advance_recover``: the ``_touch`` columns, and what the first attempt left: the
    attempt of the entry it claimed, and whether the claim's own key is claimed now."""

    status: str
    reason: str | None
    cancelled_by: str | None
    paused_by: str | None
    request_kind: str | None
    request_reason: str | None
    request_by: str | None
    definition_hash: str
    next_attempt: int | None
    key_claimed: bool


class ClaimRow(NamedTuple):
    """``claim``, ``claimed_by_token``: an entry claimed, the worker whose expired lease
    it was taken from (``None``: it was free), and how long it waited since it was ready."""

    instance_id: str
    task_key: str
    attempt: int
    definition_hash: str
    expired_from: str | None
    last_error: str | None
    waited: float | None


class HeldRow(NamedTuple):
    """``heartbeat``: a claim whose lease was extended."""

    instance_id: str
    task_key: str
    attempt: int
    worker_id: str
