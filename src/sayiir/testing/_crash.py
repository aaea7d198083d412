"""Crash injection: the run dies at a named point, as a killed process would.

A crash point raises ``SimulatedCrash`` (a ``BaseException``: no task or engine code
can swallow it) and marks the engine call dead: every storage operation it still
attempts raises too, so nothing after that point is written. The stored run is left
exactly as a ``kill -9`` at that point would leave it; the next engine call (a
``resume_workflow`` in the same test) is the restarted process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from sayiir.core.records import StepRecord

__all__ = [
    "CrashPoint",
    "SimulatedCrash",
    "crash_after",
    "crash_at_write",
    "crash_before",
    "crash_during",
    "crash_points",
]

# Storage operations that change stored state (every other operation only reads).
WRITES = frozenset(
    {
        "create_instance",
        "save_steps",
        "record_attempt",
        "consume_signal",
        "finish",
        "advance",
        "advance_gated",
        "finish_and_claim",
        "enqueue",
        "request_control",
        "unpause",
        "send_signal",
    }
)


class SimulatedCrash(BaseException):
    """The process "died" at a crash point; nothing after it was written.

    A ``BaseException`` so that task code and the engine let it through, as they would
    let a real crash through (they cannot catch that either).
    """

    def __init__(self, point: str) -> None:
        super().__init__(f"simulated crash at {point} (sayiir.testing)")
        self.point = point


class CrashPoint:
    """Where a run dies: ``before:TASK``, ``during:TASK``, ``after:TASK`` or ``write:N``.

    ``before:TASK``
        just before the task's body runs (earlier checkpoints are written).
    ``during:TASK``
        right after the body returned, before its checkpoint is written: on resume the
        task runs again (steps are at-least-once).
    ``after:TASK``
        right after the write that stores the task's checkpoint (also a signal wait's or
        timer's node id): on resume it is not run again.
    ``write:N``
        instead of the N-th storage write of the engine (1 = creating the run): writes
        1..N-1 happened, write N and everything after it did not.

    Use it as a context manager (``with CrashPoint.parse("after:charge"): ...``) or
    through ``crash_before``/``crash_during``/``crash_after``/``crash_at_write``.
    ``fired`` tells whether the point was reached; ``writes`` counts the writes seen.
    """

    def __init__(self, kind: str, target: str | int) -> None:
        if kind not in ("before", "during", "after", "write"):
            raise ValueError(
                f"unknown crash point kind {kind!r}: use before, during, after or write"
            )
        if kind == "write" and (not isinstance(target, int) or target < 1):
            raise ValueError(f"crash_at_write(n) needs an integer n >= 1, not {target!r}")
        if kind != "write" and (not isinstance(target, str) or not target):
            raise ValueError(f"crash_{kind}(task_id) needs a task id, not {target!r}")
        self.kind = kind
        self.target = target
        self.fired = False
        self.writes = 0
        self._dead = False
        self._lock = threading.Lock()
        self._installed: AbstractContextManager[Any] | None = None

    @classmethod
    def parse(cls, text: str) -> CrashPoint:
        """``"after:charge"``, ``"write:3"`` ... as a ``CrashPoint``."""
        kind, sep, target = text.partition(":")
        if not sep:
            raise ValueError(f"a crash point looks like 'after:TASK' or 'write:N', not {text!r}")
        return cls(kind, int(target) if kind == "write" and target.isdigit() else target)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.target}"

    def __repr__(self) -> str:
        return f"CrashPoint({self.name!r}, fired={self.fired})"

    def __enter__(self) -> CrashPoint:
        from sayiir.testing._harness import install

        self._installed = install(crash=self)
        self._installed.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._installed is not None
        self._installed.__exit__(*exc)
        self._installed = None

    # -- called by the harness -------------------------------------------------------

    def restart(self) -> None:
        """A new engine call: the crashed "process" is gone, this one lives."""
        self._dead = False

    def _die(self) -> None:
        with self._lock:
            self.fired = True
            self._dead = True
        raise SimulatedCrash(self.name)

    def _check(self) -> None:
        if self._dead:
            raise SimulatedCrash(self.name)

    def before_task(self, task_id: str) -> None:
        self._check()
        if not self.fired and self.kind == "before" and self.target == task_id:
            self._die()

    def after_task(self, task_id: str) -> None:
        self._check()
        if not self.fired and self.kind == "during" and self.target == task_id:
            self._die()

    def storage(self, storage: Any) -> Any:
        return _CrashingStorage(storage, self)

    def before_op(self, op: str) -> None:
        self._check()
        if op in WRITES:
            with self._lock:
                self.writes += 1
                due = not self.fired and self.kind == "write" and self.writes == self.target
            if due:
                self._die()

    def after_op(self, op: str, args: Sequence[Any], kwargs: dict[str, Any], result: Any) -> None:
        if self.fired or self.kind != "after" or op not in WRITES:
            return
        if _writes_checkpoint(op, args, kwargs, result, str(self.target)):
            self._die()


def _writes_checkpoint(
    op: str, args: Sequence[Any], kwargs: dict[str, Any], result: Any, target: str
) -> bool:
    """Whether this write stored a checkpoint of ``target`` (a task or node id)."""
    if op == "consume_signal":
        key = args[2] if len(args) > 2 else kwargs.get("key", "")
        return result is not None and _names(key, None, target)
    for value in (*args, *kwargs.values()):
        if isinstance(value, list | tuple):
            for step in value:
                if isinstance(step, StepRecord) and _names(step.key, step.task_id, target):
                    return True
    return False


def _names(key: str, task_id: str | None, target: str) -> bool:
    return task_id == target or key == target or key.endswith("/" + target)


class _CrashingStorage:
    """A storage seen through a crash point: counts writes, dies where told to."""

    def __init__(self, storage: Any, point: CrashPoint) -> None:
        self._storage = storage
        self._point = point
        self.codec = storage.codec

    def __getattr__(self, op: str) -> Any:
        real = getattr(self._storage, op)
        if not callable(real) or op == "renew_lease":
            # A lease is no data of the run: the engine's release after the crash stands for
            # the killed process's lease running out (time compressed, as for timers), so the
            # restarted process may take the run over at once.
            return real
        point = self._point

        def call(*args: Any, **kwargs: Any) -> Any:
            point.before_op(op)
            result = real(*args, **kwargs)
            if hasattr(result, "__await__"):
                return _after_async(point, op, args, kwargs, result)
            point.after_op(op, args, kwargs, result)
            return result

        return call


async def _after_async(
    point: CrashPoint, op: str, args: Sequence[Any], kwargs: dict[str, Any], pending: Any
) -> Any:
    result = await pending
    point.after_op(op, args, kwargs, result)
    return result


def crash_before(task_id: str) -> CrashPoint:
    """Die just before ``task_id``'s body runs.

    >>> with crash_before("ship"):  # doctest: +SKIP
    ...     run_durable_workflow(wf, "order-42", order, backend=backend)
    Traceback (most recent call last):
    SimulatedCrash: simulated crash at before:ship (sayiir.testing)
    """
    return CrashPoint("before", task_id)


def crash_during(task_id: str) -> CrashPoint:
    """Die after ``task_id``'s body returned, before its checkpoint is written."""
    return CrashPoint("during", task_id)


def crash_after(task_id: str) -> CrashPoint:
    """Die right after the write that stores ``task_id``'s checkpoint."""
    return CrashPoint("after", task_id)


def crash_at_write(n: int) -> CrashPoint:
    """Die instead of performing the engine's ``n``-th storage write (1-based)."""
    return CrashPoint("write", n)


def crash_points(workflow: Any, *, writes: int = 0) -> list[str]:
    """Every ``before:``, ``during:`` and ``after:`` point of the workflow's tasks (in
    definition order), then ``write:1`` .. ``write:N``: what to crash a test at.

    >>> crash_points(order_workflow, writes=2)  # doctest: +SKIP
    ['before:charge', 'during:charge', 'after:charge', ..., 'write:1', 'write:2']
    """
    task_ids = list(getattr(workflow, "_task_registry", {}) or {})
    points = [f"{kind}:{t}" for t in task_ids for kind in ("before", "during", "after")]
    return points + [f"write:{n}" for n in range(1, writes + 1)]
