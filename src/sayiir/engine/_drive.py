"""The two drivers: perform the interpreter's effects by blocking, or with asyncio.

They are deliberately small: everything about workflows lives in the
interpreter and in ``_runs``; a driver only knows how to wait.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sayiir.backends.protocol import AsyncStorage, Storage
from sayiir.engine._effects import Call, Effect, Effects, Parallel, Sleep, Store, Yielding
from sayiir.engine._hooks import asleep, sleep
from sayiir.engine._invoke import call_async, call_sync

__all__ = ["adrive", "drive"]

T = TypeVar("T")
_NOTHING: Any = object()


def drive(gen: Effects[T], storage: Storage | None, first: Any = _NOTHING) -> T:
    """Run ``gen`` to completion, performing effects on this thread; return its value."""
    result: Any = None
    error: BaseException | None = None
    eff = first
    while True:
        if eff is _NOTHING:
            try:
                eff = gen.send(result) if error is None else gen.throw(error)
            except StopIteration as stop:
                value: T = stop.value
                return value
        error = None
        try:
            result = _perform(eff, storage)
        except BaseException as exc:
            error = exc
        eff = _NOTHING


def _perform(eff: Effect[Any], storage: Storage | None) -> Any:
    if isinstance(eff, Store):
        assert storage is not None, "durable effect without a storage"
        # The name of a Storage method, checked where the effect was made (``Store``).
        return getattr(storage, eff.op)(*eff.args, **eff.kwargs)
    if isinstance(eff, Call):
        return call_sync(eff.fn, eff.arg, eff.ctx, eff.timeout, eff.span)
    if isinstance(eff, Sleep):
        sleep(eff.clock, eff.seconds)
        return None
    assert isinstance(eff, Parallel)
    return _parallel(eff.branches, storage)


def _prime(branches: list[Yielding]) -> tuple[list[Any], list[tuple[int, Yielding, Effect[Any]]]]:
    """Advance each branch to its first effect: replayed branches finish right here."""
    results: list[Any] = [None] * len(branches)
    live: list[tuple[int, Yielding, Effect[Any]]] = []
    for i, gen in enumerate(branches):
        try:
            live.append((i, gen, next(gen)))
        except StopIteration as stop:
            results[i] = stop.value
        except Exception as exc:
            results[i] = exc
    return results, live


_BRANCH_THREADS = 64
_branch_pool: ThreadPoolExecutor | None = None
_branch_slots = threading.BoundedSemaphore(_BRANCH_THREADS)
_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _branch_pool
    with _pool_lock:
        if _branch_pool is None:
            _branch_pool = ThreadPoolExecutor(_BRANCH_THREADS, thread_name_prefix="sayiir-branch")
        return _branch_pool


def _reset_after_fork() -> None:
    """In a forked child, start the branch pool afresh.

    Only the forking thread exists in the child: the parent's pool threads are gone, yet the
    pool object believes some are idle (so it would start none), and the slots, the lock and
    the pool's own locks may have been held by threads that will never release them. A new
    pool is made on first use (``os.fork``, multiprocessing's fork start, gunicorn preload).
    """
    global _branch_pool, _branch_slots, _pool_lock
    _branch_pool = None
    _branch_slots = threading.BoundedSemaphore(_BRANCH_THREADS)
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX; there is no fork elsewhere
    os.register_at_fork(after_in_child=_reset_after_fork)


# How long this thread runs branches alone before pool threads join in. Branches of plain
# Python code finish well within it (no thread hand-off at all); a branch that blocks (I/O,
# sleep, a storage write) lets the helpers start the others after this delay.
_HELP_AFTER = 0.0005


def _parallel(branches: list[Yielding], storage: Storage | None) -> list[Any]:
    """Run live branches, this thread first, pool threads joining in when it is held up.

    This thread takes branches one by one from a shared queue. One pool thread waits
    ``_HELP_AFTER`` for them to be done; if some are still queued it takes one, and each
    helper that takes a branch first brings in another helper while branches remain, so
    blocking branches end up running side by side. Trivial branches cost no hand-off.
    A helper starts only when a pool thread is free (``_branch_slots``), and this thread
    runs whatever is left itself, so nested forks never wait on each other for threads.
    """
    results, live = _prime(branches)
    if len(live) == 1:
        i, gen, eff = live[0]
        results[i] = _run_branch(gen, eff, storage)
    elif live:
        _Fork(live, results, storage).run_all()
    return results


_Job = tuple[int, Yielding, Effect[Any]]


class _Fork:
    """The shared queue of one fork's branches (see ``_parallel``)."""

    def __init__(self, jobs: list[_Job], results: list[Any], storage: Storage | None) -> None:
        self.queue = deque(jobs)
        self.results = results
        self.storage = storage
        self.lock = threading.Lock()
        self.settled = threading.Condition(self.lock)
        self.taken_all = threading.Event()
        self.running = 0

    def run_all(self) -> None:
        self.bring_helper(_HELP_AFTER)
        while (job := self.take()) is not None:
            self.run(job)
        self.taken_all.set()
        with self.lock:
            while self.running:
                self.settled.wait()

    def take(self) -> _Job | None:
        with self.lock:
            if not self.queue:
                return None
            self.running += 1
            return self.queue.popleft()

    def run(self, job: _Job) -> None:
        i, gen, eff = job
        self.results[i] = _run_branch(gen, eff, self.storage)
        with self.lock:
            self.running -= 1
            if not self.running:
                self.settled.notify_all()

    def helper(self, delay: float, slots: threading.BoundedSemaphore) -> None:
        try:
            if delay and self.taken_all.wait(delay):
                return
            while (job := self.take()) is not None:
                self.bring_helper(0.0)
                self.run(job)
        finally:
            slots.release()  # the semaphore it came from (a fork may have replaced the global)

    def bring_helper(self, delay: float) -> None:
        slots = _branch_slots
        if self.queue and slots.acquire(blocking=False):
            try:
                _pool().submit(self.helper, delay, slots)
            except RuntimeError:  # the interpreter is shutting down: this thread runs them
                slots.release()


def _run_branch(gen: Yielding, eff: Effect[Any], storage: Storage | None) -> Any:
    try:
        return drive(gen, storage, eff)
    except BaseException as exc:
        return exc


async def adrive(gen: Effects[T], storage: AsyncStorage | None, first: Any = _NOTHING) -> T:
    """Run ``gen`` to completion on the event loop; return its value."""
    result: Any = None
    error: BaseException | None = None
    eff = first
    while True:
        if eff is _NOTHING:
            try:
                eff = gen.send(result) if error is None else gen.throw(error)
            except StopIteration as stop:
                value: T = stop.value
                return value
        error = None
        try:
            result = await _aperform(eff, storage)
        except BaseException as exc:
            error = exc
        eff = _NOTHING


async def _aperform(eff: Effect[Any], storage: AsyncStorage | None) -> Any:
    if isinstance(eff, Store):
        assert storage is not None, "durable effect without a storage"
        # AsyncStorage has every Storage operation under the same name (generated).
        return await getattr(storage, eff.op)(*eff.args, **eff.kwargs)
    if isinstance(eff, Call):
        return await call_async(eff.fn, eff.arg, eff.ctx, eff.timeout, eff.span)
    if isinstance(eff, Sleep):
        await asleep(eff.clock, eff.seconds)
        return None
    assert isinstance(eff, Parallel)
    results, live = _prime(eff.branches)
    done = await asyncio.gather(
        *(adrive(gen, storage, first) for _, gen, first in live), return_exceptions=True
    )
    for (i, _, _), value in zip(live, done, strict=True):
        results[i] = value
    return results
