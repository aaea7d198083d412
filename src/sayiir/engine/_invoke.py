"""Calling user tasks: sync or async, with the task context set and timeouts enforced.

Sync and async tasks go through these few functions, for every driver. Whatever a task
raises, ``BaseException`` included (``SystemExit``, ``KeyboardInterrupt``, its own
``asyncio.CancelledError``), is a failed attempt, as in the reference: it is retried per the
task's policy and then fails the run; it never escapes into the engine, the caller or a
worker thread. Only the cancellation of the coroutine that drives the run (the caller gave
up on it) passes through, as a process exit would.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sayiir.core.context import TaskExecutionContext, current_context

# Results that are certainly not awaitable: skip the (slow) ABC check for them.
_PLAIN = frozenset({str, int, float, bool, type(None), dict, list, tuple})

__all__ = [
    "CallResult",
    "TaskTimeout",
    "await_with_timeout",
    "call_async",
    "call_sync",
    "user_traceback",
]


class TaskTimeout(Exception):
    """A task ran past its timeout; the attempt counts as failed."""

    def __init__(self, task_id: str, seconds: float) -> None:
        super().__init__(f"Task '{task_id}' timed out after {seconds:g}s")


class CallResult:
    """Outcome of one task call: ``ok`` with ``value``, or the exception raised.

    ``text``, when set, is the error text to show instead of the exception's description.
    """

    __slots__ = ("error", "ok", "text", "value")

    def __init__(
        self,
        ok: bool,
        value: Any = None,
        error: BaseException | None = None,
        text: str | None = None,
    ) -> None:
        self.ok = ok
        self.value = value
        self.error = error
        self.text = text


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
    fn: Callable[[Any], Any],
    arg: Any,
    ctx: TaskExecutionContext,
    timeout: float | None,
    span: Any = None,
) -> CallResult:
    """Call a task from a blocking driver; never raises for task errors.

    ``span`` (an ``_observe.AttemptScope``, when observed) is current while the task runs."""
    token = current_context.set(ctx)
    undo = None if span is None else span.activate()
    try:
        if timeout is not None and not inspect.iscoroutinefunction(fn):
            return CallResult(True, _run_with_deadline(fn, arg, ctx))
        value = fn(arg)
        if type(value) not in _PLAIN and inspect.isawaitable(value):
            value = _run_coroutine(value, ctx.task_id, timeout)
        return CallResult(True, value)
    except BaseException as exc:  # whatever the task raised is its failure (module docstring)
        return CallResult(False, error=exc)
    finally:
        if undo is not None:
            undo()
        current_context.reset(token)


async def call_async(
    fn: Callable[[Any], Any],
    arg: Any,
    ctx: TaskExecutionContext,
    timeout: float | None,
    span: Any = None,
) -> CallResult:
    """Call a task from the asyncio driver: coroutines on the loop, sync code in a thread."""
    token = current_context.set(ctx)
    undo = None if span is None else span.activate()
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
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the driving coroutine is cancelled: stop here, as a process exit would
        return CallResult(False, error=exc)  # the task raised it itself: a failure
    except BaseException as exc:
        return CallResult(False, error=exc)
    finally:
        if undo is not None:
            undo()
        current_context.reset(token)


# -- the traceback of a task error -------------------------------------------------------------

_PACKAGE = str(Path(__file__).resolve().parent.parent) + os.sep
_HERE = str(Path(__file__).resolve())
# The functions of this module from which user code is entered (``target``: the threads).
_ENTRIES = frozenset({"call_sync", "call_async", "await_with_timeout", "target"})
_HEADER = "Traceback (most recent call last):\n"


def user_traceback(exc: BaseException) -> str | None:
    """The frames of ``exc``'s traceback that are the user's, formatted; ``None`` if none.

    As the reference shows them: from the task's own frame down, without any frame of
    sayiir's modules (the engine's calls, the codec), without chained exceptions and
    without the final ``Type: message`` line (the error text already starts with it).
    Never raises.
    """
    try:
        stack = traceback.TracebackException(
            type(exc), exc, exc.__traceback__, lookup_lines=True, compact=True
        ).stack
        start = 0
        for i, frame in enumerate(stack):
            if frame.name in _ENTRIES and _resolved(frame.filename) == _HERE:
                start = i + 1
        kept = [f for f in stack[start:] if not _resolved(f.filename).startswith(_PACKAGE)]
        if not kept:
            return None
        return _HEADER + "".join(traceback.StackSummary.from_list(kept).format())
    except Exception:  # formatting a traceback must never be what fails a run
        return None


@functools.lru_cache(maxsize=256)
def _resolved(filename: str) -> str:
    try:
        return str(Path(filename).resolve())
    except (OSError, ValueError):
        return filename
