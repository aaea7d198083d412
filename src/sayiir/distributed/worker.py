"""``Worker``: executes queued tasks of submitted runs, many processes sharing one database.

Every runnable point of a submitted run is a queue entry. A worker claims one
with a lease, runs the task, and writes the checkpoint fenced by the claim's
attempt number; while it runs, a heartbeat extends the lease. A worker that
dies stops renewing, its entries become claimable again when the lease ends,
and a worker that wakes up late finds its writes refused (``LeaseLostError``).
Wake-ups come from the backend (LISTEN/NOTIFY on PostgreSQL); polling every
``poll_interval`` stays as the safety net.

A worker is never half-alive: whatever one run does (a task's ``SystemExit``, an error
the engine cannot turn into an outcome) ends that claim, never a thread; an error of the
worker's own loops, or a database that stays unusable for ``outage_timeout``, stops the
whole worker with the cause logged (``WorkerHandle.error``; ``run()`` raises it). A run
whose claims keep ending without an outcome is dead-lettered after ``max_claim_attempts``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sayiir.backends.protocol import (
    ChainedQueueStorage,
    GatedQueueStorage,
    QueueStorage,
    ScheduleStorage,
)
from sayiir.core.nodes import WorkflowDefinition
from sayiir.core.records import Claim, ClaimAsk, FinalState, Status
from sayiir.distributed.schedules import Scheduler
from sayiir.engine import (
    WorkerMode,
    check_storage,
    drive,
    log_extra,
    observer,
    resolve,
    work_claim,
)
from sayiir.errors import BackendError, LeaseLostError, WorkflowError

__all__ = ["Worker", "WorkerHandle"]

log = logging.getLogger("sayiir.worker")

Registry = dict[str, Callable[[Any], Any]]

# Added to the time until the next entry falls due: wake just after it, not just before.
_DUE_MARGIN = 0.002
# The longest cause kept for a dead-letter error (an exception's text can be huge).
_MAX_CAUSE = 1000
# The shortest poll of a worker's scheduler thread. It sleeps until the next schedule
# falls due anyway; the poll only finds schedules registered or changed meanwhile, so a
# worker with a tiny poll_interval (it claims work that often) does not read the
# schedules a hundred times a second, two statements each, beside its own work.
_SCHEDULE_POLL = 1.0


class WorkerHandle:
    """Controls a started worker.

    >>> from sayiir import Flow, InMemoryBackend
    >>> workflow = Flow("double").then(lambda x: x * 2, name="double").build()
    >>> handle = Worker("w1", InMemoryBackend()).start([workflow])
    >>> handle.running
    True
    >>> handle.shutdown(); handle.join()
    >>> handle.running
    False
    """

    def __init__(self, worker: _Running) -> None:
        self._worker = worker

    def shutdown(self) -> None:
        """Stop claiming; running tasks finish and are checkpointed. Non-blocking, idempotent."""
        self._worker.stop()

    def join(self, timeout: float | None = None) -> None:
        """Block until the worker has stopped (after ``shutdown()``)."""
        self._worker.join(timeout)

    @property
    def running(self) -> bool:
        return self._worker.alive()

    @property
    def error(self) -> BaseException | None:
        """What stopped the worker by itself (an internal error, or a database that stayed
        unusable for ``outage_timeout``); ``None`` while it runs or after ``shutdown()``."""
        return self._worker.fatal

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        if self.error is not None:
            state += f" by {type(self.error).__name__}"
        return f"WorkerHandle(worker_id={self._worker.worker_id!r}, {state})"


class Worker:
    """A process's share of the work: claims queued tasks and runs them.

    >>> import time
    >>> from sayiir import Flow, InMemoryBackend, WorkflowClient
    >>> order_workflow = Flow("order").then(lambda x: x * 2, name="double").build()
    >>> backend = InMemoryBackend()  # PostgresBackend(url) for workers in many processes
    >>> client = WorkflowClient(backend)
    >>> client.submit(order_workflow, "order-1", 21).status
    'in_progress'
    >>> worker = Worker("worker-1", backend, poll_interval=1.0)
    >>> handle = worker.start([order_workflow])
    >>> while not client.status("order-1").is_completed():
    ...     time.sleep(0.01)
    >>> client.status("order-1").output
    42
    >>> handle.shutdown(); handle.join()

    ``claim_ttl`` is the lease: a task whose worker stops heart-beating for that
    long is run again elsewhere. ``max_concurrent_tasks`` threads run tasks
    (default 1). ``tags``: the task tags this worker serves; a task with tags
    only runs on a worker that serves all of them, untagged tasks run anywhere.
    ``max_claim_attempts``: a queue entry claimed that many times without an outcome (its
    worker died, stalled, or met an error it could not record) fails its run, dead-lettered,
    at the next claim. ``outage_timeout``: how long the worker keeps retrying while the
    database is unreachable or refuses it (a wrong password) before it stops with an error.
    ``schedules``: the worker also fires the backend's cron schedules (default; any number of
    workers may, each tick still starts one run; docs/schedules.md). Its scheduler thread
    sleeps until the next schedule falls due, looking for new ones every ``poll_interval``
    but at most once a second.
    """

    def __init__(
        self,
        worker_id: str,
        backend: Any,
        *,
        poll_interval: float = 5.0,
        claim_ttl: float = 300.0,
        max_concurrent_tasks: int | None = None,
        tags: Sequence[str] | None = None,
        max_claim_attempts: int = 5,
        outage_timeout: float = 300.0,
        schedules: bool = True,
    ) -> None:
        if not worker_id:
            raise ValueError("worker_id must not be empty")
        if not isinstance(backend, QueueStorage):
            raise TypeError(
                f"{type(backend).__name__} cannot serve workers: use PostgresBackend, "
                "SqliteBackend (worker processes on one machine) or InMemoryBackend (workers "
                "in one process)"
            )
        if not poll_interval > 0 or not claim_ttl > 0 or not outage_timeout > 0:
            raise ValueError("poll_interval, claim_ttl and outage_timeout must be positive")
        if isinstance(max_claim_attempts, bool) or not isinstance(max_claim_attempts, int):
            raise TypeError("max_claim_attempts must be an int")
        if max_claim_attempts < 1:
            raise ValueError("max_claim_attempts must be at least 1")
        if max_concurrent_tasks is not None and max_concurrent_tasks < 1:
            raise ValueError("max_concurrent_tasks must be at least 1")
        self.worker_id = worker_id
        self.backend: QueueStorage = backend
        self.poll_interval = poll_interval
        self.claim_ttl = claim_ttl
        self.max_concurrent_tasks = max_concurrent_tasks or 1
        self.tags = tuple(tags or ())
        self.max_claim_attempts = max_claim_attempts
        self.outage_timeout = float(outage_timeout)
        self.schedules = bool(schedules)

    def start(self, workflows: Sequence[Any]) -> WorkerHandle:
        """Start serving ``workflows`` in background threads; returns at once."""
        table = _workflow_table(workflows)
        for definition, _ in table.values():
            check_storage(self.backend, definition)
        running = _Running(self, table)
        running.start()
        return WorkerHandle(running)

    def run(self, workflows: Sequence[Any]) -> None:
        """Serve until SIGTERM or SIGINT (or KeyboardInterrupt), then stop gracefully.

        Raises when the worker stopped by itself (``WorkerHandle.error``): the
        ``BackendError`` of a database that stayed unusable, or a ``WorkflowError`` whose
        cause is the internal error (its traceback is logged).
        """
        handle = self.start(workflows)
        stop = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(0.2) and handle.running:
                pass
        except KeyboardInterrupt:
            pass
        finally:
            log.info("worker %s stopping: running tasks finish first", self.worker_id)
            handle.shutdown()
            handle.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        error = handle.error
        if isinstance(error, BackendError):
            raise error
        if error is not None:
            raise WorkflowError(
                f"worker {self.worker_id!r} stopped on an internal error: {_describe(error)} "
                "(traceback logged)"
            ) from error

    def __repr__(self) -> str:
        return (
            f"Worker(worker_id={self.worker_id!r}, poll_interval={self.poll_interval}, "
            f"claim_ttl={self.claim_ttl}, max_concurrent_tasks={self.max_concurrent_tasks}, "
            f"max_claim_attempts={self.max_claim_attempts}, "
            f"outage_timeout={self.outage_timeout:g})"
        )


def _workflow_table(workflows: Sequence[Any]) -> dict[str, tuple[WorkflowDefinition, Registry]]:
    table: dict[str, tuple[WorkflowDefinition, Registry]] = {}
    for wf in workflows:
        definition, registry = resolve(wf, None)
        table[definition.definition_hash] = (definition, dict(registry))
    if not table:
        raise ValueError("a worker needs at least one workflow to serve")
    return table


class _Running:
    """The threads of one started worker: task runners, a heartbeat, a wake-up listener."""

    def __init__(
        self, worker: Worker, table: dict[str, tuple[WorkflowDefinition, Registry]]
    ) -> None:
        self.worker = worker
        self.worker_id = worker.worker_id
        self.table = table
        self.hashes = list(table)
        self.storage = worker.backend
        # Task limits asked in the write that claims the task (one commit, not three).
        self._gated = isinstance(self.storage, GatedQueueStorage)
        # The next claim asked in the write that ends a run (one commit fewer per run).
        self._chain = (
            ClaimAsk(self.worker_id, tuple(self.hashes), tuple(worker.tags))
            if isinstance(self.storage, ChainedQueueStorage)
            else None
        )
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._active: dict[int, WorkerMode] = {}
        self._active_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._unsubscribe: Callable[[], None] | None = None
        self.fatal: BaseException | None = None  # what stopped the worker by itself
        self._fatal_lock = threading.Lock()
        self._outage_since: float | None = None  # when the first failed claim of a row began
        self._scheduler: Scheduler | None = None

    def start(self) -> None:
        self._unsubscribe = self.storage.subscribe(self._wake.set)
        for i in range(self.worker.max_concurrent_tasks):
            self._spawn(self._run_tasks, f"sayiir-worker-{self.worker_id}-{i}")
        self._spawn(self._heartbeat, f"sayiir-heartbeat-{self.worker_id}")
        if self.worker.schedules and isinstance(self.storage, ScheduleStorage):
            self._scheduler = Scheduler(
                self.storage,
                poll_interval=max(self.worker.poll_interval, _SCHEDULE_POLL),
                name=f"scheduler of worker {self.worker_id}",
            )
            self._scheduler.start()
        log.info("worker %s started (%d workflows)", self.worker_id, len(self.table))

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=self._guarded, args=(target,), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guarded(self, target: Callable[[], None]) -> None:
        """A thread of the worker ends only when the worker stops: an error escaping its
        loop (a bug of ours, never a task's) stops every thread, logged, not this one alone."""
        try:
            target()
        except BaseException as exc:
            self._die(exc, f"internal error in {threading.current_thread().name}")

    def _die(self, exc: BaseException, what: str) -> None:
        with self._fatal_lock:
            first = self.fatal is None
            if first:
                self.fatal = exc
        if first:
            if isinstance(exc, BackendError):
                log.critical("worker %s stopped: %s", self.worker_id, exc)
            else:
                log.critical("worker %s stopped (%s)", self.worker_id, what, exc_info=exc)
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._scheduler is not None:
            self._scheduler.stop()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        if self._scheduler is not None:
            self._scheduler.join(
                None if deadline is None else max(0.0, deadline - time.monotonic())
            )
        if not self.alive() and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- task runners --------------------------------------------------------------------

    def _run_tasks(self) -> None:
        backoff = 0.0
        chained: list[Claim] = []
        # A claim taken in the write that ended the previous run is handed to the engine even
        # when the worker began to stop meanwhile: a stopping turn starts no task and gives
        # the claim back at once (rather than leave it held until its lease runs out).
        while chained or not self._stopping.is_set():
            claims, chained = chained, []
            if not claims:
                began = time.monotonic()
                try:
                    claims = self.storage.claim(
                        self.worker_id, self.hashes, self.worker.tags, 1, self.worker.claim_ttl
                    )
                    backoff = 0.0
                    self._outage_since = None
                except BackendError as exc:
                    backoff = min(max(backoff * 2, 0.5), 30.0)
                    self._stopping.wait(self._outage(exc, backoff, began))
                    continue
                if not claims:
                    self._wake.wait(self._idle_wait())
                    self._wake.clear()
                    continue
            for claim in claims:
                chained += self._work(claim)

    def _outage(self, exc: BackendError, backoff: float, began: float) -> float:
        """A failed claim (made at ``began``): how long to wait before the next one. Past
        ``outage_timeout`` of failures in a row (on any thread), the whole worker stops."""
        now = time.monotonic()
        with self._fatal_lock:
            if self._outage_since is None:
                self._outage_since = began
            failing = now - self._outage_since
        budget = self.worker.outage_timeout
        if failing >= budget:
            self._die(
                BackendError(
                    f"worker {self.worker_id!r} gave up: the database kept failing for "
                    f"{failing:.0f}s (outage_timeout={budget:g}s); last error: {exc}"
                ),
                "outage",
            )
            return 0.0
        wait = min(backoff, budget - failing)
        log.error(
            "worker %s cannot claim work (%s); retrying in %.1fs (giving up after %.0fs more)",
            self.worker_id,
            exc,
            wait,
            budget - failing,
        )
        return wait

    def _idle_wait(self) -> float:
        """How long to sleep with nothing to claim: a poll interval, or less when a timer or
        a retry falls due sooner (new work wakes the worker earlier through ``_wake``)."""
        wait = self.worker.poll_interval
        try:
            due = self.storage.next_due(self.hashes, self.worker.tags)
        except BackendError:
            return wait  # the next claim reports the outage
        if due is not None:
            wait = min(wait, max(due, 0.0) + _DUE_MARGIN)
        return wait

    def _work(self, claim: Claim) -> list[Claim]:
        """Run the turn of ``claim``; return the claims its last write took for this thread
        (``ChainedQueueStorage``: the worker's next entry, claimed as the run ended)."""
        definition, registry = self.table[claim.definition_hash]
        if claim.attempt > self.worker.max_claim_attempts:
            self._dead_letter(claim)
            return []
        obs = observer()
        if obs is not None and claim.waited is not None:
            obs.claimed(definition.workflow_id, claim.waited)
        mode = WorkerMode(
            claim,
            self.worker.claim_ttl,
            self._stopping.is_set,
            frozenset(self.worker.tags),
            self._gated,
            self._chain,
        )
        key = threading.get_ident()
        with self._active_lock:
            self._active[key] = mode
        try:
            op = work_claim(definition, registry, self.storage.codec, mode)
            status = drive(op, self.storage)
            if status is not None and status.status == "failed":
                log.warning(
                    "worker %s: run %r failed: %s",
                    self.worker_id,
                    claim.instance_id,
                    status.error,
                    extra=_ids(claim),
                )
        except LeaseLostError as exc:
            log.warning("worker %s: %s", self.worker_id, exc, extra=_ids(claim))
        except BackendError as exc:
            log.error(
                "worker %s: task %r of %r not finished: %s",
                self.worker_id,
                claim.key,
                claim.instance_id,
                exc,
                extra=_ids(claim),
            )
        except BaseException as exc:  # anything this run does ends its claim, not the thread
            self._abandon(mode.claim, exc)
        finally:
            with self._active_lock:
                self._active.pop(key, None)
        return mode.chained

    def _abandon(self, held: Claim | None, exc: BaseException) -> None:
        """The engine raised instead of reaching an outcome: give the claim up with the
        cause, due again after a backoff; the attempt counts towards dead-lettering."""
        what = "the run" if held is None else _step(held)
        log.error(
            "worker %s: %s ended without an outcome (it will be retried): %s",
            self.worker_id,
            what,
            _describe(exc),
            exc_info=exc,
            extra=None if held is None else _ids(held),
        )
        if held is None:
            return
        cause = f"{_describe(exc)} (raised while the worker ran {what})"
        retry_in = min(self.worker.claim_ttl, 2.0 ** (held.attempt - 1))
        try:
            self.storage.abandon(held, cause[:_MAX_CAUSE], retry_in=retry_in)
        except BackendError as err:
            log.error(
                "worker %s: cannot give up %s (its lease will run out instead): %s",
                self.worker_id,
                what,
                err,
                extra=_ids(held),
            )

    def _dead_letter(self, claim: Claim) -> None:
        """Fail the run of an entry whose claims keep ending without an outcome."""
        tries = claim.attempt - 1
        cause = (claim.last_error or "no cause was recorded")[:_MAX_CAUSE]
        error = (
            f"dead-lettered after {tries} attempts: {cause} [{_step(claim)} was claimed "
            f"{tries} times without an outcome; max_claim_attempts="
            f"{self.worker.max_claim_attempts}]"
        )
        final = FinalState(Status.FAILED, error=error)
        try:
            self.storage.advance(claim, [], final=final, lease_secs=self.worker.claim_ttl)
        except LeaseLostError:
            return  # taken over meanwhile: that worker decides
        except BackendError as exc:
            log.error(
                "worker %s cannot dead-letter %r: %s",
                self.worker_id,
                claim.instance_id,
                exc,
                extra=_ids(claim),
            )
            return
        log.error(
            "worker %s: run %r %s", self.worker_id, claim.instance_id, error, extra=_ids(claim)
        )

    # -- heartbeat -----------------------------------------------------------------------

    def _heartbeat(self) -> None:
        interval = max(self.worker.claim_ttl / 3.0, 0.05)
        while True:
            stopping = self._stopping.wait(interval)
            with self._active_lock:
                claims = [m.claim for m in self._active.values() if m.claim is not None]
            if claims:
                try:
                    for lost in self.storage.heartbeat(claims, self.worker.claim_ttl):
                        log.warning(
                            "worker %s lost its lease on %r of %r",
                            self.worker_id,
                            lost.key,
                            lost.instance_id,
                        )
                except BackendError as exc:
                    log.error("worker %s heartbeat failed: %s", self.worker_id, exc)
            if stopping and not any(
                t.is_alive() for t in self._threads if t is not threading.current_thread()
            ):
                return


def _ids(claim: Claim) -> dict[str, Any]:
    """The ``extra=`` of a log record about ``claim``: its run and task (and trace) ids."""
    return log_extra(claim.instance_id, claim.key or None)


def _step(claim: Claim) -> str:
    where = f"task '{claim.key}'" if claim.key else "the next step"
    return f"{where} of run '{claim.instance_id}'"


def _describe(exc: BaseException) -> str:
    """``"Type: message"``, even for an exception whose ``__str__`` raises."""
    try:
        text = str(exc)
    except Exception:
        text = "<the exception's message cannot be printed>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
