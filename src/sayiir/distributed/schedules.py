"""Cron schedules: start a workflow on every tick, exactly once, however many firers run.

A schedule is stored in the backend. Firers (every ``Worker`` by default, or a
``sayiir scheduler`` process, any number of each) call ``fire_due``: for each schedule due,
it decides the tick with a compare-and-set on the schedule's version (one firer wins the
decision), then creates the tick's run under an id derived from the schedule and the tick
(``nightly@2026-12-04T02:00:00Z``): a second creation of that id is a no-op, so a crash
between the decision and the creation, or two firers racing, never make a second run.

Cron expressions are evaluated by cronsim (the ``schedules`` extra), in the schedule's time
zone: a daily ``30 2 * * *`` in ``Europe/Paris`` fires at 03:00 on the day the clocks skip
02:00-03:00 and once (the first 02:30) on the day they repeat it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sayiir.backends.protocol import ScheduleStorage, Storage
from sayiir.core.limits import RunLimits
from sayiir.core.nodes import WorkflowDefinition
from sayiir.core.records import TERMINAL, InstanceRecord, Status
from sayiir.core.schedules import OVERLAP_POLICIES, ScheduleRecord
from sayiir.distributed import limits as _limits
from sayiir.engine import (
    cancel_run,
    check_instance_id,
    drive,
    first_priority,
    new_token,
    resolve,
)
from sayiir.errors import BackendError, WorkflowError

__all__ = [
    "Schedule",
    "ScheduleInfo",
    "Scheduler",
    "backfill",
    "fire_due",
    "run_id",
    "ticks",
]

log = logging.getLogger("sayiir.schedules")

# A buffered tick waits for the previous run to end: how often its schedule is re-checked.
RECHECK_SECS = 1.0
# The most ticks one backfill may start (a typo in a range must not start a million runs).
MAX_BACKFILL = 10_000
# The most decisions fire_due makes for one schedule in one call (then it comes back).
_MAX_STEPS = 100
_MISSED_COUNT_CAP = 100_000
# A backend may store fire_at rounded (PostgreSQL keeps microseconds): a firer that reads it
# back and fires at that time must find the tick due.
_EPSILON = 0.001


def seconds(value: str | float | timedelta, what: str) -> float:
    from sayiir.core.durations import parse_duration

    if isinstance(value, timedelta):
        secs = value.total_seconds()
    elif isinstance(value, str) and value.strip().lower().endswith("d"):
        secs = float(value.strip()[:-1]) * 86400.0
    else:
        secs = parse_duration(value)
    if not secs >= 0:
        raise ValueError(f"{what} must be >= 0, not {value!r}")
    return secs


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError:
        raise ImportError(
            "schedules need the cronsim package: pip install 'sayiir[schedules]'"
        ) from None
    return cronsim


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


def check_cron(cron: str) -> None:
    """Raise ``ValueError`` saying what is wrong with a cron expression."""
    cronsim = _cronsim()
    if not isinstance(cron, str):
        raise TypeError(f"cron must be a string like '*/5 * * * *', not {type(cron).__name__}")
    try:
        cronsim.CronSim(cron, datetime(2000, 1, 1, tzinfo=UTC))
    except cronsim.CronSimError as exc:
        raise ValueError(
            f"invalid cron expression {cron!r}: {exc} (five fields: minute hour day month "
            "weekday, or six with seconds first, e.g. '*/5 * * * *', '0 2 * * 1-5' or "
            "'*/10 * * * * *')"
        ) from None


def ticks(cron: str, timezone: str, after: float) -> Iterator[float]:
    """The ticks of ``cron`` in ``timezone`` strictly after ``after``, as epoch seconds.

    >>> from datetime import datetime, UTC
    >>> start = datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp()
    >>> it = ticks("30 2 * * *", "Europe/Paris", start)
    >>> [datetime.fromtimestamp(next(it), UTC).isoformat() for _ in range(2)]
    ['2026-03-29T01:00:00+00:00', '2026-03-30T00:30:00+00:00']

    (On 2026-03-29 Paris skips 02:00-03:00: the 02:30 tick fires at 03:00 local time.)
    """
    zone = _zone(timezone)
    for moment in _cronsim().CronSim(cron, datetime.fromtimestamp(after, zone)):
        yield moment.timestamp()


def _next_tick(cron: str, timezone: str, after: float) -> float:
    return next(ticks(cron, timezone, after))


def run_id(schedule_id: str, tick: float) -> str:
    """The id of the run a tick starts: the schedule's id and the tick in UTC.

    >>> run_id("nightly", 1796436000.0)
    'nightly@2026-12-05T02:00:00Z'
    """
    return f"{schedule_id}@{datetime.fromtimestamp(tick, UTC):%Y-%m-%dT%H:%M:%SZ}"


def _jitter(record: ScheduleRecord, tick: float) -> float:
    """The same delay for a tick on every firer: from a hash of the schedule and the tick."""
    if record.jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{record.schedule_id}@{tick!r}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * record.jitter


def _fire_at(record: ScheduleRecord, now: float) -> float:
    if record.pending_tick is not None:
        return now
    at = record.next_tick + _jitter(record, record.next_tick)
    if record.buffered_tick is not None:
        at = min(at, now + RECHECK_SECS)
    return at


class Schedule:
    """Start ``workflow`` on every tick of ``cron`` (in ``timezone``), exactly once per tick.

    Register it with ``WorkflowClient(backend).schedule(...)``; workers (or a ``sayiir
    scheduler`` process) fire it. ``id`` defaults to the workflow's id; registering the same id
    again updates the schedule (keeping its place in time if the cron and the time zone did not
    change). ``input`` is the input of every run.

    ``overlap`` says what a tick does while the previous run of the schedule is still active:
    ``"skip"`` (default: the tick is dropped), ``"buffer_one"`` (the tick waits for it to end;
    one tick at most waits, later ones are dropped), ``"allow_all"`` (start anyway),
    ``"cancel_other"`` (cancel it, and start once it has ended) and ``"terminate_other"``
    (cancel it and start at once). ``catchup_window``: ticks missed while no firer ran (a
    deploy, an outage) are still fired if they are at most that old (default ``"1m"``); older
    ones are counted as skipped. ``jitter``: each tick is fired up to that much later (the
    same delay on every firer), to spread many schedules of one minute.

    >>> from sayiir import Flow
    >>> report = Flow("report").then(lambda x: x, name="build").build()
    >>> s = Schedule(report, cron="0 2 * * *", timezone="Europe/Paris", input={"kind": "daily"})
    >>> s.id, s.overlap, s.catchup_window
    ('report', 'skip', 60.0)
    """

    def __init__(
        self,
        workflow: Any,
        cron: str,
        *,
        timezone: str = "UTC",
        input: Any = None,
        id: str | None = None,
        overlap: str = "skip",
        catchup_window: str | float | timedelta = "1m",
        jitter: str | float | timedelta = 0.0,
    ) -> None:
        definition, _ = resolve(workflow, {})
        check_cron(cron)
        _zone(timezone)
        if overlap not in OVERLAP_POLICIES:
            raise ValueError(
                f"unknown overlap policy {overlap!r}: use one of {', '.join(OVERLAP_POLICIES)}"
            )
        self.definition: WorkflowDefinition = definition
        # The workflow's run limits: its runs are limited like submitted ones (the key is
        # computed from ``input`` when the schedule is stored, _limits.concurrency_of).
        self._limits: RunLimits | None = getattr(workflow, "_limits", None)
        self.id = definition.workflow_id if id is None else id
        check_instance_id(run_id(self.id, 0.0))
        self.cron = cron
        self.timezone = timezone
        self.input = input
        self.overlap = overlap
        self.catchup_window = seconds(catchup_window, "catchup_window")
        self.jitter = seconds(jitter, "jitter")

    def __repr__(self) -> str:
        return (
            f"Schedule({self.definition.workflow_id!r}, cron={self.cron!r}, "
            f"timezone={self.timezone!r}, id={self.id!r}, overlap={self.overlap!r})"
        )


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A stored schedule as an operator reads it (``client.schedules()``, ``sayiir
    schedules``): times are aware datetimes in the schedule's time zone."""

    id: str
    workflow_id: str
    cron: str
    timezone: str
    overlap: str
    paused: bool
    next_tick: datetime
    buffered_tick: datetime | None
    last_run_id: str | None
    last_fired_at: datetime | None
    fired: int
    skipped: int
    catchup_window: float
    jitter: float

    @classmethod
    def of(cls, record: ScheduleRecord) -> ScheduleInfo:
        zone = _zone(record.timezone)

        def at(t: float | None) -> datetime | None:
            return None if t is None else datetime.fromtimestamp(t, zone)

        return cls(
            record.schedule_id, record.workflow_id, record.cron, record.timezone,
            record.overlap, record.paused, datetime.fromtimestamp(record.next_tick, zone),
            at(record.buffered_tick), record.last_instance_id, at(record.last_fired_at),
            record.fired, record.skipped, record.catchup_window, record.jitter,
        )  # fmt: skip


