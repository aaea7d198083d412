"""Group commit: the writes of concurrent runs on the async pool, several per transaction.

Many runs in flight in one process (``CheckpointingRunner`` on ``PostgresBackend.connect``)
each wait for their own commit, one statement and one WAL flush per step, and queue for a
pool connection between them. Here writes that arrive while others are being committed
wait in a queue; a flusher takes up to ``MAX_GROUP`` of them and runs their statements on
one connection, in one transaction and one pipeline (``_io.agroup``): one round trip, one
checkout and one WAL flush for the lot.

Every guarantee of a single write holds for each write of a group:

* Fencing: each statement keeps its own token and lease checks. A fenced (stale) write
  changes no row and returns none; its caller learns why after the commit, as alone
  (``_ops._refused``), and the other writes of the group are not affected.
* Atomicity of each write: a group commits all its writes or none, and a caller hears of
  its write only after the commit. A group that fails (a statement's error, a lost
  connection, a deadlock with another group) is rolled back, and each of its writes is then
  run on its own, with the retry loop, as a call whose earlier try may have committed
  (``Runner.arun(resent=True)``: the COMMIT may have reached the server before the
  connection broke). So one bad write cannot fail the others.
* Exactly-once checkpoints: the statements are the ones a write runs alone (upserts
  fenced by the token), so running a write again after a group whose outcome is unknown
  changes nothing that was already committed.
* Order: the writes of a group are sorted by run (a stable sort, so one run's writes keep
  their order), so two groups lock their rows in the same order; should they still
  deadlock, the loser falls back to single writes.

Only single-statement writes are grouped (``GROUPED``, and only when their first request
is a prepared statement: a replacing ``create_instance``, or the first run of a new
definition, start otherwise and run alone). Reads and everything else go straight to the
pool. The sync API (one call at a time per thread) is never grouped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

from sayiir.backends.postgres._ops import Q
from sayiir.backends.postgres._runner import driver

if TYPE_CHECKING:
    from sayiir.backends.postgres._ops import Op, Request, Rows
    from sayiir.backends.postgres._runner import Make, Runner

__all__ = ["GROUPED", "MAX_GROUP", "Group"]

T = TypeVar("T")

GROUPED = frozenset({"create_instance", "save_steps", "finish", "record_attempt"})
MAX_GROUP = 128  # writes per transaction: a bound on one group's statement and lock time


class _Alone:
    """The outcome that tells a caller to run its write on its own (its group failed)."""

    __slots__ = ()


_ALONE = _Alone()


class _Item:
    __slots__ = ("future", "key", "op", "request")

    def __init__(self, op: Op[Any], request: Q, future: asyncio.Future[Any]) -> None:
        self.op = op
        self.request = request
        self.future = future
        self.key = str((request.params or {}).get("id", ""))


class _Queue:
    """The writes waiting on one event loop, and how many flushers serve them."""

    __slots__ = ("active", "items", "loop", "tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[_Item] = deque()
        # Counted here, not as len(tasks): a task is removed from ``tasks`` by a callback
        # that runs some time after it ended, and a write queued in between would find no
        # flusher coming (the queue then waited forever; seen with one flusher).
        self.active = 0
        self.tasks: set[asyncio.Task[None]] = set()  # strong references while they run


class Group:
    """The write queue of one backend on the async pool (of the running event loop)."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._queue: _Queue | None = None

    def _limit(self) -> int:
        """Flushers at once: half the pool, leaving connections to reads and other calls."""
        return max(1, int(self._runner.pools.options.max_size) // 2)

    async def run(self, doing: str, make: Make[T]) -> T:
        """``Runner.arun``, with the writes of ``GROUPED`` committed in groups."""
        if doing not in GROUPED:
            return await self._runner.arun(doing, make)
        op = make(False)
        try:
            request: Request = next(op)
        except StopIteration as stop:  # pragma: no cover - every grouped write has a statement
            done: T = stop.value
            return done
        if not isinstance(request, Q) or not request.prepare:
            op.close()  # a transaction of its own, or a definition's insert first: alone
            return await self._runner.arun(doing, make)
        loop = asyncio.get_running_loop()
        queue = self._queue
        if queue is None or queue.loop is not loop:  # a new event loop: start afresh
            queue = self._queue = _Queue(loop)
        future: asyncio.Future[Any] = loop.create_future()
        queue.items.append(_Item(op, request, future))
        if queue.active < self._limit():
            queue.active += 1
            task = loop.create_task(self._flush(queue))
            queue.tasks.add(task)
            task.add_done_callback(queue.tasks.discard)
        outcome = await future
        if outcome is _ALONE:
            return await self._runner.arun(doing, make, resent=True)
        result: T = outcome
        return result

    async def _flush(self, queue: _Queue) -> None:
        """Commit groups while writes wait. Nothing is awaited between the last look at the
        queue and the decrement of ``active``, so a write queued after that look starts a
        flusher of its own."""
        try:
            while queue.items:
                batch = _take(queue.items)
                if not batch:
                    continue
                await self._commit(batch)
        finally:
            queue.active -= 1
            if queue.active == 0 and queue.items:  # this task was cancelled: nobody is left
                batch = list(queue.items)
                queue.items.clear()
                _alone(batch)

    async def _commit(self, batch: list[_Item]) -> None:
        """One group. Whatever fails before its commit, the group's callers each run their
        write alone and meet the failure themselves (with the retry loop); only what is
        not an ``Exception`` (this task cancelled) propagates from here."""
        io = driver()
        try:
            pool = await self._runner.apool()
            conn = await pool.getconn(timeout=pool.timeout)
            try:
                compiled = self._runner.compiled()
                results = await io.agroup(conn, compiled, [item.request for item in batch])
                for item, rows in zip(batch, results, strict=True):
                    await _settle(io, conn, compiled, item, rows)
            finally:
                await pool.putconn(conn)
        except BaseException as exc:
            _alone(batch)  # those answered already (after the commit) keep their answer
            if not isinstance(exc, Exception):
                raise


def _take(items: deque[_Item]) -> list[_Item]:
    """The next group: up to ``MAX_GROUP`` writes whose callers still wait, by run."""
    batch: list[_Item] = []
    while items and len(batch) < MAX_GROUP:
        item = items.popleft()
        if item.future.done():  # its caller was cancelled before the write was sent
            item.op.close()
            continue
        batch.append(item)
    batch.sort(key=lambda item: item.key)
    return batch


async def _settle(io: Any, conn: Any, compiled: Any, item: _Item, rows: Rows) -> None:
    """Finish ``item``'s operation with the rows of its grouped statement (committed): its
    answer, or the statements it still asks for (a refused write asks why), on ``conn``."""
    future, op = item.future, item.op
    try:
        request = op.send(rows)
    except StopIteration as stop:
        _set(future, stop.value)
        return
    except Exception as exc:
        op.close()
        _fail(future, exc)
        return
    try:
        value = await io.aexecute(conn, compiled, op, request)
    except io.Error:
        _set(future, _ALONE)  # what follows the committed write failed: run it again alone
    except Exception as exc:
        _fail(future, exc)
    else:
        _set(future, value)


def _alone(batch: list[_Item]) -> None:
    for item in batch:
        item.op.close()
        _set(item.future, _ALONE)


def _set(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
