"""Task mocks and task-call records, for one test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["TaskCalls", "TaskMock", "mock_task", "record_tasks"]

_UNSET: Any = object()


class TaskMock:
    """What ``mock_task`` installs: the fake (or the real task) and its call records.

    ``calls`` holds the input of every call, in order; ``call_count`` their number.
    """

    def __init__(
        self,
        task_id: str,
        fake: Callable[[Any], Any] | None = None,
        *,
        returns: Any = _UNSET,
        raises: BaseException | type[BaseException] | None = None,
    ) -> None:
        given = sum(x is not None for x in (fake, raises)) + (returns is not _UNSET)
        if given > 1:
            raise ValueError("mock_task takes one of fake, returns= or raises=, not several")
        self.task_id = task_id
        self.fake = fake
        self.returns = returns
        self.raises = raises
        self.calls: list[Any] = []
        self._lock = threading.Lock()

    @property
    def call_count(self) -> int:
        return len(self.calls)

    def __repr__(self) -> str:
        return f"TaskMock({self.task_id!r}, call_count={self.call_count})"

    def bind(self, real: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The function the engine calls instead of ``real`` (which it calls if nothing
        replaces it: a spy that only records)."""
        body = self.fake or real
        if self.returns is not _UNSET or self.raises is not None:

            def body(arg: Any) -> Any:
                if self.raises is not None:
                    raise self.raises
                return self.returns

        def record(arg: Any) -> Any:
            with self._lock:
                self.calls.append(arg)
            return body(arg)

        if _is_async(body):

            async def arecord(arg: Any) -> Any:
                with self._lock:
                    self.calls.append(arg)
                return await body(arg)

            return arecord
        return record


def _is_async(fn: Callable[[Any], Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


@contextmanager
def mock_task(
    task_id: str,
    fake: Callable[[Any], Any] | None = None,
    *,
    returns: Any = _UNSET,
    raises: BaseException | type[BaseException] | None = None,
) -> Iterator[TaskMock]:
    """Replace task ``task_id`` of every workflow run in the block; record its calls.

    The task keeps its id, retries, timeout and metadata: only its body changes. With
    neither ``fake`` nor ``returns``/``raises`` the real body runs and is recorded.

    >>> with mock_task("charge", returns="charged 0") as charge:  # doctest: +SKIP
    ...     run_durable_workflow(wf, "order-42", {"total": 39.0}, backend=backend)
    ...     charge.calls
    [{'total': 39.0}]
    """
    from sayiir.testing._harness import install

    mock = TaskMock(task_id, fake, returns=returns, raises=raises)
    with install(mock=(task_id, mock)):
        yield mock


class TaskCalls:
    """Every task call made in a ``record_tasks`` block: ``(task_id, input)`` in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, task_id: str, arg: Any) -> None:
        with self._lock:
            self.calls.append((task_id, arg))

    def count(self, task_id: str) -> int:
        """How many times ``task_id`` was called."""
        with self._lock:
            return sum(1 for t, _ in self.calls if t == task_id)

    def counts(self) -> dict[str, int]:
        """Calls per task id."""
        out: dict[str, int] = {}
        with self._lock:
            for t, _ in self.calls:
                out[t] = out.get(t, 0) + 1
        return out

    def __repr__(self) -> str:
        return f"TaskCalls({self.counts()!r})"


@contextmanager
def record_tasks() -> Iterator[TaskCalls]:
    """Record every task call (id and input) of the runs in the block.

    >>> with record_tasks() as calls:  # doctest: +SKIP
    ...     run_durable_workflow(wf, "order-42", {"total": 39.0}, backend=backend)
    >>> calls.count("charge")  # doctest: +SKIP
    1
    """
    from sayiir.testing._harness import install

    log = TaskCalls()
    with install(log=log):
        yield log
