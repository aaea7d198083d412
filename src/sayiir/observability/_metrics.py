"""sayiir's metrics on the OpenTelemetry metrics API (docs/observability.md lists them).

Labels are low-cardinality on purpose: the workflow id, the task id and the outcome; never an
instance id (one time series per run would swamp any metrics store).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from sayiir.core.queries import QueueStats

__all__ = ["Instruments", "QueueGauges"]

_SCOPE = "sayiir"
# Bucket boundaries in seconds (the SDK's default ones are meant for milliseconds): tasks and
# queue waits from milliseconds to an hour; runs, which may wait on timers, up to a week.
_TASK_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
)
_RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
_RUN_COUNTERS = {"completed", "failed", "cancelled"}
_TASK_COUNTERS = {"completed": "completed", "failed": "failed", "retry": "retried"}


class _Counts:
    """Cumulative counts by label set, reported by an observable counter at collection time:
    counting a run or an attempt is a dict update under a lock, not an SDK measurement (the
    SDK's ``Counter.add`` costs tens of microseconds; this is well under one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[tuple[str, str], ...], int] = {}

    def add(self, labels: tuple[tuple[str, str], ...]) -> None:
        with self._lock:
            self._counts[labels] = self._counts.get(labels, 0) + 1

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        return [Observation(n, dict(labels)) for labels, n in counts]


class Instruments:
    """The counters and histograms the engine feeds."""

    def __init__(self, meter_provider: Any, version: str) -> None:
        meter = metrics.get_meter(_SCOPE, version, meter_provider)
        self.meter = meter
        self.runs = {name: _Counts() for name in ("started", *sorted(_RUN_COUNTERS))}
        self.tasks = {name: _Counts() for name in ("completed", "failed", "retried", "timed_out")}
        for name, counts in self.runs.items():
            meter.create_observable_counter(
                f"sayiir.runs.{name}", [counts.observe], "{run}", f"Runs {name}"
            )
        for name, counts in self.tasks.items():
            meter.create_observable_counter(
                f"sayiir.tasks.{name}", [counts.observe], "{attempt}", f"Task attempts {name}"
            )
        self.task_duration = meter.create_histogram(
            "sayiir.task.duration", "s", "Duration of one task attempt",
            explicit_bucket_boundaries_advisory=_TASK_BUCKETS,
        )  # fmt: skip
        self.run_duration = meter.create_histogram(
            "sayiir.run.duration", "s", "Time from a run's creation to its final state",
            explicit_bucket_boundaries_advisory=_RUN_BUCKETS,
        )  # fmt: skip
        self.schedule_to_start = meter.create_histogram(
            "sayiir.task.schedule_to_start", "s",
            "Time a queue entry waited, from ready to claimed by a worker",
            explicit_bucket_boundaries_advisory=_TASK_BUCKETS,
        )  # fmt: skip

    def run_started(self, workflow_id: str) -> None:
        self.runs["started"].add((("workflow_id", workflow_id),))

    def run_ended(self, workflow_id: str, status: str, seconds: float) -> None:
        if status in _RUN_COUNTERS:
            self.runs[status].add((("workflow_id", workflow_id),))
            self.run_duration.record(
                max(seconds, 0.0), {"workflow_id": workflow_id, "outcome": status}
            )

    def attempt_ended(
        self, workflow_id: str, task_id: str, outcome: str, timed_out: bool, seconds: float
    ) -> None:
        labels = (("task_id", task_id), ("workflow_id", workflow_id))
        self.tasks[_TASK_COUNTERS[outcome]].add(labels)
        if timed_out:
            self.tasks["timed_out"].add(labels)
        self.task_duration.record(
            seconds, {"workflow_id": workflow_id, "task_id": task_id, "outcome": outcome}
        )


class QueueGauges:
    """``sayiir.queue.depth`` and ``sayiir.queue.oldest_ready_age``: read from the backend
    (``RunQueries.queue_stats``: entries ready to claim, age of the oldest ready one).

    Both gauges of one collection (a scrape) come from one ``queue_stats()`` read, and the
    backend is read at most once per ``min_interval`` seconds however often it is scraped.
    """

    def __init__(
        self, stats: Callable[[], QueueStats | None], meter: Any, min_interval: float = 5.0
    ) -> None:
        self._stats = stats
        self._min_interval = min_interval
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._value: QueueStats | None = None
        self._seen: set[str] = set()  # the gauges that reported the current value
        self.reads = 0
        meter.create_observable_gauge(
            "sayiir.queue.depth", [self._depth], "{entry}", "Queue entries ready to claim"
        )
        meter.create_observable_gauge(
            "sayiir.queue.oldest_ready_age", [self._age], "s",
            "How long the oldest ready queue entry has waited",
        )  # fmt: skip

    def current(self, gauge: str) -> QueueStats | None:
        """The value ``gauge`` reports now. A collection reads both gauges: the first one
        to ask reads the backend, the other gets the same value; the next collection reads
        again (if ``min_interval`` has passed, else it reuses the value)."""
        with self._lock:
            now = time.monotonic()
            stale = not self._seen or gauge in self._seen
            if stale and now - self._read_at >= self._min_interval:
                self._read_at = now
                self._seen = set()
                try:
                    self._value = self._stats()
                    self.reads += 1
                except Exception:  # a database outage: no value this time, never an error
                    self._value = None
            self._seen.add(gauge)
            return self._value

    def _depth(self, options: CallbackOptions) -> Iterable[Observation]:
        value = self.current("depth")
        return [] if value is None else [Observation(value.ready)]

    def _age(self, options: CallbackOptions) -> Iterable[Observation]:
        value = self.current("age")
        return [] if value is None else [Observation(value.oldest_ready_age_secs or 0.0)]
