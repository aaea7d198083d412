"""Wake-ups across processes for SQLite workers: SQLite has no LISTEN/NOTIFY.

A ``CommitWatcher`` thread reads ``PRAGMA data_version`` on a connection of its own every
``interval`` seconds: the value changes whenever another connection (of any process) has
committed to the file. Reading it touches only the WAL index in shared memory (no disk I/O,
no lock), so an idle worker costs a few microseconds per tick instead of a claim query, and
learns of new work within ``interval`` rather than a whole ``poll_interval``. A change wakes
the worker, which then claims; a commit that queued nothing costs it one read-only look.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable

__all__ = ["WAKE_INTERVAL", "CommitWatcher"]

WAKE_INTERVAL = 0.005  # seconds between two looks at data_version


class CommitWatcher:
    """Calls ``on_commit`` (which must not block) after each commit by another connection."""

    def __init__(
        self,
        path: str,
        query: str,
        on_commit: Callable[[], None],
        interval: float = WAKE_INTERVAL,
    ) -> None:
        self._path = path
        self._query = query  # PRAGMA data_version
        self._on_commit = on_commit
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sayiir-sqlite-wake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _watch(self) -> None:
        conn = None
        seen = None
        try:
            while not self._stop.wait(self._interval):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path, check_same_thread=False)
                    version = conn.execute(self._query).fetchone()[0]
                except sqlite3.Error:
                    # The file is busy or gone for a moment: the worker's own poll still runs.
                    if conn is not None:
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
                    conn = seen = None
                    continue
                if seen is not None and version != seen:
                    self._on_commit()
                seen = version
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
