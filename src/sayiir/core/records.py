"""Plain records exchanged between the engine and the storage backends.

Backends store and return these; they never interpret workflow structure. Times
are Unix epoch seconds (floats); stored values are codec-encoded ``bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sayiir.errors import RunFinishedError

__all__ = [
    "ACTIVE",
    "AGING_SECS",
    "AWAITING_SIGNAL",
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "PAUSED",
    "RUNNING",
    "TERMINAL",
    "WAITING",
    "AttemptRecord",
    "AttemptState",
    "Claim",
    "ClaimAsk",
    "ControlRequest",
    "FinalState",
    "InstanceRecord",
    "QueueItem",
    "RunState",
    "Status",
    "StepRecord",
    "applied_request",
    "check_lease_secs",
    "claim_order",
    "control_decision",
    "executes",
    "fold_attempt",
    "lease_expired",
    "queue_priority",
    "write_decision",
]


class Status(StrEnum):
    """Stored instance status (the lowercase words of the PostgreSQL contract)."""

    RUNNING = "running"
    WAITING = "waiting"
    AWAITING_SIGNAL = "awaiting_signal"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The members as plain module globals, for hot paths: reading an Enum member off its class
# costs three times a global read on Python 3.11 (``Status.X`` stays fine everywhere else).
RUNNING = Status.RUNNING
WAITING = Status.WAITING
AWAITING_SIGNAL = Status.AWAITING_SIGNAL
PAUSED = Status.PAUSED
COMPLETED = Status.COMPLETED
FAILED = Status.FAILED
CANCELLED = Status.CANCELLED

TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
PARKED = frozenset({Status.WAITING, Status.AWAITING_SIGNAL})
ACTIVE = frozenset({Status.RUNNING, Status.WAITING, Status.AWAITING_SIGNAL})


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A cancel or pause asked for by a user; applied at the next step boundary."""

    kind: str  # "cancel" | "pause"
    reason: str | None = None
    by: str | None = None


def control_decision(status: Status, kind: str) -> str:
    """What a cancel/pause request does to an instance in ``status``.

    Returns ``"apply"`` (change the status now: nobody is executing it),
    ``"request"`` (store it; the executing engine applies it at the next
    boundary), ``"noop"`` or ``"reject"``. Every backend uses this one rule.
    """
    if status in (Status.COMPLETED, Status.FAILED):
        return "reject"
    if status is Status.CANCELLED:
        return "noop" if kind == "cancel" else "reject"
    if status is Status.PAUSED:
        return "apply" if kind == "cancel" else "noop"
    if status in PARKED:
        return "apply"
    return "request"


