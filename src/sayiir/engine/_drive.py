"""The two drivers: perform the interpreter's effects by blocking, or with asyncio.

They are deliberately small: everything about workflows lives in the
interpreter and in ``_runs``; a driver only knows how to wait.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sayiir.backends.protocol import AsyncStorage, Storage
from sayiir.engine._effects import Call, Effect, Sleep, Store, Yielding
from sayiir.engine._invoke import call_async, call_sync

__all__ = ["adrive", "drive"]

_NOTHING: Any = object()


def drive(gen: Yielding, storage: Storage | None, first: Any = _NOTHING) -> Any:
    """Run ``gen`` to completion, performing effects on this thread; return its value."""
    result: Any = None
    error: BaseException | None = None
    eff = first
    while True:
        if eff is _NOTHING:
            try:
                eff = gen.send(result) if error is None else gen.throw(error)
            except StopIteration as stop:
                return stop.value
        error = None
        try:
            result = _perform(eff, storage)
        except BaseException as exc:
            error = exc
        eff = _NOTHING


def _perform(eff: Effect, storage: Storage | None) -> Any:
    kind = type(eff)
    if kind is Store:
        assert storage is not None, "durable effect without a storage"
        return getattr(storage, eff.op)(*eff.args, **eff.kwargs)  # type: ignore[union-attr]
    if kind is Call:
        return call_sync(eff.fn, eff.arg, eff.ctx, eff.timeout)  # type: ignore[union-attr]
    if kind is Sleep:
        time.sleep(eff.seconds)  # type: ignore[union-attr]
        return None
    return _parallel(eff.branches, storage)  # type: ignore[union-attr]


def _prime(branches: list[Yielding]) -> tuple[list[Any], list[tuple[int, Yielding, Effect]]]:
    """Advance each branch to its first effect: replayed branches finish right here."""
    results: list[Any] = [None] * len(branches)
    live: list[tuple[int, Yielding, Effect]] = []
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


def _parallel(branches: list[Yielding], storage: Storage | None) -> list[Any]:
    """Run live branches on pooled threads (the first one here).

    A branch is handed to the pool only when a pool thread is free for it; otherwise
    this thread runs it after its own. So nested forks can never wait on each other
    for threads (no deadlock), and reusing threads keeps a fork cheap.
    """
    results, live = _prime(branches)

    def run(i: int, gen: Yielding, eff: Effect) -> None:
        try:
            results[i] = drive(gen, storage, eff)
        except BaseException as exc:
            results[i] = exc

    def pooled(i: int, gen: Yielding, eff: Effect) -> None:
        try:
            run(i, gen, eff)
        finally:
            _branch_slots.release()

    futures: list[Future[None]] = []
    inline = live[:1]
    for item in live[1:]:
        if _branch_slots.acquire(blocking=False):
            futures.append(_pool().submit(pooled, *item))
        else:
            inline.append(item)
    for item in inline:
        run(*item)
    for future in futures:
        future.result()
    return results


async def adrive(gen: Yielding, storage: AsyncStorage | None, first: Any = _NOTHING) -> Any:
    """Run ``gen`` to completion on the event loop; return its value."""
    result: Any = None
    error: BaseException | None = None
    eff = first
    while True:
        if eff is _NOTHING:
            try:
                eff = gen.send(result) if error is None else gen.throw(error)
            except StopIteration as stop:
                return stop.value
        error = None
        try:
            result = await _aperform(eff, storage)
        except BaseException as exc:
            error = exc
        eff = _NOTHING


async def _aperform(eff: Effect, storage: AsyncStorage | None) -> Any:
    kind = type(eff)
    if kind is Store:
        assert storage is not None, "durable effect without a storage"
        return await getattr(storage, eff.op)(*eff.args, **eff.kwargs)  # type: ignore[union-attr]
    if kind is Call:
        return await call_async(eff.fn, eff.arg, eff.ctx, eff.timeout)  # type: ignore[union-attr]
    if kind is Sleep:
        await asyncio.sleep(eff.seconds)  # type: ignore[union-attr]
        return None
    results, live = _prime(eff.branches)  # type: ignore[union-attr]
    done = await asyncio.gather(
        *(adrive(gen, storage, first) for _, gen, first in live), return_exceptions=True
    )
    for (i, _, _), value in zip(live, done, strict=True):
        results[i] = value
    return results
