"""Run concurrency limits on PostgreSQL: what operators read (``ConcurrencyStorage``); and
the keys of idempotent submits (``DedupeStorage``).

The limits themselves are enforced by the claim (queries.sql: ``_admissible``, ``_admit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sayiir.backends.postgres._ops import Op, Q
from sayiir.core.limits import ConcurrencyState

if TYPE_CHECKING:
    from sayiir.backends.postgres._runner import Runner

__all__ = ["PostgresLimits"]


def concurrency_state(instance_id: str) -> Op[ConcurrencyState | None]:
    rows = yield Q("concurrency_state", {"id": instance_id})
    if not rows:
        return None
    key, limit, holders = rows[0]
    held = tuple(holders or ())
    return ConcurrencyState(key, int(limit), held, instance_id in held)


class PostgresLimits:
    """Mixed into ``PostgresBackend``: runs the operations with its retry loop."""

    _runner: Runner

    def concurrency_state(self, instance_id: str) -> ConcurrencyState | None:
        state: ConcurrencyState | None = self._runner.run(
            "concurrency_state", lambda resent: concurrency_state(instance_id)
        )
        return state

    def take_dedupe_key(self, key: str, instance_id: str, now: float, expires: float) -> str | None:
        holder: str | None = self._runner.run(
            "take_dedupe_key", lambda resent: take_dedupe_key(key, instance_id, now, expires)
        )
        return holder

    def purge_dedupe_keys(self, now: float, limit: int) -> int:
        n: int = self._runner.run("purge_dedupe_keys", lambda resent: _count_of(
            "purge_dedupe_keys", {"now": now, "limit": limit}))  # fmt: skip
        return n

    def count_expired_dedupe_keys(self, now: float) -> int:
        """How many keys ``purge_dedupe_keys(now, ...)`` would delete (``sayiir retention
        --dry-run``)."""
        n: int = self._runner.run("count_expired_dedupe_keys", lambda resent: _count_of(
            "count_expired_dedupe_keys", {"now": now}))  # fmt: skip
        return n


def _count_of(query: str, params: dict[str, float]) -> Op[int]:
    rows = yield Q(query, params)
    return int(rows[0][0])


def take_dedupe_key(key: str, instance_id: str, now: float, expires: float) -> Op[str | None]:
    params = {"key": key, "run": instance_id, "now": now, "expires": expires}
    rows = yield Q("take_dedupe_key", params)
    return str(rows[0][0]) if rows else None
