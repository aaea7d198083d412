"""Live updates: one change feed per console, fanned out to every open page over SSE.

The feed learns that runs changed in one of two ways:

- **pushed**: a backend with ``subscribe_changes(callback)`` (PostgreSQL: LISTEN/NOTIFY)
  calls back with the changed instance id (``None``: "anything may have changed", after a
  reconnect). No query runs while nothing changes.
- **polled**: otherwise (SQLite, memory) one task per console, not per browser, asks the
  backend every ``poll_interval`` seconds for the runs updated since the last answer (one
  indexed query) and reports their ids.

Changes are batched for ``batch_secs`` (~250 ms) and sent to the pages as one SSE event
``change`` whose data is ``{"ids": [...]}`` (or ``{"ids": null}`` for "anything"); each page
refetches only the parts showing those runs. The feed starts with its first subscriber and
stops with its last, so a console nobody looks at costs nothing (a mounted app gets no
lifespan events, so nothing may depend on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from sayiir.core.queries import RunFilter, RunSort

__all__ = ["ChangeFeed", "sse_stream"]

logger = logging.getLogger("sayiir.ui")

Batch = frozenset[str] | None  # None: anything may have changed
_POLL_LIMIT = 100  # more runs changed than this in one poll: "anything"


class ChangeFeed:
    """Collects run changes and hands batches to subscribers (one queue each)."""

    def __init__(
        self,
        backend: Any,
        *,
        poll_interval: float = 1.0,
        batch_secs: float = 0.25,
        run_sync: Callable[..., Any],
    ) -> None:
        self._backend = backend
        self._poll_interval = poll_interval
        self._batch_secs = batch_secs
        self._run_sync = run_sync  # runs a blocking backend call off the event loop
        self._queues: set[asyncio.Queue[Batch]] = set()
        self._pending: set[str] = set()
        self._anything = False
        self._flush: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.polls = 0  # backend queries made by the poller (tests: idle cost)

    # ------------------------------------------------------------------ subscribers

    @contextlib.asynccontextmanager
    async def subscription(self) -> AsyncIterator[asyncio.Queue[Batch]]:
        queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=16)
        self._queues.add(queue)
        if len(self._queues) == 1:
            await self._start()
        try:
            yield queue
        finally:
            self._queues.discard(queue)
            if not self._queues:
                await self._stop()

    def note(self, instance_id: str | None) -> None:
        """Record a change (on the event loop's thread); flushed after ``batch_secs``."""
        if instance_id is None:
            self._anything = True
        else:
            self._pending.add(instance_id)
        if self._flush is None and self._queues:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(self._batch_secs, self._send)

    def _note_threadsafe(self, instance_id: str | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.note, instance_id)

    def _send(self) -> None:
        self._flush = None
        batch: Batch = None if self._anything else frozenset(self._pending)
        self._pending.clear()
        self._anything = False
        for queue in list(self._queues):
            if queue.full():  # a slow page: collapse what it has not read into "anything"
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                batch = None
            queue.put_nowait(batch)

    # ------------------------------------------------------------------ sources

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        subscribe = getattr(self._backend, "subscribe_changes", None)
        if callable(subscribe):
            self._unsubscribe = await self._run_sync(subscribe, self._note_threadsafe)
        else:
            self._poller = asyncio.create_task(self._poll(), name="sayiir-ui-poll")

    async def _stop(self) -> None:
        if self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            await self._run_sync(unsubscribe)
        if self._poller is not None:
            poller, self._poller = self._poller, None
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    async def _poll(self) -> None:
        since = await self._run_sync(self._latest)
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                since, changed = await self._run_sync(self._changed_since, since)
            except Exception:  # a database hiccup: say so once per poll, keep polling
                logger.warning("sayiir ui: polling for changes failed", exc_info=True)
                continue
            if changed is None:
                self.note(None)
            else:
                for instance_id in changed:
                    self.note(instance_id)

    def _latest(self) -> datetime | None:
        self.polls += 1
        page = self._backend.list_runs(RunFilter(), RunSort("updated_at", True), None, 1)
        return page.runs[0].updated_at if page.runs else None

    def _changed_since(self, since: datetime | None) -> tuple[datetime | None, set[str] | None]:
        """The newest ``updated_at`` now and the ids updated at or after ``since``."""
        self.polls += 1
        page = self._backend.list_runs(
            RunFilter(updated_after=since), RunSort("updated_at", True), None, _POLL_LIMIT
        )
        if not page.runs:
            return since, set()
        newest = page.runs[0].updated_at
        if since is not None and newest <= since:
            return since, set()  # the same rows as last time (the bound is inclusive)
        if page.next_cursor is not None:
            return newest, None
        return newest, {r.instance_id for r in page.runs if since is None or r.updated_at > since}


async def sse_stream(feed: ChangeFeed, keepalive_secs: float = 20.0) -> AsyncIterator[str]:
    """The ``text/event-stream`` body of one page's subscription."""
    async with feed.subscription() as queue:
        yield "retry: 3000\n\n"
        while True:
            try:
                batch = await asyncio.wait_for(queue.get(), keepalive_secs)
            except TimeoutError:
                yield ": keepalive\n\n"  # a comment: keeps proxies from closing the stream
                continue
            ids = None if batch is None else sorted(batch)
            yield f"event: change\ndata: {json.dumps({'ids': ids})}\n\n"