def schedule_storage(backend: Any) -> ScheduleStorage:
    if not isinstance(backend, ScheduleStorage):
        raise TypeError(f"{type(backend).__name__} cannot store schedules")
    return backend


# -- registering and operating ----------------------------------------------------------


def register(backend: Any, schedule: Schedule, now: float) -> ScheduleInfo:
    """Create or update the stored schedule (the client's ``schedule``)."""
    store = schedule_storage(backend)
    codec = backend.codec
    data = codec.encode(schedule.input)
    workflow_id = schedule.definition.workflow_id
    concurrency = _limits.concurrency_of(backend, schedule, workflow_id, schedule.input)
    while True:
        old = store.get_schedule(schedule.id)
        same_time = (
            old is not None and old.cron == schedule.cron and old.timezone == schedule.timezone
        )
        record = ScheduleRecord(
            schedule_id=schedule.id,
            workflow_id=schedule.definition.workflow_id,
            definition_hash=schedule.definition.definition_hash,
            priority=first_priority(schedule.definition.nodes),
            cron=schedule.cron,
            timezone=schedule.timezone,
            input=data,
            overlap=schedule.overlap,
            catchup_window=schedule.catchup_window,
            jitter=schedule.jitter,
            concurrency_key=None if concurrency is None else concurrency[0],
            concurrency_limit=0 if concurrency is None else concurrency[1],
            next_tick=_next_tick(schedule.cron, schedule.timezone, now),
            fire_at=0.0,
            created_at=now,
            updated_at=now,
        )
        if old is not None:
            record = replace(
                old, **{k: getattr(record, k) for k in _DEFINITION_FIELDS}, updated_at=now
            )
            if not same_time:
                record.next_tick = _next_tick(schedule.cron, schedule.timezone, now)
            record.version = old.version + 1
        record.fire_at = _fire_at(record, now)
        if store.put_schedule(record, None if old is None else old.version):
            return ScheduleInfo.of(record)


