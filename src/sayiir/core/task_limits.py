"""Task limits: how many executions of a task run at once, and how often a task may start.

``@task(max_concurrent=N)`` lets at most N executions of the task run at once across every
worker and process sharing a backend; ``@task(rate_limit=RateLimit(n, per))`` lets at most
``n`` executions start in any window of ``per`` seconds. The engine asks the backend before a
task body runs (``TaskLimitStorage``); this module holds the pure parts: the options, the
sliding window of starts, the table the in-memory backend and plain runs keep, and the text
an operator reads (``TaskWait.reason``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from sayiir.core.durations import parse_duration

__all__ = [
    "GateAnswer",
    "GateAsk",
    "LocalTaskLimits",
    "RateLimit",
    "SlotHolder",
    "TaskLimits",
    "TaskWait",
    "answer_gate",
    "rate_wait",
]


class RateLimit:
    """At most ``n`` starts of a task in any window of ``per`` (seconds, a ``timedelta`` or
    ``"1s"``, ``"10m"``), shared by every worker and process of the backend.

    ``key``: a function of the task's input; each value gets a window of its own (one per
    customer, per API token...). ``name``: the bucket's name, for tasks that share one limit
    (by default the task id).

    >>> RateLimit(10, "1s")
    RateLimit(10, per=1.0)
    >>> RateLimit(0, "1s")
    Traceback (most recent call last):
    ValueError: RateLimit(n=0): n is how many starts a period allows, at least 1
    """

    __slots__ = ("key", "n", "name", "per")

    def __init__(
        self,
        n: int,
        per: str | float | timedelta,
        *,
        key: Callable[[Any], Any] | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"RateLimit(n=...) must be an int, not {type(n).__name__}")
        if n < 1:
            raise ValueError(f"RateLimit(n={n}): n is how many starts a period allows, at least 1")
        self.n = n
        self.per = _period(per)
        if key is not None and not callable(key):
            raise TypeError(
                f"RateLimit(key=...) must be a function of the task's input, "
                f"not {type(key).__name__}"
            )
        self.key = key
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError("RateLimit(name=...) must be a non-empty str naming a shared bucket")
        self.name = name

    def bucket(self, task_id: str, value: Any) -> str:
        """The bucket of a start of ``task_id`` on input ``value``.

        >>> RateLimit(5, 60, key=lambda o: o["customer"], name="api").bucket("t", {"customer": 7})
        'api:7'
        """
        base = self.name or task_id
        if self.key is None:
            return base
        try:
            part = self.key(value)
        except Exception as exc:
            raise ValueError(
                f"the rate_limit key of task {task_id!r} raised on this input: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return f"{base}:{part}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RateLimit):
            return NotImplemented
        return (self.n, self.per, self.key, self.name) == (
            other.n,
            other.per,
            other.key,
            other.name,
        )

    def __hash__(self) -> int:
        return hash((self.n, self.per, self.name))

    def __repr__(self) -> str:
        extra = "" if self.name is None else f", name={self.name!r}"
        return f"RateLimit({self.n}, per={self.per!r}{extra})"


def _period(per: str | float | timedelta) -> float:
    if isinstance(per, timedelta):
        seconds = per.total_seconds()
    elif isinstance(per, bool) or not isinstance(per, int | float | str):
        raise TypeError(
            f"RateLimit(per=...) must be seconds, a timedelta or a string like '1s', "
            f"not {type(per).__name__}"
        )
    else:
        seconds = parse_duration(per)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"RateLimit(per={per!r}): the period must be more than 0 seconds")
    return seconds


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """The limits of one task (``@task(max_concurrent=..., rate_limit=...)``)."""

    max_concurrent: int | None = None
    rate_limit: RateLimit | None = None

    @classmethod
    def of(cls, max_concurrent: int | None, rate_limit: RateLimit | None) -> TaskLimits | None:
        """Validate the ``@task`` options; ``None`` when the task has no limit.

        >>> TaskLimits.of(0, None)
        Traceback (most recent call last):
        ValueError: @task(max_concurrent=0): at most how many executions run at once, at least 1
        """
        if max_concurrent is not None:
            if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
                raise TypeError(
                    f"@task(max_concurrent=...) must be an int, not {type(max_concurrent).__name__}"
                )
            if max_concurrent < 1:
                raise ValueError(
                    f"@task(max_concurrent={max_concurrent}): at most how many executions run "
                    "at once, at least 1"
                )
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError(
                "@task(rate_limit=...) must be a sayiir.RateLimit(n, per), "
                f"not {type(rate_limit).__name__}"
            )
        if max_concurrent is None and rate_limit is None:
            return None
        return cls(max_concurrent, rate_limit)


@dataclass(frozen=True, slots=True)
class SlotHolder:
    """Who holds (or asks for) a slot of a task: the step of a run, and the execution.

    ``owner`` is the run's execution token when it runs in-process (the slot lives while that
    execution's lease on the run does), or the key of the worker's queue claim (the slot lives
    while claim ``attempt`` of that entry is held).
    """

    instance_id: str
    step_key: str
    owner: str
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class GateAsk:
    """What a task with limits asks for before its body runs, sent with the worker's write
    that claims the task (``GatedQueueStorage.advance_gated``): one transaction, one
    commit, where the claim, the slot and the start would each cost one.

    ``limit``: a slot of the task's ``max_concurrent`` (``None``: no slot asked);
    ``bucket``: a start in that rate window, at most ``n`` per ``per`` seconds, at ``now``
    (``None``: no start asked).
    """

    task_id: str
    limit: int | None
    bucket: str | None = None
    n: int = 0
    per: float = 0.0
    now: float = 0.0


class GateAnswer(NamedTuple):
    """The answer to a ``GateAsk``: ``slot`` False when the slot was refused (no start was
    then asked); else ``wait``, the seconds until the rate window has a start (0.0: one was
    taken). A slot taken with a start refused is still held: the caller gives it back."""

    slot: bool
    wait: float


def answer_gate(
    ask: GateAsk, take_slot: Callable[[int], bool], take_start: Callable[[GateAsk], float]
) -> GateAnswer:
    """Ask ``ask``'s slot (``take_slot(limit)``), then, if it was taken, its start
    (``take_start(ask)``): the order every storage follows (a refused slot asks no start)."""
    if ask.limit is not None and not take_slot(ask.limit):
        return GateAnswer(False, 0.0)
    if ask.bucket is None:
        return GateAnswer(True, 0.0)
    return GateAnswer(True, take_start(ask))


def rate_wait(starts: Sequence[float], n: int, per: float, now: float) -> float:
    """Seconds until one more start fits (0.0: now): with it, at most ``n`` of ``starts``
    (sorted) lie in any window of ``per`` seconds, both ends included.

    >>> rate_wait([0.0, 0.5], 2, 1.0, 0.8)
    0.200001
    >>> rate_wait([0.0, 0.5], 3, 1.0, 0.8)
    0.0
    """
    recent = len(starts) - bisect.bisect_left(starts, now - per)
    if recent < n:
        return 0.0
    # The start that must leave the window first: the n-th most recent one.
    return round(max(starts[len(starts) - n] + per - now, 0.0) + 1e-6, 6)


@dataclass(frozen=True, slots=True)
class TaskWait:
    """Why a step of a run waits for a task limit (``WorkflowClient.waiting_reason``)."""

    task_id: str
    kind: str  # "slot" or "rate"
    name: str  # the task id ("slot"), the bucket ("rate")
    limit: int  # max_concurrent, or n of the rate limit
    per: float | None = None
    retry_at: float | None = None
    holders: tuple[str, ...] = ()

    def reason(self, now: float) -> str:
        """The operator's text.

        >>> TaskWait("charge", "slot", "charge", 2, holders=("run-7", "run-9")).reason(0)
        "waiting: task 'charge' is at its concurrency limit (2 of 2 held by run-7, run-9)"
        >>> TaskWait("call", "rate", "api", 10, 1.0, 5.3).reason(5.0)
        "waiting: rate limit 'api' (10 per 1s), next token in 0.3s"
        """
        if self.kind == "slot":
            shown = ", ".join(self.holders[:3]) + (", ..." if len(self.holders) > 3 else "")
            by = f" held by {shown}" if shown else ""
            if len(self.holders) < self.limit:  # freed since: the step asks again shortly
                return (
                    f"waiting: task {self.task_id!r} was at its concurrency limit "
                    f"({len(self.holders)} of {self.limit} held now{by}), starting shortly"
                )
            return (
                f"waiting: task {self.task_id!r} is at its concurrency limit "
                f"({len(self.holders)} of {self.limit}{by})"
            )
        per = f"{self.per:g}s" if self.per is not None else "?"
        left = max((self.retry_at or now) - now, 0.0)
        return (
            f"waiting: rate limit {self.name!r} ({self.limit} per {per}), next token in {left:.1f}s"
        )


@dataclass(slots=True)
class _Wait:
    task_id: str
    kind: str
    name: str
    limit: int
    per: float | None
    retry_at: float | None


@dataclass(slots=True)
class LocalTaskLimits:
    """The slots, windows and waits of task limits in one process (``InMemoryBackend``, and
    plain ``run_workflow`` runs). Not locked: the caller holds its own lock."""

    slots: dict[str, dict[int, SlotHolder]] = field(default_factory=dict)
    windows: dict[str, list[float]] = field(default_factory=dict)
    waits: dict[tuple[str, str], _Wait] = field(default_factory=dict)

    def acquire(
        self, task_id: str, limit: int, holder: SlotHolder, alive: Callable[[SlotHolder], bool]
    ) -> bool:
        """Take a slot of ``task_id`` for ``holder`` (it may hold one already): a slot number
        under ``limit`` that is free, or whose holder is no longer ``alive``."""
        held = self.slots.setdefault(task_id, {})
        free: int | None = None
        for number in range(limit):
            other = held.get(number)
            if other is not None and _same(other, holder):
                free = number
                break
            if free is None and (other is None or not alive(other)):
                free = number
        if free is None:
            self.waits[(holder.instance_id, holder.step_key)] = _Wait(
                task_id, "slot", task_id, limit, None, None
            )
            return False
        held[free] = holder
        self.waits.pop((holder.instance_id, holder.step_key), None)
        return True

    def release(self, task_id: str, instance_id: str, step_key: str) -> None:
        held = self.slots.get(task_id)
        if held:
            for number, other in list(held.items()):
                if other.instance_id == instance_id and other.step_key == step_key:
                    del held[number]

    def take(
        self, task_id: str, bucket: str, n: int, per: float, now: float, instance_id: str,
        step_key: str,
    ) -> float:  # fmt: skip
        """A start in ``bucket``'s window now, or the seconds to wait for one."""
        starts = self.windows.setdefault(bucket, [])
        del starts[: bisect.bisect_left(starts, now - per)]
        wait = rate_wait(starts, n, per, now)
        if wait > 0:
            self.waits[(instance_id, step_key)] = _Wait(task_id, "rate", bucket, n, per, now + wait)
            return wait
        bisect.insort(starts, now)
        self.waits.pop((instance_id, step_key), None)
        return 0.0

    def wait_of(self, instance_id: str, alive: Callable[[SlotHolder], bool]) -> TaskWait | None:
        """What a step of ``instance_id`` waits for, if any (with the slots' live holders)."""
        for (iid, _), wait in self.waits.items():
            if iid == instance_id:
                holders: tuple[str, ...] = ()
                if wait.kind == "slot":
                    live = self.slots.get(wait.task_id, {}).values()
                    holders = tuple(sorted(h.instance_id for h in live if alive(h)))
                return TaskWait(
                    wait.task_id, wait.kind, wait.name, wait.limit, wait.per, wait.retry_at,
                    holders,
                )  # fmt: skip
        return None

    def forget(self, instance_id: str) -> None:
        """Drop the waits of a run (it finished or was deleted)."""
        for key in [k for k in self.waits if k[0] == instance_id]:
            del self.waits[key]


def _same(a: SlotHolder, b: SlotHolder) -> bool:
    return a.instance_id == b.instance_id and a.step_key == b.step_key
