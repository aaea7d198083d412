"""Idempotent submit with a window: ``WorkflowClient.submit(..., dedupe_key=...)``.

The backend keeps, per key, the run that holds it and until when (``DedupeStorage``). A
submit first takes the key for its own run id (an atomic upsert that only replaces a holder
whose window has passed), then creates the run. A submit that finds the key held returns the
holder's run instead, creating it if its submitter died in between (the key was taken for a
run that must exist), so one key starts one run per window however many submits race.

Keys whose window has passed are purged, so the table holds the keys of the current windows
and not every key ever used: a submit that took a key deletes up to ``PURGE_BATCH`` expired
ones (one probe of the expiry index when there are none); ``sayiir retention`` deletes the
rest in batches.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sayiir.backends.protocol import DedupeStorage
from sayiir.distributed.schedules import seconds
from sayiir.errors import BackendError

__all__ = ["PURGE_BATCH", "holder"]

_ATTEMPTS = 10
# Expired keys a submit deletes when it takes a key: more than the one key it adds, so the
# expired keys drain however fast new ones come.
PURGE_BATCH = 20


def holder(
    storage: Any, key: str, instance_id: str, window: str | float | timedelta, now: float
) -> str:
    """The run that answers a submit with ``key``: ``instance_id`` when it took the key."""
    if not isinstance(key, str) or not key:
        raise ValueError("dedupe_key must be a non-empty string")
    span = seconds(window, "dedupe_window")
    if span <= 0:
        raise ValueError("dedupe_window must be positive (e.g. '24h')")
    if not isinstance(storage, DedupeStorage):
        raise TypeError(f"{type(storage).__name__} does not support dedupe_key")
    for _ in range(_ATTEMPTS):
        found = storage.take_dedupe_key(key, instance_id, now, now + span)
        if found is not None:
            if found == instance_id:  # a key added (or taken over): drain a few expired ones
                storage.purge_dedupe_keys(now, PURGE_BATCH)
            return found
    raise BackendError(f"dedupe key {key!r}: could not be taken nor read, try again")
