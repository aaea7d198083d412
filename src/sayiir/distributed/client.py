"""``WorkflowClient``: submit and control runs from any process; it never executes tasks."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from sayiir.backends.protocol import ConcurrencyStorage, TaskWaitStorage
from sayiir.core.status import WorkflowStatus
from sayiir.distributed import dedupe as _dedupe
from sayiir.distributed import limits as _limits
from sayiir.distributed import schedules as _schedules
from sayiir.engine import (
    Controls,
    backend_storage,
    check_policy,
    check_storage,
    drive,
    instance_status,
    resolve,
    submit_run,
    task_result,
)

__all__ = ["WorkflowClient"]


class WorkflowClient(Controls):
    """Submit runs for workers, read their status, cancel, pause, signal.

    >>> from sayiir import Flow, InMemoryBackend
    >>> workflow = Flow("order").wait_for_signal("approved").then(lambda a: a, name="ship").build()
    >>> client = WorkflowClient(InMemoryBackend())  # PostgresBackend(url) to share with workers
    >>> client.submit(workflow, "order-42", {"amount": 10}).status
    'in_progress'
    >>> client.send_signal("order-42", "approved", {"by": "alice"})
    >>> client.status("order-42").status  # no worker has run it yet
    'in_progress'
    """

    def __init__(self, backend: Any, *, conflict_policy: str | None = None) -> None:
        self._storage = backend_storage(backend)
        self._policy = check_policy(conflict_policy)

    def submit(
        self,
        workflow: Any,
        instance_id: str,
        input: Any,
        *,
        dedupe_key: str | None = None,
        dedupe_window: str | float | timedelta = "24h",
    ) -> WorkflowStatus:
        """Store a new run (per the conflict policy) for a worker to pick up.

        A workflow with run limits (``Flow(..., max_concurrent_runs=N)`` or
        ``concurrency_key=fn, max_concurrent=N``) gets its concurrency key computed here,
        from ``input``: workers start the run only while its key is under the limit.

        ``dedupe_key``: a submit repeated with the same key inside ``dedupe_window`` (from
        the first one) starts nothing and returns the status of the run the first submit
        started (whatever ``instance_id`` it gives); after the window, the key starts a new
        run. Instance ids stay unique forever; a key is for requests that may come again
        later (a webhook's delivery id, a nightly job's date). With a key, the conflict
        policy is ``use_existing``.

        >>> from sayiir import Flow, InMemoryBackend
        >>> wf = Flow("order").then(lambda x: x, name="charge").build()
        >>> client = WorkflowClient(InMemoryBackend())
        >>> client.submit(wf, "order-1", 1, dedupe_key="delivery-7").status
        'in_progress'
        >>> client.submit(wf, "order-2", 1, dedupe_key="delivery-7").status  # order-1's
        'in_progress'
        >>> client.status("order-2")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        InstanceNotFoundError: order-2
        """
        definition, _ = resolve(workflow, {})
        s = self._storage
        policy = self._policy
        check_storage(s, definition)
        concurrency = _limits.concurrency_of(s, workflow, definition.workflow_id, input)
        if dedupe_key is not None:
            # The key's run: ours, or the one of the submit that took the key first. It is
            # created unless it exists (by a racing submit with the key, or by its own
            # submitter, which may also have died between taking the key and creating it).
            instance_id = _dedupe.holder(s, dedupe_key, instance_id, dedupe_window, time.time())
            policy = "use_existing"
        op = submit_run(definition, s.codec, instance_id, input, policy, concurrency=concurrency)
        result: WorkflowStatus = drive(op, s)
        return result

    def status(self, instance_id: str) -> WorkflowStatus:
        result: WorkflowStatus = drive(
            instance_status(self._storage.codec, instance_id), self._storage
        )
        return result

    def get_task_result(self, instance_id: str, task_id: str) -> Any | None:
        """The output of one task of the run, or ``None`` if it has not run."""
        return drive(task_result(self._storage.codec, instance_id, task_id), self._storage)

    def cancel(
        self, instance_id: str, *, reason: str | None = None, cancelled_by: str | None = None
    ) -> None:
        """Cancel a run (options are keyword-only, as in the reference client)."""
        self._cancel(instance_id, reason, cancelled_by)

    def pause(
        self, instance_id: str, *, reason: str | None = None, paused_by: str | None = None
    ) -> None:
        """Pause a run (options are keyword-only, as in the reference client)."""
        self._pause(instance_id, reason, paused_by)

    def waiting_reason(self, instance_id: str) -> str | None:
        """Why a run waits, when a limit holds it back (its status is ``in_progress``
        meanwhile): a run limit (``"queued: concurrency key 'orders:7' is at its limit (1 of
        1 held by order-1)"``), or a task limit (``"waiting: task 'charge' is at its
        concurrency limit (2 of 2 held by run-7, run-9)"``, ``"waiting: rate limit 'api' (10
        per 1s), next token in 0.3s"``); ``None`` otherwise (see docs/flow-control.md)."""
        s = self._storage
        if isinstance(s, ConcurrencyStorage):
            state = s.concurrency_state(instance_id)
            if state is not None and state.reason() is not None:
                return state.reason()
        if isinstance(s, TaskWaitStorage):
            now = time.time()
            wait = s.task_wait(instance_id, now)
            if wait is not None:
                return wait.reason(now)
        return None

    # -- schedules (docs/schedules.md) ----------------------------------------------------

    def schedule(self, schedule: _schedules.Schedule) -> _schedules.ScheduleInfo:
        """Store a schedule for workers to fire, or update the one with its id.

        >>> from sayiir import Flow, InMemoryBackend, Schedule
        >>> report = Flow("report").then(lambda x: x, name="build").build()
        >>> client = WorkflowClient(InMemoryBackend())
        >>> client.schedule(Schedule(report, cron="0 2 * * *", timezone="Europe/Paris")).cron
        '0 2 * * *'
        >>> [s.id for s in client.schedules()]
        ['report']
        """
        return _schedules.register(self._storage, schedule, time.time())

    def schedules(self) -> list[_schedules.ScheduleInfo]:
        """Every stored schedule, by id (what ``sayiir schedules URL`` lists)."""
        store = _schedules.schedule_storage(self._storage)
        return [_schedules.ScheduleInfo.of(r) for r in store.list_schedules()]

    def pause_schedule(self, schedule_id: str) -> None:
        """No tick of it fires until ``resume_schedule``."""
        _schedules.set_paused(self._storage, schedule_id, True, time.time())

    def resume_schedule(self, schedule_id: str) -> None:
        """Ticks fire again from now on (those missed while paused are skipped)."""
        _schedules.set_paused(self._storage, schedule_id, False, time.time())

    def delete_schedule(self, schedule_id: str) -> bool:
        """Delete the schedule (its runs stay); False when there was none."""
        return _schedules.schedule_storage(self._storage).delete_schedule(schedule_id)

    def trigger_schedule(self, schedule_id: str) -> str:
        """Start a run of the schedule now, whatever its overlap policy; returns its id."""
        return _schedules.trigger(self._storage, schedule_id, time.time())

    def backfill_schedule(self, schedule_id: str, start: datetime, end: datetime) -> list[str]:
        """Start the runs of the ticks from ``start`` to ``end`` (included) that have none
        (a tick already fired is not run again); returns the ids of the runs started."""
        return _schedules.backfill(self._storage, schedule_id, start, end, time.time())

    def __repr__(self) -> str:
        return f"WorkflowClient(backend={self._storage!r})"
