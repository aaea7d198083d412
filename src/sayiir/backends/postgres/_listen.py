"""Wake-ups: one LISTEN connection per channel and backend, in a background daemon thread.

Every statement that makes queue work claimable runs ``pg_notify(channel, '')`` (see
``queries.sql``), and a trigger announces each new run and each change of a run's status on
the changes channel (migration 0006); PostgreSQL delivers them when the statement commits.
The listener calls every subscriber's callback with each notification's payload. Callbacks
must not block (workers only set an ``Event``; the web console hands the id to its loop).

The connection is dedicated (never from the pool: a pooled connection is handed to other
callers, and a transaction-mode PgBouncer would drop the LISTEN). When it breaks, the
listener reconnects with jittered exponential backoff and, after every (re)LISTEN, calls the
callbacks once: notifications sent while it was not listening are lost, so subscribers must
look for work then (reliability plan §3.3). NOTIFY is only a latency hint; workers still poll.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from sayiir.backends.postgres._conninfo import Target
from sayiir.backends.postgres._errors import describe

__all__ = ["Listener"]

logger = logging.getLogger("sayiir.backends.postgres")

# Called with the notification's payload, or None after a (re)LISTEN (look at everything).
Callback = Callable[[str | None], None]


class Listener:
    """Calls subscribers when the queue channel is notified; started by the first ``add``.

    ``connect`` opens a new autocommit connection; ``listen`` is the rendered
    ``LISTEN <channel>`` statement.
    """

    first_delay = 0.1
    max_delay = 5.0
    wait_slice = 0.2  # how often the thread checks that it should stop

    def __init__(
        self, connect: Callable[[], psycopg.Connection[Any]], listen: bytes, target: Target
    ) -> None:
        self._connect = connect
        self._listen = listen
        self._target = target
        self._lock = threading.Lock()
        self._callbacks: list[Callback] = []
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self.backend_pid: int | None = None  # of the LISTEN connection, while connected
        self.listens = 0  # successful (re)LISTENs, for tests and diagnostics

    def add(self, callback: Callback) -> Callable[[], None]:
        """Subscribe ``callback``; returns the function that unsubscribes it."""
        with self._lock:
            self._callbacks.append(callback)
            if self._thread is None:
                stop = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(stop,), name="sayiir-listen", daemon=True
                )
                self._thread, self._stop = thread, stop
                thread.start()

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
                last = not self._callbacks
            if last:
                self.close()

        return remove

    def close(self) -> None:
        """Stop listening (subscribers are kept out of it: they get no more calls)."""
        with self._lock:
            thread, stop = self._thread, self._stop
            self._thread = self._stop = None
        if stop is not None:
            stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.wait_slice * 5)

    def _fire(self, stop: threading.Event, payload: str | None = None) -> None:
        if stop.is_set():
            return
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(payload)
            except Exception:
                logger.exception("sayiir queue listener: a wake-up callback failed")

    def _run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            cause = "closed"
            try:
                conn = self._connect()
                conn.execute(self._listen)
                self.backend_pid = conn.info.backend_pid
                self.listens += 1
                if failures:
                    logger.info(
                        "PostgreSQL at %s: queue listener connected again", self._target.where
                    )
                failures = 0
                self._fire(stop)  # anything sent while we were not listening is lost: look now
                while not stop.is_set():
                    for notify in conn.notifies(timeout=self.wait_slice):
                        self._fire(stop, notify.payload or None)
            except Exception as exc:  # a broken connection, or anything else: start over
                failures += 1
                cause = describe(exc, self._target)
            finally:
                self.backend_pid = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            if stop.is_set():
                return
            delay = min(self.max_delay, self.first_delay * 2 ** (failures - 1))
            delay *= random.uniform(0.8, 1.2)
            logger.warning(
                "PostgreSQL at %s: queue listener lost its connection (%s); reconnecting in "
                "%.2fs, workers poll meanwhile",
                self._target.where,
                cause,
                delay,
            )
            stop.wait(delay)