_DEFINITION_FIELDS = (
    "workflow_id", "definition_hash", "priority", "cron", "timezone", "input", "overlap",
    "catchup_window", "jitter", "concurrency_key", "concurrency_limit",
)  # fmt: skip


def _change(backend: Any, schedule_id: str, change: Callable[[ScheduleRecord], None]) -> None:
    store = schedule_storage(backend)
    while True:
        old = store.get_schedule(schedule_id)
        if old is None:
            raise WorkflowError(
                f"no schedule {schedule_id!r}: list them with client.schedules() "
                "or `sayiir schedules URL`"
            )
        new = replace(old, version=old.version + 1)
        change(new)
        if store.put_schedule(new, old.version):
            return


def set_paused(backend: Any, schedule_id: str, paused: bool, now: float) -> None:
    """Pause (no tick fires) or resume (ticks from now on fire; the ones missed while paused
    are skipped, not caught up)."""

    def change(record: ScheduleRecord) -> None:
        if record.paused == paused:
            return
        record.paused = paused
        record.updated_at = now
        if not paused:
            record.next_tick = _next_tick(record.cron, record.timezone, now)
            record.buffered_tick = None
            record.fire_at = _fire_at(record, now)

    _change(backend, schedule_id, change)


def _instance(record: ScheduleRecord, instance_id: str, now: float) -> InstanceRecord:
    # concurrency_*: limited like a submitted run of the workflow (none: no limit).
    return InstanceRecord(
        instance_id, record.workflow_id, record.definition_hash, Status.RUNNING, record.input,
        created_at=now, updated_at=now, distributed=True, priority=record.priority,
        token=new_token(), concurrency_key=record.concurrency_key,
        concurrency_limit=record.concurrency_limit,
    )  # fmt: skip


