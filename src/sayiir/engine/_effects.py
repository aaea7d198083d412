"""The requests the interpreter makes of its driver.

The interpreter (``_interpreter``) is a generator: it yields one of these,
the driver performs it (blocking or with ``await``) and sends back the result.
That is how one engine implementation serves both the sync and the async API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from sayiir.core.context import TaskExecutionContext

__all__ = ["Call", "Effect", "Parallel", "Sleep", "Store", "Yielding"]


class Store:
    """Call ``storage.<op>(*args, **kwargs)`` and send back its result."""

    __slots__ = ("args", "kwargs", "op")

    def __init__(self, op: str, *args: Any, **kwargs: Any) -> None:
        self.op = op
        self.args = args
        self.kwargs = kwargs


class Call:
    """Run a user task; the driver sends back a ``CallResult``."""

    __slots__ = ("arg", "ctx", "fn", "timeout")

    def __init__(
        self,
        fn: Callable[[Any], Any],
        arg: Any,
        ctx: TaskExecutionContext,
        timeout: float | None,
    ) -> None:
        self.fn = fn
        self.arg = arg
        self.ctx = ctx
        self.timeout = timeout


class Sleep:
    """Wait (a retry backoff or an in-memory delay) on ``clock`` (a virtual one in tests)."""

    __slots__ = ("clock", "seconds")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.clock = clock


class Parallel:
    """Drive several sub-generators concurrently; send back one result per branch.

    Each result is the branch's return value, or the exception that ended it.
    """

    __slots__ = ("branches",)

    def __init__(self, branches: list[Yielding]) -> None:
        self.branches = branches


Effect = Store | Call | Sleep | Parallel
Yielding = Generator[Effect, Any, Any]
