"""Where ``sayiir.testing`` plugs in: a virtual clock, crash points and task mocks.

Nothing is installed normally, and then the engines use the real clock, storage and
tasks: the cost is one context-variable read per run. ``sayiir.testing`` installs a
``Hooks`` object for the span of a ``with`` block; a context variable (not a global)
keeps it to the thread or asyncio task of that test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

__all__ = ["ACTIVE", "Hooks", "asleep", "reached", "sleep"]

S = TypeVar("S")
Registry = Mapping[str, Callable[[Any], Any]]


class Hooks(Protocol):
    """What the engines ask of an installed test harness."""

    clock: Callable[[], float]

    def prepare(self, registry: Registry, storage: S) -> tuple[Registry, S]:
        """The task functions to call and the storage to write through, for one call
        (mocks and crash points wrap them)."""
        ...

    def watch(self, storage: Any, instance_id: str, resume: Callable[[], Any]) -> None:
        """A run is executed through ``storage``; ``resume()`` continues it when time passes."""
        ...


ACTIVE: ContextVar[Hooks | None] = ContextVar("sayiir_test_hooks", default=None)


def reached(clock: Callable[[], float], at: float) -> bool:
    """Whether ``at`` has come. A virtual clock that skips time jumps there first: a run
    asked to continue while only a timer holds it back has nothing else to wait for."""
    skip = getattr(clock, "skip_to", None)
    if skip is not None:
        skip(at)
    return clock() >= at


def sleep(clock: Callable[[], float], seconds: float) -> None:
    """Wait ``seconds`` of ``clock`` time (a virtual clock moves instead of blocking)."""
    getattr(clock, "sleep", time.sleep)(seconds)


async def asleep(clock: Callable[[], float], seconds: float) -> None:
    """``sleep`` for the asyncio driver."""
    await getattr(clock, "asleep", asyncio.sleep)(seconds)