def _create(storage: Storage, record: ScheduleRecord, instance_id: str, now: float) -> bool:
    """Create the run unless it exists; True when this call created it."""
    return storage.create_instance(_instance(record, instance_id, now), replace=False) is None


def _stored(backend: Any, schedule_id: str) -> ScheduleRecord:
    record = schedule_storage(backend).get_schedule(schedule_id)
    if record is None:
        raise WorkflowError(f"no schedule {schedule_id!r}: list them with client.schedules()")
    return record


def trigger(backend: Any, schedule_id: str, now: float) -> str:
    """Start a run of the schedule now, whatever its overlap policy; return its id."""
    record = _stored(backend, schedule_id)
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    instance_id = f"{schedule_id}@manual-{stamp}"
    _create(backend, record, instance_id, now)
    return instance_id


def backfill(
    backend: Any, schedule_id: str, start: datetime, end: datetime, now: float
) -> list[str]:
    """Start the runs of the ticks from ``start`` to ``end`` (both included) that have none:
    their ids are the ticks' own, so a tick already fired (or backfilled) is not run again.
    Returns the ids of the runs this call created."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(
            "backfill needs aware datetimes (with a tzinfo), e.g. datetime(..., tzinfo=UTC)"
        )
    if end < start:
        raise ValueError(f"backfill range ends ({end}) before it starts ({start})")
    record = _stored(backend, schedule_id)
    chosen: list[float] = []
    for tick in ticks(record.cron, record.timezone, start.timestamp() - 1e-6):
        if tick > end.timestamp():
            break
        chosen.append(tick)
        if len(chosen) > MAX_BACKFILL:
            raise ValueError(
                f"the range holds more than {MAX_BACKFILL} ticks of {record.cron!r}: "
                "backfill a shorter range at a time"
            )
    return [
        run_id(schedule_id, t)
        for t in chosen
        if _create(backend, record, run_id(schedule_id, t), now)
    ]


# -- firing ----------------------------------------------------------------------------------


def fire_due(backend: Any, *, now: float, limit: int = 100) -> list[str]:
    """Fire every tick due at ``now`` (a firer calls this in a loop); return the ids of the
    runs this call created (of several firers racing, each run is created by one)."""
    store = schedule_storage(backend)
    created: list[str] = []
    for record in store.due_schedules(now, limit):
        created += _advance(backend, record, now)
    return created


def _advance(backend: Any, record: ScheduleRecord | None, now: float) -> list[str]:
    store = schedule_storage(backend)
    created: list[str] = []
    for _ in range(_MAX_STEPS):
        if record is None or record.paused:
            break
        new = replace(record, version=record.version + 1, updated_at=now)
        if record.pending_tick is not None:
            instance_id = run_id(record.schedule_id, record.pending_tick)
            if _create(backend, record, instance_id, now):
                created.append(instance_id)
                log.info("schedule %r started run %r", record.schedule_id, instance_id)
            new.pending_tick = None
        elif record.fire_at > now:
            break
        else:
            _decide(backend, new, now)
        new.fire_at = _fire_at(new, now)
        if store.put_schedule(new, record.version):
            record = new
        else:  # another firer changed it first: go on from what it wrote
            record = store.get_schedule(record.schedule_id)
    return created


def _active(backend: Any, instance_id: str | None) -> bool:
    if instance_id is None:
        return False
    found = backend.get_instance(instance_id)
    return found is not None and found.status not in TERMINAL


def _cancel_previous(backend: Any, record: ScheduleRecord) -> None:
    assert record.last_instance_id is not None
    try:
        drive(
            cancel_run(
                record.last_instance_id,
                f"schedule {record.schedule_id!r}: a new tick ({record.overlap})",
                "scheduler",
            ),
            backend,
        )
    except WorkflowError as exc:  # it finished meanwhile: nothing to cancel
        log.info("schedule %r: previous run not cancelled: %s", record.schedule_id, exc)


def _fire(record: ScheduleRecord, tick: float, now: float) -> None:
    record.pending_tick = tick
    record.last_instance_id = run_id(record.schedule_id, tick)
    record.last_fired_at = now
    record.fired += 1


def _decide(backend: Any, record: ScheduleRecord, now: float) -> None:
    """Decide the due tick (or the buffered one) of ``record``, changing it in place."""
    active = _active(backend, record.last_instance_id)
    if record.buffered_tick is not None and not active:
        tick, record.buffered_tick = record.buffered_tick, None
        _fire(record, tick, now)
        return
    tick = record.next_tick
    if tick + _jitter(record, tick) > now + _EPSILON:
        return  # only the buffered tick was due for a re-check: it still waits
    if tick < now - record.catchup_window:
        _skip_missed(record, now)
        return
    record.next_tick = _next_tick(record.cron, record.timezone, tick)
    policy = record.overlap
    if not active or policy == "allow_all":
        _fire(record, tick, now)
    elif policy == "terminate_other":
        _cancel_previous(backend, record)
        _fire(record, tick, now)
    elif policy == "skip":
        record.skipped += 1
    else:  # buffer_one, cancel_other: the tick waits for the previous run to end
        if policy == "cancel_other":
            _cancel_previous(backend, record)
        if record.buffered_tick is None:
            record.buffered_tick = tick
        elif policy == "cancel_other":  # the newest tick waits, the older one is dropped
            record.buffered_tick = tick
            record.skipped += 1
        else:
            record.skipped += 1


def _skip_missed(record: ScheduleRecord, now: float) -> None:
    """Move past the ticks older than the catch-up window, counting them as skipped."""
    oldest = now - record.catchup_window
    count = 0
    tick = record.next_tick
    for tick in ticks(record.cron, record.timezone, record.next_tick):
        count += 1
        if tick >= oldest or count >= _MISSED_COUNT_CAP:
            break
    if tick < oldest:  # a very long stop of a very frequent schedule: jump, count the cap
        tick = _next_tick(record.cron, record.timezone, oldest)
    record.next_tick = tick
    record.skipped += count
    log.warning(
        "schedule %r: %d ticks missed by more than the catch-up window (%gs) skipped",
        record.schedule_id, count, record.catchup_window,
    )  # fmt: skip


class Scheduler:
    """Fires the schedules of one backend until stopped: the loop of ``sayiir scheduler``,
    also run by every ``Worker`` (``schedules=True``, the default). Any number may run.

    >>> from sayiir import InMemoryBackend
    >>> scheduler = Scheduler(InMemoryBackend(), poll_interval=0.05)
    >>> scheduler.start(); scheduler.stop(); scheduler.join()
    """

    def __init__(
        self,
        backend: Any,
        *,
        poll_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        name: str = "scheduler",
    ) -> None:
        if not poll_interval > 0:
            raise ValueError("poll_interval must be positive")
        self.backend = schedule_storage(backend)
        self.poll_interval = poll_interval
        self.clock = clock
        self.name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def fire_once(self) -> float:
        """Fire what is due now; return how long to sleep before the next call."""
        now = self.clock()
        fire_due(self.backend, now=now)
        upcoming = self.backend.next_schedule_at()
        wait = self.poll_interval
        if upcoming is not None:
            wait = min(wait, max(upcoming - self.clock(), 0.0) + 0.002)
        return wait

    def run(self) -> None:
        """Fire until ``stop()``; a database error is logged and retried with a backoff
        (a poll interval, doubling up to 30 s): a worker's own claims decide when an outage
        is long enough to stop it."""
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                wait = self.fire_once()
                backoff = 0.0
            except BackendError as exc:
                backoff = min(max(backoff * 2, self.poll_interval), 30.0)
                log.error(
                    "%s cannot fire schedules (retrying in %.1fs): %s", self.name, backoff, exc
                )
                wait = backoff
            self._stopping.wait(wait)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._guarded, name=f"sayiir-{self.name}", daemon=True
        )
        self._thread.start()

    def _guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self.error = exc
            log.critical("%s stopped on an internal error", self.name, exc_info=exc)

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
