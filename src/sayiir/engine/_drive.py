"""The two drivers: perform the interpreter's effects by blocking, or with asyncio.

They are deliberately small: everything about workflows lives in the
interpreter and in ``_runs``; a driver only knows how to wait.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
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
    """Advance each branch to its first effect: replayed branches finish right here (asyncio
    driver: the branches' calls are effects there, so priming never runs a task)."""
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


# How often the watchdog looks at the forks in progress. A fork whose calling thread has not
# moved to its next branch for a whole tick (so it ran one for 0.5 to 1 ms) gets a pool
# thread. Branches of plain Python code finish well within it: no thread hand-off at all.
_TICK = 0.0005
# Ticks without any fork in progress before the watchdog blocks until the next one.
_IDLE_TICKS = 40


class _Watchdog:
    """One daemon thread per process that brings pool threads to held-up forks.

    A fork registers while its calling thread runs branches (a set add, no thread wake-up:
    the watchdog polls while forks come and go, and blocks only after ``_IDLE_TICKS`` idle
    ticks, to be woken by the next fork). The calling thread never hands a branch over
    itself, so CPU-light branches cost no thread switch; a branch that blocks (I/O, sleep, a
    barrier, a slow storage write) is noticed within two ticks and the rest of the fork's
    branches start on pool threads, side by side.
    """

    def __init__(self) -> None:
        self.forks: set[_Fork] = set()
        self.cond = threading.Condition(threading.Lock())
        self.parked = False
        self.thread: threading.Thread | None = None

    def add(self, fork: _Fork) -> None:
        self.forks.add(fork)  # atomic under the GIL; the watchdog reads it with list()
        if self.parked or self.thread is None:
            # Dekker-style: the watchdog sets ``parked`` before it looks at ``forks`` (both
            # under ``cond``), so either it sees this fork or we see it parked and wake it.
            with self.cond:
                if self.thread is None:
                    self.thread = threading.Thread(
                        target=self.loop, name="sayiir-branch-watch", daemon=True
                    )
                    self.thread.start()
                self.cond.notify()

    def loop(self) -> None:
        idle = 0
        while True:
            if idle >= _IDLE_TICKS:
                with self.cond:
                    self.parked = True
                    while not self.forks:
                        self.cond.wait()
                    self.parked = False
                idle = 0
            time.sleep(_TICK)
            forks = list(self.forks)
            if not forks:
                idle += 1
                continue
            idle = 0
            for fork in forks:
                fork.check()


_watchdog = _Watchdog()


def _reset_after_fork() -> None:
    """In a forked child, start the branch pool and the watchdog afresh.

    Only the forking thread exists in the child: the parent's pool threads and watchdog are
    gone, yet the pool object believes some are idle (so it would start none), and the slots,
    the locks and the pool's own locks may have been held by threads that will never release
    them. New ones are made on first use (``os.fork``, multiprocessing's fork start, gunicorn
    preload).
    """
    global _branch_pool, _branch_slots, _pool_lock, _watchdog
    _branch_pool = None
    _branch_slots = threading.BoundedSemaphore(_BRANCH_THREADS)
    _pool_lock = threading.Lock()
    _watchdog = _Watchdog()


if hasattr(os, "register_at_fork"):  # POSIX; there is no fork elsewhere
    os.register_at_fork(after_in_child=_reset_after_fork)


def _parallel(branches: list[Yielding], storage: Storage | None) -> list[Any]:
    """Run the branches, this thread first, pool threads joining in when it is held up.

    The branches are whole generators (the sync engine calls tasks inline in them, so a
    branch never hands its calls back here): this thread takes them one by one from a
    shared queue while the watchdog (``_Watchdog``) looks on. When it finds this thread on
    the same branch for a whole tick, it brings a pool thread, which takes the next branch
    and first brings another while branches remain, so blocking branches end up running side
    by side. A helper starts only when a pool thread is free (``_branch_slots``), and this
    thread runs whatever is left itself, so nested forks never wait on each other for threads.
    """
    if len(branches) == 1:
        return [_run_branch(branches[0], storage)]
    fork = _Fork(branches, storage)
    fork.run_all()
    return fork.results


class _Fork:
    """The shared queue of one fork's branches (see ``_parallel``)."""

    __slots__ = ("count", "finished", "jobs", "latch", "results", "seen", "storage", "taken")

    def __init__(self, branches: list[Yielding], storage: Storage | None) -> None:
        self.jobs = deque(enumerate(branches))
        self.count = len(branches)
        self.results: list[Any] = [None] * self.count
        self.storage = storage
        self.finished = itertools.count(1)  # next() is atomic under the GIL
        # Released by whichever thread finishes the last branch; this thread waits on it.
        self.latch = threading.Lock()
        self.latch.acquire()
        self.taken = 0  # branches taken so far: the watchdog's sign of progress
        self.seen = -1  # ``taken`` at the watchdog's last look

    def run_all(self) -> None:
        watchdog = _watchdog
        watchdog.add(self)
        try:
            self.work(False)
        finally:
            watchdog.forks.discard(self)
        self.latch.acquire()  # the branches pool threads took are done too

    def work(self, helping: bool) -> None:
        jobs = self.jobs
        results = self.results
        storage = self.storage
        while True:
            try:
                i, gen = jobs.popleft()
            except IndexError:
                return
            self.taken += 1
            if helping and jobs:
                self.bring_helper()
            results[i] = _run_branch(gen, storage)
            if next(self.finished) == self.count:
                self.latch.release()

    def check(self) -> None:
        """The watchdog's look: no branch taken since the last one, and some left? Help."""
        taken = self.taken
        if taken == self.seen and self.jobs:
            self.bring_helper()
        self.seen = taken

    def helper(self, slots: threading.BoundedSemaphore) -> None:
        try:
            self.work(True)
        finally:
            slots.release()  # the semaphore it came from (a fork may have replaced the global)

    def bring_helper(self) -> None:
        slots = _branch_slots
        if self.jobs and slots.acquire(blocking=False):
            try:
                _pool().submit(self.helper, slots)
            except RuntimeError:  # the interpreter is shutting down: this thread runs them
                slots.release()


def _run_branch(gen: Yielding, storage: Storage | None) -> Any:
    try:
        return drive(gen, storage)
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
