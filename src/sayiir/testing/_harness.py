"""The hooks object ``sayiir.testing`` installs in the engine (``sayiir.engine._hooks``).

Each ``with`` block of the kit (``virtual_time``, ``mock_task``, ``record_tasks``,
``crash_*``) installs a new ``Harness`` made of the enclosing one plus its own part,
and restores the enclosing one on exit, so the blocks nest in any order.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from sayiir.engine._hooks import ACTIVE

__all__ = ["Harness", "install"]

S = TypeVar("S")
Registry = Mapping[str, Callable[[Any], Any]]


class Harness:
    """A clock, task mocks, task-call logs and a crash plan, for one ``with`` block."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        mocks: Mapping[str, Any] | None = None,
        logs: tuple[Any, ...] = (),
        crash: Any = None,
    ) -> None:
        self.clock = clock
        self.mocks = dict(mocks or {})
        self.logs = logs
        self.crash = crash
        self._wrapped: dict[tuple[str, Any], Callable[[Any], Any]] = {}

    def prepare(self, registry: Registry, storage: S) -> tuple[Registry, S]:
        crash = self.crash
        if crash is not None:
            crash.restart()  # a new engine call is a new process: the crash happened before
            if storage is not None:
                storage = crash.storage(storage)
        if not self.mocks and not self.logs and crash is None:
            return registry, storage
        return _Tasks(registry, self), storage

    def watch(self, storage: Any, instance_id: str, resume: Callable[[], Any]) -> None:
        watch = getattr(self.clock, "watch", None)
        if watch is not None:
            watch(storage, instance_id, resume)

    def task(self, task_id: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``fn`` as the engine calls it here: mocked, logged, with crash points."""
        wrapped = self._wrapped.get((task_id, fn))
        if wrapped is None:
            wrapped = self._wrapped[(task_id, fn)] = self._wrap(task_id, fn)
        return wrapped

    def _wrap(self, task_id: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        mock = self.mocks.get(task_id)
        body = fn if mock is None else mock.bind(fn)
        logs, crash = self.logs, self.crash

        def before(arg: Any) -> None:
            if crash is not None:
                crash.before_task(task_id)
            for log in logs:
                log.add(task_id, arg)

        def after() -> None:
            if crash is not None:
                crash.after_task(task_id)

        if inspect.iscoroutinefunction(body):

            @functools.wraps(fn)
            async def acall(arg: Any) -> Any:
                before(arg)
                result = await body(arg)
                after()
                return result

            return acall

        @functools.wraps(fn)
        def call(arg: Any) -> Any:
            before(arg)
            result = body(arg)
            if inspect.isawaitable(result):
                return _then(result, after)
            after()
            return result

        return call


async def _then(awaitable: Any, after: Callable[[], None]) -> Any:
    result = await awaitable
    after()
    return result


class _Tasks(Mapping[str, Callable[[Any], Any]]):
    """The workflow's task registry seen through a harness (wrappers made on lookup)."""

    def __init__(self, registry: Registry, harness: Harness) -> None:
        self._registry = registry
        self._harness = harness

    def __getitem__(self, task_id: str) -> Callable[[Any], Any]:
        return self._harness.task(task_id, self._registry[task_id])

    def get(self, task_id: str, default: Any = None) -> Any:
        fn = self._registry.get(task_id)
        return default if fn is None else self._harness.task(task_id, fn)

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)


@contextmanager
def install(
    *,
    clock: Callable[[], float] | None = None,
    mock: tuple[str, Any] | None = None,
    log: Any = None,
    crash: Any = None,
) -> Iterator[Harness]:
    """Install the enclosing harness plus one part for the span of the block."""
    outer = ACTIVE.get()
    base = outer if isinstance(outer, Harness) else Harness()
    mocks = dict(base.mocks)
    if mock is not None:
        mocks[mock[0]] = mock[1]
    harness = Harness(
        clock if clock is not None else base.clock,
        mocks,
        (*base.logs, log) if log is not None else base.logs,
        crash if crash is not None else base.crash,
    )
    token = ACTIVE.set(harness)
    try:
        yield harness
    finally:
        ACTIVE.reset(token)
