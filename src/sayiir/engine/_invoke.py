"""Calling user tasks: sync or async, with the task context set and timeouts enforced.

Sync and async tasks go through these few functions, for every driver.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Callable
from typing import Any

from sayiir.core.context import TaskExecutionContext, current_context

# Results that are certainly not awaitable: skip the (slow) ABC check for them.
_PLAIN = frozenset({str, int, float, bool, type(None), dict, list, tuple})

__all__ = ["CallResult", "TaskTimeout", "await_with_timeout", "call_async", "call_sync"]


class TaskTimeout(Exception):
    """A task ran past its timeout; the attempt counts as failed."""

    def __init__(self, task_id: str, seconds: float) -> None:
        super().__init__(f"Task '{task_id}' timed out after {seconds:g}s")


class CallResult:
    """Outcome of one task call: ``ok`` with ``value``, or the exception raised."""

    __slots__ = ("error", "ok", "value")

    def __init__(self, ok: bool, value: Any = None, error: BaseException | None = None) -> None:
        self.ok = ok
        self.value = value
        self.error = error


async def await_with_timeout(awaitable: Any, task_id: str, timeout: float | None) -> Any:
    """Await; past ``timeout`` cancel it and raise ``TaskTimeout`` (not the task's own errors)."""
    if timeout is None:
        return await awaitable
    try:
        async with asyncio.timeout(timeout) as scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise TaskTimeout(task_id, timeout) from None
        raise


def _run_coroutine(awaitable: Any, task_id: str, timeout: float | None) -> Any:
    """Run a coroutine to completion on a fresh loop (a new thread if one is running here)."""

    async def main() -> Any:
        return await await_with_timeout(awaitable, task_id, timeout)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    box: list[Any] = []
    context = contextvars.copy_context()  # the task context travels with the coroutine

    def target() -> None:
        try:
            box.append((True, context.run(asyncio.run, main())))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=target, name="sayiir-async-task", daemon=True)
    thread.start()
    thread.join()
    ok, value = box[0]
    if ok:
        return value
    raise value


def _run_with_deadline(fn: Callable[[Any], Any], arg: Any, ctx: TaskExecutionContext) -> Any:
    """Run a sync task in a daemon thread so the caller can stop waiting at the deadline.

    Python cannot kill the thread: a timed-out task may keep running; its late
    result is ignored.
    """
    timeout = ctx.metadata.timeout_secs
    assert timeout is not None
    box: list[Any] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            result = context.run(fn, arg)
            if inspect.isawaitable(result):
                result = _run_coroutine(result, ctx.task_id, None)
            box.append((True, result))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=target, name=f"sayiir-task-{ctx.task_id}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        raise TaskTimeout(ctx.task_id, timeout)
    ok, value = box[0]
    if ok:
        return value
    raise value


def call_sync(
    fn: Callable[[Any], Any], arg: Any, ctx: TaskExecutionContext, timeout: float | None
) -> CallResult:
    """Call a task from a blocking driver; never raises for task errors."""
    token = current_context.set(ctx)
    try:
        if timeout is not None and not inspect.iscoroutinefunction(fn):
            return CallResult(True, _run_with_deadline(fn, arg, ctx))
        value = fn(arg)
        if type(value) not in _PLAIN and inspect.isawaitable(value):
            value = _run_coroutine(value, ctx.task_id, timeout)
        return CallResult(True, value)
    except Exception as exc:
        return CallResult(False, error=exc)
    finally:
        current_context.reset(token)


async def call_async(
    fn: Callable[[Any], Any], arg: Any, ctx: TaskExecutionContext, timeout: float | None
) -> CallResult:
    """Call a task from the asyncio driver: coroutines on the loop, sync code in a thread."""
    token = current_context.set(ctx)
    try:
        if inspect.iscoroutinefunction(fn):
            awaitable = fn(arg)
        else:
            awaitable = asyncio.to_thread(call_sync, fn, arg, ctx, None)
        value = await await_with_timeout(awaitable, ctx.task_id, timeout)
        if isinstance(value, CallResult):
            return value
        if inspect.isawaitable(value):
            value = await value
        return CallResult(True, value)
    except Exception as exc:
        return CallResult(False, error=exc)
    finally:
        current_context.reset(token)
