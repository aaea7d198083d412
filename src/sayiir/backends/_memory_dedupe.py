"""The dedupe keys of ``InMemoryBackend`` (``DedupeStorage``), the reference semantics."""

from __future__ import annotations

import threading

__all__ = ["MemoryDedupe"]


class MemoryDedupe:
    """key -> (holding run, until when), behind a lock."""

    def __init__(self) -> None:
        self._dedupe: dict[str, tuple[str, float]] = {}
        self._dedupe_lock = threading.Lock()

    def take_dedupe_key(self, key: str, instance_id: str, now: float, expires: float) -> str:
        with self._dedupe_lock:
            held = self._dedupe.get(key)
            if held is not None and held[1] > now:
                return held[0]
            self._dedupe[key] = (instance_id, expires)
            return instance_id

    def purge_dedupe_keys(self, now: float, limit: int) -> int:
        with self._dedupe_lock:
            expired = sorted(
                (until, key) for key, (_, until) in self._dedupe.items() if until <= now
            )
            for _, key in expired[:limit]:
                del self._dedupe[key]
            return min(len(expired), limit)
