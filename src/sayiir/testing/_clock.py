"""The virtual clock: durable timers, signal timeouts, retry backoffs and stored task
deadlines follow it instead of the wall clock, so a 7-day wait takes no time in a test."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sayiir.core.records import Status

__all__ = ["VirtualClock", "to_seconds", "virtual_time"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIMED = (Status.WAITING, Status.AWAITING_SIGNAL)
_MAX_ROUNDS = 1000


def to_seconds(duration: str | float | timedelta) -> float:
    """``"7d"``, ``"10m"``, ``"1.5h"``, ``"250ms"``, a ``timedelta`` or seconds, as seconds.

    >>> to_seconds("7d"), to_seconds("10m"), to_seconds(timedelta(hours=1))
    (604800.0, 600.0, 3600.0)
    """
    if isinstance(duration, timedelta):
        seconds = duration.total_seconds()
    elif isinstance(duration, bool):
        raise TypeError("a duration is a number of seconds, a timedelta or a string like '7d'")
    elif isinstance(duration, int | float):
        seconds = float(duration)
    elif isinstance(duration, str) and (match := _DURATION.match(duration)):
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    else:
        raise ValueError(
            f"invalid duration {duration!r}: expected seconds, a timedelta or a string like "
            "'250ms', '30s', '10m', '2h', '7d', '1w'"
        )
    if not seconds >= 0:
        raise ValueError(f"a duration must be >= 0, not {duration!r} (time only moves forward)")
    return seconds


class _Watched:
    __slots__ = ("instance_id", "resume", "storage")

    def __init__(self, storage: Any, instance_id: str, resume: Callable[[], Any]) -> None:
        self.storage = storage
        self.instance_id = instance_id
        self.resume = resume


class VirtualClock:
    """A clock that moves only when told to (or, with ``auto_skip``, when all a run
    does is wait).

    Call it for the time (epoch seconds, like ``time.time``). Runs started or resumed
    under it (``run_durable_workflow``, ``resume_workflow``, ``DurableEngine``,
    ``CheckpointingRunner``) store ``wake_at`` values and deadlines in its time, on
    every backend. ``advance`` moves it forward and resumes the runs whose timer (a
    delay or a signal timeout) falls due.

    ``auto_skip=True`` (the default): a retry backoff passes at once, and resuming a
    run parked on a delay jumps the clock to its ``wake_at``. With ``auto_skip=False``
    a backoff blocks until another thread calls ``advance``, and a resume before the
    timer leaves the run parked, as in production.

    >>> clock = VirtualClock(start=datetime(2030, 1, 1, tzinfo=UTC))
    >>> clock.now().isoformat()
    '2030-01-01T00:00:00+00:00'
    >>> _ = clock.advance("7d")
    >>> clock.now().isoformat()
    '2030-01-08T00:00:00+00:00'
    """

    def __init__(self, start: float | datetime | None = None, *, auto_skip: bool = True) -> None:
        if isinstance(start, datetime):
            start = start.timestamp()
        self._now = round(time.time() if start is None else float(start), 6)
        self.auto_skip = auto_skip
        self._moved = threading.Condition()
        self._watched: dict[tuple[int, str], _Watched] = {}
        self._sleepers: list[float] = []  # the end of each backoff blocked on this clock

    def __call__(self) -> float:
        return self._now

    def now(self) -> datetime:
        """The current virtual time as an aware UTC ``datetime``."""
        return datetime.fromtimestamp(self._now, tz=UTC)

    def __repr__(self) -> str:
        mode = "auto_skip" if self.auto_skip else "manual"
        return f"VirtualClock({self.now().isoformat()}, {mode})"

    # -- moving ------------------------------------------------------------------------

    def _move_to(self, at: float) -> None:
        with self._moved:
            if at > self._now:
                self._now = at
                self._moved.notify_all()

    def advance(self, duration: str | float | timedelta) -> list[Any]:
        """Move forward by ``duration``; resume every watched run whose timer falls due.

        Returns the statuses of the runs it resumed, in the order it resumed them
        (runs driven by the asyncio ``CheckpointingRunner`` need ``aadvance``).
        """
        self._move_to(self._now + to_seconds(duration))
        return self._fire()

    async def aadvance(self, duration: str | float | timedelta) -> list[Any]:
        """``advance`` that also resumes runs of the asyncio ``CheckpointingRunner``."""
        self._move_to(self._now + to_seconds(duration))
        fired: list[Any] = []
        for _ in range(_MAX_ROUNDS):
            count = len(fired)
            for watched in self._due_order():
                record = watched.storage.get_instance(watched.instance_id)
                if inspect.isawaitable(record):
                    record = await record
                if _due(record, self._now):
                    status = watched.resume()
                    fired.append(await status if inspect.isawaitable(status) else status)
            if len(fired) == count:
                break
        return fired

    def _fire(self) -> list[Any]:
        fired: list[Any] = []
        for _ in range(_MAX_ROUNDS):  # a resumed run may park on a timer that is due too
            count = len(fired)
            for watched in self._due_order():
                record = watched.storage.get_instance(watched.instance_id)
                if inspect.isawaitable(record):  # an asyncio storage: aadvance resumes it
                    if inspect.iscoroutine(record):
                        record.close()
                    continue
                if _due(record, self._now):
                    fired.append(watched.resume())
            if len(fired) == count:
                break
        return fired

    def _due_order(self) -> list[_Watched]:
        return list(self._watched.values())

    # -- engine side (sayiir.engine._hooks) ----------------------------------------------

    def watch(self, storage: Any, instance_id: str, resume: Callable[[], Any]) -> None:
        """Remember a run executed under this clock, so ``advance`` can resume it."""
        self._watched[(id(storage), instance_id)] = _Watched(storage, instance_id, resume)

    def skip_to(self, at: float) -> None:
        """A run is asked to continue and only its timer holds it: jump there (auto_skip)."""
        if self.auto_skip:
            self._move_to(at)

    def sleep(self, seconds: float) -> None:
        """A retry backoff (or an in-memory delay): pass at once (auto_skip), or block
        until ``advance`` from another thread reaches its end."""
        with self._moved:
            target = self._now + seconds
            if self.auto_skip:
                self._now = max(self._now, target)
                self._moved.notify_all()
                return
            self._sleepers.append(target)
            self._moved.notify_all()
            try:
                while self._now < target:
                    self._moved.wait()
            finally:
                self._sleepers.remove(target)

    def wait_for_sleepers(self, count: int = 1, timeout: float = 60.0) -> None:
        """Block until ``count`` threads wait in a backoff on this clock (manual mode):
        then an ``advance`` from the test releases them, with no race."""
        with self._moved:
            blocked = lambda: sum(t > self._now for t in self._sleepers) >= count  # noqa: E731
            if not self._moved.wait_for(blocked, timeout):
                raise TimeoutError(f"{count} sleeper(s) expected on {self!r} after {timeout:g}s")

    async def asleep(self, seconds: float) -> None:
        """``sleep`` for the asyncio driver (never blocks the event loop)."""
        target = self._now + seconds
        if self.auto_skip:
            self._move_to(target)
        while self._now < target:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)


def _due(record: Any, now: float) -> bool:
    return (
        record is not None
        and record.status in _TIMED
        and record.wake_at is not None
        and record.wake_at <= now
    )


@contextmanager
def virtual_time(
    start: float | datetime | None = None, *, auto_skip: bool = True
) -> Iterator[VirtualClock]:
    """Run the block on a ``VirtualClock`` (this thread or asyncio task only).

    >>> with virtual_time() as clock:  # doctest: +SKIP
    ...     run_durable_workflow(wf, "order-42", {"total": 39.0}, backend=backend).status
    ...     clock.advance("10m")  # the delay falls due: the run is resumed
    'waiting'
    """
    from sayiir.testing._harness import install

    clock = VirtualClock(start, auto_skip=auto_skip)
    with install(clock=clock):
        yield clock