def check_lease_secs(value: float) -> float:
    """Validate a backend's ``lease_secs`` option (shared by every backend)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"lease_secs must be a number, not {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"lease_secs must be > 0, not {value!r}")
    return float(value)


def executes(record: InstanceRecord) -> bool:
    """A record created by an execution that starts running it now (it gets the lease)."""
    return record.status is Status.RUNNING and not record.distributed


def write_decision(instance_id: str, status: Status, final: Status | None = None) -> str:
    """What an executing engine's write does to an instance in ``status`` (its token matched).

    ``final`` is the status a ``finish`` writes (``None`` for a checkpoint write). Returns
    ``"write"`` (as asked), ``"keep"`` (an applied pause: checkpoints are stored but the
    status stays paused, and the engine is told) or ``"skip"`` (an applied cancel: nothing is
    written, the engine is told); raises ``RunFinishedError`` for a completed or failed run
    (nothing is written). A final state, once applied, is never overwritten; every backend
    uses this one rule.
    """
    if status is RUNNING:  # the common case, decided at once
        return "write"
    if status is COMPLETED or status is FAILED:
        raise RunFinishedError(instance_id, status.value)
    if status is CANCELLED:
        return "skip"
    if status is PAUSED:
        return "write" if final is PAUSED or final is CANCELLED else "keep"
    return "write"


@dataclass(slots=True)
class InstanceRecord:
    """One workflow run as stored (``sayiir_workflow_instances``)."""

    instance_id: str
    workflow_id: str
    definition_hash: str
    status: Status
    input: bytes
    output: bytes | None = None
    error: str | None = None
    reason: str | None = None
    cancelled_by: str | None = None
    paused_by: str | None = None
    wake_at: float | None = None
    park_node: str | None = None
    signal_name: str | None = None
    request: ControlRequest | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    completed_at: float | None = None
    # Submitted for workers (``WorkflowClient.submit``): signals then enqueue a wake-up.
    distributed: bool = False
    # Queue priority of a submitted run's first entry (its first task's priority).
    priority: int = 3
    # The token of the execution that owns the run: set when the run starts, and anew by
    # every resume that takes the run over (``Storage.take_over``). Writes that carry another
    # token (a replaced run, or an execution that was taken over) are refused
    # (``RunReplacedError``). ``None`` on rows written before tokens existed.
    token: str | None = None
    # Until when that execution holds the run (its lease, renewed by each of its writes and
    # by the heartbeat while a task runs); ``None`` when no execution holds it (parked,
    # finished, submitted for workers). Epoch seconds, from the backend's clock.
    lease_until: float | None = None
    # The workflow's structure as JSON text (``sayiir.core.graph.definition_text``), handed
    # to ``create_instance`` so the backend stores it once per definition hash (for the
    # console); never read back into the record (``None`` on loaded records).
    definition: str | None = field(default=None, repr=False, compare=False)
    # The W3C trace context (``traceparent``) of the caller that started the run, when
    # tracing was on: every execution of the run, in any process, continues that trace.
    traceparent: str | None = None
    # A submitted run's concurrency key and limit (``sayiir.core.limits``): a worker starts it
    # only while fewer than ``concurrency_limit`` runs of that key hold a slot. Handed to
    # ``create_instance`` (stored with the run's start entry); ``None`` on loaded records.
    concurrency_key: str | None = field(default=None, repr=False, compare=False)
    concurrency_limit: int = field(default=0, repr=False, compare=False)


@dataclass(slots=True)
class StepRecord:
    """A checkpoint to store: the encoded output of a finished task (or an engine marker).

    ``task_id`` is ``None`` for engine markers (delay timers, signal park times,
    route keys), which are checkpoints but not task executions. ``frees_slot``: the
    attempt held a slot of its task's ``max_concurrent``, which the write that stores
    this checkpoint gives back (``TaskLimitStorage``): no statement of its own.
    """

    key: str
    output: bytes
    task_id: str | None = None
    attempt: int = 1
    started_at: float = 0.0
    finished_at: float = 0.0
    worker_id: str | None = None
    frees_slot: bool = False


@dataclass(slots=True)
class AttemptRecord:
    """A task attempt that did not produce a checkpoint: started (with a deadline) or failed."""

    key: str
    task_id: str
    attempt: int
    status: str  # "running" | "failed"
    started_at: float
    finished_at: float | None = None
    error: str | None = None
    next_retry_at: float | None = None
    deadline: float | None = None
    worker_id: str | None = None


@dataclass(slots=True)
class AttemptState:
    """What the engine needs to know about earlier attempts of a task with no checkpoint."""

    failures: int = 0
    last_error: str | None = None
    next_retry_at: float | None = None
    running_deadline: float | None = None  # deadline of a started attempt that never finished


@dataclass(slots=True)
class RunState:
    """Everything needed to continue a run, loaded in one read."""

    record: InstanceRecord
    checkpoints: dict[str, bytes] = field(default_factory=dict)
    attempts: dict[str, AttemptState] = field(default_factory=dict)


@dataclass(slots=True)
class FinalState:
    """How an execution ended: a terminal status or a parked one."""

    status: Status
    output: bytes | None = None
    error: str | None = None
    reason: str | None = None
    by: str | None = None
    wake_at: float | None = None
    park_node: str | None = None
    signal_name: str | None = None


@dataclass(slots=True)
class QueueItem:
    """A runnable point of an instance, for workers: a task to run, or "continue" (``key=""``).

    ``key`` is the checkpoint key of the task (scope included). ``available_at``
    delays it (a durable timer, a retry); ``None`` means now.
    """

    key: str
    task_id: str | None = None
    priority: int = 3
    tags: tuple[str, ...] = ()
    available_at: float | None = None


# Claim order ages waiting entries by one priority level per this many seconds.
AGING_SECS = 300.0


def queue_priority(priority: int) -> int:
    """The priority a queue entry is stored and ordered with: the builder's range 1..5
    (1 = most urgent). Backends clamp to it, so an entry is never out of every claim."""
    return 1 if priority < 1 else 5 if priority > 5 else priority


def claim_order(priority: int, available_at: float, now: float) -> float:
    """The aged priority claims are ordered by (lower first): ``priority`` minus one level
    per ``AGING_SECS`` waited since ``available_at``, so low-priority work is never starved.

    >>> claim_order(5, 0.0, 600.0)
    3.0
    """
    return queue_priority(priority) - (now - available_at) / AGING_SECS


@dataclass(slots=True)
class Claim:
    """A queue entry held by a worker; ``attempt`` is the fencing token of every write.

    ``attempt`` also counts the claims of the entry since it was last queued afresh: every
    claim before this one ended without an outcome (its worker died, stalled, or gave the
    entry up with ``QueueStorage.abandon``). ``last_error`` says why the previous one ended,
    so a worker that dead-letters the run can tell what went wrong.
    """

    instance_id: str
    key: str
    attempt: int
    worker_id: str
    definition_hash: str = ""
    last_error: str | None = field(default=None, compare=False)
    # Seconds the entry waited between becoming claimable and this claim (the queue wait of
    # the schedule-to-start metric); ``None`` for a task claimed in the same write that
    # checkpointed the previous one (it never waited in the queue).
    waited: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ClaimAsk:
    """What a worker's claim asks for (``QueueStorage.claim``'s arguments but the lease): a
    worker ending a run asks its next entry in that same write (``ChainedQueueStorage``)."""

    worker_id: str
    definition_hashes: tuple[str, ...]
    tags: tuple[str, ...]


def lease_expired(worker_id: str, attempt: int) -> str:
    """The cause of a claim that ended by running out of lease (every backend's wording)."""
    return (
        f"worker '{worker_id}' stopped renewing its lease during attempt {attempt} "
        "(the process died or was killed, or stalled past claim_ttl)"
    )


def applied_request(record: InstanceRecord) -> ControlRequest | None:
    """The request an engine must obey when it writes to an instance already stopped.

    A cancel or pause applied directly (while the run was parked) wins over an
    engine that resumed the run concurrently: its next write learns about it.
    """
    status = record.status
    if status is RUNNING:  # the common case, decided at once
        return None
    if status is CANCELLED:
        return ControlRequest("cancel", record.reason, record.cancelled_by)
    if status is PAUSED:
        return ControlRequest("pause", record.reason, record.paused_by)
    return None


def fold_attempt(state: AttemptState, attempt: AttemptRecord) -> None:
    """Apply one attempt row to the summary (shared by every backend's ``load``)."""
    if attempt.status == "failed":
        state.failures = max(state.failures, attempt.attempt)
        state.last_error = attempt.error
        state.next_retry_at = attempt.next_retry_at
        state.running_deadline = None
    elif attempt.status == "running" and attempt.attempt > state.failures:
        state.running_deadline = attempt.deadline
