"""The leases of the executions running in this process, renewed by one shared heartbeat.

A run is executed by one execution at a time: the one whose token the run stores, while its
lease lasts (``Storage.take_over``). Every write of the execution renews the lease; while a
task runs longer than that, the heartbeat does. One daemon thread renews the leases of every
sync execution of the process, and one task per event loop those of async ones: never a
thread per run. An execution registers when it starts and leaves when it ends, so a run
that finishes within a third of its lease never wakes the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
import weakref
from typing import Generic, TypeVar

from sayiir.backends.protocol import AsyncStorage, Storage
from sayiir.engine._observe import log_extra

__all__ = ["Held", "ahold", "arelease", "hold", "release"]

S = TypeVar("S", Storage, AsyncStorage)
logger = logging.getLogger("sayiir.engine")
_IDLE = 1.0


class Held(Generic[S]):
    """One execution's hold on a run: what the heartbeat renews, and how it went."""

    __slots__ = ("due", "instance_id", "interval", "lost", "renewals", "storage", "token")

    def __init__(self, storage: S, instance_id: str, token: str, now: float) -> None:
        self.storage: S = storage
        self.instance_id = instance_id
        self.token = token
        self.interval: float = storage.lease_secs / 3.0
        self.due: float = now + self.interval
        self.renewals = 0  # successful renewals by the heartbeat
        self.lost = False  # a renewal found another execution owning the run

    def __repr__(self) -> str:
        return f"Held({self.instance_id!r}, renewals={self.renewals}, lost={self.lost})"


class _Registry(Generic[S]):
    """The executions one heartbeat serves, and when it must wake up next."""

    __slots__ = ("held", "next_wake")

    def __init__(self) -> None:
        self.held: set[Held[S]] = set()
        self.next_wake = math.inf

    def add(self, held: Held[S]) -> bool:
        """Register ``held``; True when the heartbeat sleeps past its first renewal."""
        self.held.add(held)
        return held.due < self.next_wake

    def drop(self, held: Held[S]) -> None:
        self.held.discard(held)

    def take_due(self, now: float) -> tuple[list[Held[S]], float]:
        """The executions whose renewal is due (their next one scheduled), and the seconds
        until the heartbeat must look again. With none registered it still looks every
        ``_IDLE`` seconds: an execution registered meanwhile then wakes it only if its first
        renewal falls before that (a short lease), so short runs cost no thread switch."""
        # Sync executions register without the lock (``hold``): one that registers while this
        # runs finds ``next_wake`` infinite, so it takes the lock and rechecks after this.
        self.next_wake = math.inf
        held = list(self.held)  # a snapshot, for the same reason
        due = [h for h in held if h.due <= now]
        for h in due:
            h.due = now + h.interval
        nxt = min((h.due for h in held), default=now + _IDLE)
        self.next_wake = nxt
        return due, max(nxt - now, 0.0)


def _renewed(held: Held[S], ok: bool) -> None:
    if ok:
        held.renewals += 1
    else:
        held.lost = True


def _failed(held: Held[S], exc: Exception) -> None:
    # The next renewal (or write) tries again; a lease that expires meanwhile lets another
    # resume take the run over, and this execution's next write is then refused.
    logger.warning(
        "sayiir: renewing the lease of run %r failed: %s",
        held.instance_id,
        exc,
        extra=log_extra(held.instance_id),
    )


# -- sync executions: one daemon thread per process ----------------------------------------

# The plain lock is taken directly on the hot path (cheaper than entering the Condition).
_lock = threading.Lock()
_cond = threading.Condition(_lock)
_sync: _Registry[Storage] = _Registry()
_thread: threading.Thread | None = None


def hold(storage: Storage, instance_id: str, token: str) -> Held[Storage]:
    """Register a sync execution of ``instance_id`` under ``token`` until ``release``.

    Adding to (and discarding from) the set is atomic under the GIL and the heartbeat reads a
    snapshot of it, so the lock is taken only to wake or start the heartbeat (a short lease,
    the first execution): most runs end before their first renewal and never wake it.
    """
    held = Held(storage, instance_id, token, time.monotonic())
    registry = _sync
    registry.held.add(held)
    if held.due < registry.next_wake or _thread is None:
        with _lock:
            if held.due < _sync.next_wake:
                _cond.notify()
            if _thread is None:
                _start()
    return held


def release(held: Held[Storage]) -> None:
    _sync.held.discard(held)


def _start() -> None:
    global _thread
    _thread = threading.Thread(target=_beat, name="sayiir-lease-heartbeat", daemon=True)
    _thread.start()


def _beat() -> None:
    while True:
        with _cond:
            due, wait = _sync.take_due(time.monotonic())
            if not due:
                _cond.wait(wait)
                continue
        for held in due:
            try:
                _renewed(held, held.storage.renew_lease(held.instance_id, held.token))
            except Exception as exc:
                _failed(held, exc)


def _after_fork() -> None:
    """A forked child has no heartbeat thread: start afresh (one starts on first use)."""
    global _lock, _cond, _sync, _thread
    _lock = threading.Lock()
    _cond, _sync, _thread = threading.Condition(_lock), _Registry[Storage](), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# -- async executions: one task per event loop ---------------------------------------------


class _AsyncBeat:
    """The heartbeat of one event loop: a task that runs while executions are registered."""

    def __init__(self) -> None:
        self.registry = _Registry[AsyncStorage]()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, held: Held[AsyncStorage]) -> None:
        if self.registry.add(held):
            self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())

    def drop(self, held: Held[AsyncStorage]) -> None:
        self.registry.drop(held)
        if not self.registry.held:
            self.wake.set()  # the task ends now rather than at its next renewal

    async def run(self) -> None:
        while self.registry.held:
            due, wait = self.registry.take_due(time.monotonic())
            for held in due:
                try:
                    _renewed(held, await held.storage.renew_lease(held.instance_id, held.token))
                except Exception as exc:
                    _failed(held, exc)
            if not due:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), wait)


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncBeat] = (
    weakref.WeakKeyDictionary()
)


def ahold(storage: AsyncStorage, instance_id: str, token: str) -> Held[AsyncStorage]:
    """Register an async execution (call it on its event loop) until ``arelease``."""
    loop = asyncio.get_running_loop()
    beat = _loops.get(loop)
    if beat is None:
        beat = _loops[loop] = _AsyncBeat()
    held = Held(storage, instance_id, token, time.monotonic())
    beat.add(held)
    return held


def arelease(held: Held[AsyncStorage]) -> None:
    beat = _loops.get(asyncio.get_running_loop())
    if beat is not None:
        beat.drop(held)
