"""The requests the interpreter makes of its driver.

The interpreter (``_interpreter``) is a generator: it yields one of these,
the driver performs it (blocking or with ``await``) and sends back the result.
That is how one engine implementation serves both the sync and the async API.

Each effect is typed by its result: ``value = yield from effect`` gives the result
the driver sent back, as the effect's type says (``Store(Storage.load, iid)`` is a
``Store[RunState | None]``), so mypy checks every storage call's name, arguments
and result although the interpreter never holds a storage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from sayiir.backends.protocol import EngineStorage
from sayiir.core.context import TaskExecutionContext
from sayiir.engine._invoke import CallResult

__all__ = ["Call", "Effect", "Effects", "Parallel", "Sleep", "Store", "Yielding"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Effect(Generic[R]):
    """An effect whose result, sent back by the driver, is an ``R``: one of the four below."""

    __slots__ = ()

    def __iter__(self) -> Generator[Effect[Any], Any, R]:
        result: R = yield self
        return result


class Store(Effect[R]):
    """Call the storage operation ``op`` (its name) with ``args`` and ``kwargs``.

    Built from the operation itself, ``Store(Storage.finish, iid, final, steps,
    token=t)`` (``QueueStorage.advance`` for worker writes), so mypy checks the name, the
    arguments and the result type against the protocol; drivers call the method of that
    name on the storage they hold (sync or async: ``AsyncStorage`` has the same names).
    """

    __slots__ = ("args", "kwargs", "op")

    def __init__(
        self,
        operation: Callable[Concatenate[EngineStorage, P], R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        self.op: str = operation.__name__
        self.args: tuple[Any, ...] = args  # as checked above; the driver only passes them on
        self.kwargs: dict[str, Any] = kwargs

    def __repr__(self) -> str:
        return f"Store({self.op}, {self.args!r}, {self.kwargs!r})"


class Call(Effect[CallResult]):
    """Run a user task; the driver sends back a ``CallResult``.

    ``span`` is the attempt's observer scope (``_observe.AttemptScope``), made current
    while the task runs; ``None`` unless an observer is installed."""

    __slots__ = ("arg", "ctx", "fn", "span", "timeout")

    def __init__(
        self,
        fn: Callable[[Any], Any],
        arg: Any,
        ctx: TaskExecutionContext,
        timeout: float | None,
        span: Any = None,
    ) -> None:
        self.fn = fn
        self.arg = arg
        self.ctx = ctx
        self.timeout = timeout
        self.span = span


class Sleep(Effect[None]):
    """Wait (a retry backoff or an in-memory delay) on ``clock`` (a virtual one in tests)."""

    __slots__ = ("clock", "seconds")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.clock = clock


class Parallel(Effect[list[Any]]):
    """Drive several sub-generators concurrently; send back one result per branch.

    Each result is the branch's return value, or the exception that ended it.
    """

    __slots__ = ("branches",)

    def __init__(self, branches: list[Yielding]) -> None:
        self.branches = branches


# A generator of effects returning a ``T`` (what the interpreter and ``_runs`` are made of).
# What the driver sends back is ``Any`` here; each effect's ``__iter__`` types it.
Effects = Generator[Effect[Any], Any, T]
Yielding = Generator[Effect[Any], Any, Any]
