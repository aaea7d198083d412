"""Starting, resuming and controlling runs: the engine's operations, written once.

Each operation is a generator of effects (see ``_effects``), executed by the
sync driver (``_drive.drive``) or the async one (``_drive.adrive``). Nothing
here touches a backend directly.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sayiir.backends.protocol import EngineStorage, QueueStorage, Storage
from sayiir.core.codec import Codec
from sayiir.core.describe import exc_text, storable
from sayiir.core.graph import definition_text
from sayiir.core.keys import unstorable
from sayiir.core.nodes import (
    Chain,
    ChildNode,
    ForkNode,
    LoopNode,
    TaskNode,
    WorkflowDefinition,
    loop_iterations,
)
from sayiir.core.records import (
    ACTIVE,
    AWAITING_SIGNAL,
    CANCELLED,
    COMPLETED,
    PARKED,
    PAUSED,
    TERMINAL,
    WAITING,
    Claim,
    ControlRequest,
    FinalState,
    InstanceRecord,
    RunState,
    Status,
    StepRecord,
    control_decision,
)
from sayiir.core.status import WorkflowStatus, format_wake_at
from sayiir.engine import _observe
from sayiir.engine._effects import Effects, Sleep, Store
from sayiir.engine._hooks import reached
from sayiir.engine._interpreter import Ended, Execution, Failure, WorkerMode
from sayiir.errors import (
    BackendError,
    DefinitionMismatchError,
    DeserializationError,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    RunFinishedError,
    RunReplacedError,
    TaskError,
    WorkflowError,
)

__all__ = [
    "CONFLICT_POLICIES",
    "cancel_run",
    "check_policy",
    "instance_status",
    "new_token",
    "pause_run",
    "plain_run",
    "resume_run",
    "send_signal_op",
    "start_run",
    "status_from_record",
    "submit_run",
    "task_result",
    "unpause_run",
    "work_claim",
]

Registry = Mapping[str, Callable[[Any], Any]]
CONFLICT_POLICIES = ("fail", "use_existing", "terminate_existing")
_SCALARS = (str, int, float, bool, type(None))
MAX_INSTANCE_ID_BYTES = 256
# A resume that comes at most this long before a delay's deadline sleeps until the deadline
# and continues (returning ``waiting`` would only make the caller poll: at 1 ms a poll, that
# idled a loop of resumes for most of the time it waited).
WAIT_OUT_SECS = 0.002


def _token_prefix() -> str:
    # The first 24 characters of a random (version 4) UUID: 72 random bits.
    return str(uuid.uuid4())[:24]


_token_base = _token_prefix()
_token_count = itertools.count(1)


def _new_token_source() -> None:
    """A forked child continues no counter of its parent: it draws a prefix of its own."""
    global _token_base, _token_count
    _token_base = _token_prefix()
    _token_count = itertools.count(1)


if hasattr(os, "register_at_fork"):  # POSIX; there is no fork elsewhere
    os.register_at_fork(after_in_child=_new_token_source)


def new_token() -> str:
    """The token of a new execution: a UUID (PostgreSQL stores it as one), unique.

    A random prefix per process (drawn again in a forked child) and a counter for the last
    12 hex digits: as unique as ``uuid4()`` across processes, and ten times cheaper than it
    (``os.urandom`` and the UUID object were 5 us of a 50 us in-memory run).
    """
    return f"{_token_base}{next(_token_count):012x}"


def check_policy(policy: str | None) -> str:
    """Validate a conflict policy (``None`` means ``"fail"``)."""
    if policy is None:
        return "fail"
    if policy not in CONFLICT_POLICIES:
        raise ValueError(
            f'invalid conflict_policy: "{policy}" '
            '(expected "fail", "use_existing", or "terminate_existing")'
        )
    return policy


def check_stored_name(what: str, name: str) -> None:
    """Refuse a name no backend query may carry (NUL, lone surrogates) the same way on every
    backend, before anything is read or written (PostgreSQL would fail mid-run)."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    reason = unstorable(name)
    if reason is not None:
        raise WorkflowError(f"{what} {name!r} {reason}; use a name every backend can store")


def check_instance_id(instance_id: str) -> None:
    """A new instance's id: storable, not empty, at most ``MAX_INSTANCE_ID_BYTES``."""
    if (
        type(instance_id) is str
        and instance_id.isascii()  # then one byte per character, and no lone surrogate
        and 0 < len(instance_id) <= MAX_INSTANCE_ID_BYTES
        and "\x00" not in instance_id
    ):
        return  # the common case, decided at once; the checks below say what is wrong
    check_stored_name("instance_id", instance_id)
    if not instance_id:
        raise WorkflowError("instance_id must not be empty")
    size = len(instance_id.encode())
    if size > MAX_INSTANCE_ID_BYTES:
        raise WorkflowError(
            f"instance_id length {size} exceeds maximum {MAX_INSTANCE_ID_BYTES} bytes"
        )


def status_from_record(record: InstanceRecord, codec: Codec) -> WorkflowStatus:
    """The public status of a stored instance (``running`` shows as ``in_progress``)."""
    st = record.status
    output = None
    if st is Status.COMPLETED and record.output is not None:
        try:
            output = codec.decode(record.output)
        except Exception as exc:
            raise DeserializationError(
                f"stored output of instance '{record.instance_id}' cannot be decoded with "
                f"codec '{codec.name}': {exc_text(exc)}"
            ) from None
    return WorkflowStatus(
        "in_progress" if st is Status.RUNNING else st.value,
        output=output,
        error=record.error,
        reason=record.reason,
        cancelled_by=record.cancelled_by,
        paused_by=record.paused_by,
        wake_at=format_wake_at(record.wake_at)
        if st in (Status.WAITING, Status.AWAITING_SIGNAL)
        else None,
        delay_id=record.park_node if st is Status.WAITING else None,
        signal_id=record.park_node if st is Status.AWAITING_SIGNAL else None,
        signal_name=record.signal_name if st is Status.AWAITING_SIGNAL else None,
    )


# ``Status.X.value`` costs ten times a dict read on Python 3.11 (an Enum property).
_STATUS_TEXT = {status: status.value for status in Status}


def _status_from_final(final: FinalState, output: Any) -> WorkflowStatus:
    st = final.status
    if st is COMPLETED:  # the common case: most fields are None
        return WorkflowStatus("completed", output=output)
    return WorkflowStatus(
        _STATUS_TEXT[st],
        error=final.error,
        reason=final.reason,
        cancelled_by=final.by if st is CANCELLED else None,
        paused_by=final.by if st is PAUSED else None,
        wake_at=format_wake_at(final.wake_at),
        delay_id=final.park_node if st is WAITING else None,
        signal_id=final.park_node if st is AWAITING_SIGNAL else None,
        signal_name=final.signal_name,
    )


def _undecodable_input(instance_id: str, codec: Codec, exc: Exception) -> FinalState:
    return FinalState(
        Status.FAILED,
        error=storable(
            f"DeserializationError: input of instance '{instance_id}' cannot be decoded "
            f"with codec '{codec.name}': {exc_text(exc)}"
        ),
    )


def _check_hash(definition: WorkflowDefinition, record: InstanceRecord) -> None:
    if record.definition_hash != definition.definition_hash:
        raise DefinitionMismatchError(definition.definition_hash, record.definition_hash)


def _stop_final(request: ControlRequest) -> FinalState:
    status = Status.CANCELLED if request.kind == "cancel" else Status.PAUSED
    return FinalState(status, reason=request.reason, by=request.by)


def _finish(instance_id: str, final: FinalState, output: Any, pending: list[StepRecord],
            token: str | None) -> Effects[WorkflowStatus]:  # fmt: skip
    """Store the final state; the status of the run as it ends (a cancel or pause applied
    meanwhile wins over ``final``: the backend kept it, ``write_decision``)."""
    stopped = yield from Store(Storage.finish, instance_id, final, pending, token=token)
    if stopped is not None:
        return _status_from_final(_stop_final(stopped), None)
    return _status_from_final(final, output)


def _finish_ended(instance_id: str, ended: Ended, token: str | None) -> Effects[WorkflowStatus]:
    """``_finish`` with what an execution (not on a worker) ended with (not a generator
    itself: it hands back ``_finish``'s, one frame less per run)."""
    assert ended.final is not None, "only a worker's path waits for other workers"
    return _finish(instance_id, ended.final, ended.output, ended.pending, token)


def _execute(
    execution: Execution, instance_id: str, value: Any, inline: bool
) -> Effects[WorkflowStatus]:
    """Run the execution to its end and store it (not a generator: ``_releasing``'s)."""

    def run() -> Effects[WorkflowStatus]:
        ended = yield from execution.run(value, inline)
        return (yield from _finish_ended(instance_id, ended, execution.token))

    return _releasing(instance_id, execution.token, run())


def _releasing(
    instance_id: str, token: str | None, gen: Effects[WorkflowStatus]
) -> Effects[WorkflowStatus]:
    """Run ``gen`` as the execution ``token``; if it stops without a final state (a task
    raised SystemExit, storage failed for good), end its lease, so a resume may take the
    run over at once."""
    try:
        return (yield from gen)
    except (GeneratorExit, RunReplacedError, RunFinishedError):
        raise
    except BaseException:
        yield from _release(instance_id, token)
        raise


def _release(instance_id: str, token: str | None) -> Effects[None]:
    if token is None:
        return
    try:
        yield from Store(Storage.renew_lease, instance_id, token, release=True)
    except Exception:  # the original error matters more; the lease then simply expires
        return


def _existing(
    definition: WorkflowDefinition,
    codec: Codec,
    existing: InstanceRecord,
    policy: str,
    instance_id: str,
) -> WorkflowStatus:
    """The conflict policy applied to an instance that already exists."""
    _check_hash(definition, existing)
    if policy == "use_existing":
        return status_from_record(existing, codec)
    raise InstanceAlreadyExistsError(instance_id)


def plain_run(
    definition: WorkflowDefinition,
    registry: Registry,
    codec: Codec,
    value: Any,
    clock: Callable[[], float] = time.time,
) -> Effects[Any]:
    """The in-memory path: no storage; returns the output or raises ``TaskError``."""
    roundtrip = getattr(codec, "roundtrip", None)
    value = roundtrip(value) if roundtrip else codec.decode(codec.encode(value))
    execution = Execution(
        definition, registry, codec, definition.workflow_id, durable=False, clock=clock
    )
    ended = yield from execution.run(value, True)
    output = ended.output
    assert ended.final is not None, "only a worker's path waits for other workers"
    if ended.final.status is Status.COMPLETED:
        return output
    assert isinstance(output, Failure)
    if output.decode:
        raise DeserializationError(output.error)
    message = output.error if output.detail is None else f"{output.error}\n\n{output.detail}"
    raise TaskError(message)


def start_run(
    definition: WorkflowDefinition,
    registry: Registry,
    codec: Codec,
    instance_id: str,
    value: Any,
    policy: str,
    *,
    inline: bool,
    token: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Effects[WorkflowStatus]:
    """Create the instance (per the conflict policy) and run it as far as it goes, as the
    execution ``token`` (a new one when ``None``)."""
    created = yield from _create(
        definition, codec, instance_id, value, policy, clock, False, token or new_token()
    )
    if isinstance(created, WorkflowStatus):
        return created
    execution = Execution(
        definition, registry, codec, instance_id, durable=True, token=created.token, clock=clock,
        run=created,
    )  # fmt: skip
    if type(value) not in _SCALARS:
        try:
            value = codec.decode(created.input)
        except Exception as exc:  # a codec that cannot read what it wrote: fail, never hang
            final = _undecodable_input(instance_id, codec, exc)
            yield from Store(Storage.finish, instance_id, final, [], token=created.token)
            return _status_from_final(final, None)
    return (yield from _execute(execution, instance_id, value, inline))


def first_priority(chain: Chain) -> int:
    """The priority of the first task a run executes (3, "normal", when it has none)."""
    node = chain[0]
    while not isinstance(node, TaskNode):
        if isinstance(node, ForkNode):
            node = node.branches[0][0]
        elif isinstance(node, LoopNode | ChildNode):
            node = node.body[0]
        else:
            return 3  # a route, delay or signal wait comes first
    meta = node.metadata
    return meta.priority if meta is not None and meta.priority is not None else 3


def _first_priority(definition: WorkflowDefinition) -> int:
    """``first_priority`` of the definition, computed once (cached on it)."""
    cache = definition.runtime_cache
    priority: int | None = cache.get(_PRIORITY_CACHE)
    if priority is None:
        priority = cache[_PRIORITY_CACHE] = first_priority(definition.nodes)
    return priority


_PRIORITY_CACHE = "first_priority"


def _create(
    definition: WorkflowDefinition,
    codec: Codec,
    instance_id: str,
    value: Any,
    policy: str,
    clock: Callable[[], float],
    distributed: bool,
    token: str,
    concurrency: tuple[str, int] | None = None,
) -> Effects[InstanceRecord | WorkflowStatus]:
    """Create the instance per the conflict policy; return the record stored.

    Returns the existing instance's status instead under ``use_existing``.
    """
    check_instance_id(instance_id)
    try:
        data = codec.encode(value)
    except TypeError:
        # The conflict check comes first (spec order): an existing instance wins.
        existing = yield from Store(Storage.get_instance, instance_id)
        if existing is None or policy == "terminate_existing":
            raise
        return _existing(definition, codec, existing, policy, instance_id)
    now = clock()
    obs = _observe.OBSERVER
    record = InstanceRecord(
        instance_id,
        definition.workflow_id,
        definition.definition_hash,
        Status.RUNNING,
        data,
        created_at=now,
        updated_at=now,
        distributed=distributed,
        priority=_first_priority(definition),
        token=token,
        definition=definition_text(definition),
        traceparent=None if obs is None else obs.traceparent(),
    )
    if concurrency is not None:
        record.concurrency_key, record.concurrency_limit = concurrency
    existing = yield from Store(
        Storage.create_instance, record, replace=policy == "terminate_existing"
    )
    if existing is not None:
        return _existing(definition, codec, existing, policy, instance_id)
    if obs is not None:
        obs.run_created(definition.workflow_id)
    return record


def submit_run(
    definition: WorkflowDefinition,
    codec: Codec,
    instance_id: str,
    value: Any,
    policy: str,
    *,
    clock: Callable[[], float] = time.time,
    concurrency: tuple[str, int] | None = None,
) -> Effects[WorkflowStatus]:
    """Store a new instance for a worker to run; execute nothing. ``concurrency``: the run's
    concurrency key and limit (``RunLimits.key_for``), enforced by the workers' claims."""
    created = yield from _create(
        definition, codec, instance_id, value, policy, clock, True, new_token(), concurrency
    )
    if isinstance(created, WorkflowStatus):
        return created
    return WorkflowStatus("in_progress")


def task_result(codec: Codec, instance_id: str, task_id: str) -> Effects[Any]:
    """The decoded output of a task of an instance, else ``None``.

    A task used several times answers with its first use (``task_id#2`` names the second
    one: its checkpoint key); a task inside a loop, with its last iteration.
    """
    check_stored_name("instance_id", instance_id)
    check_stored_name("task_id", task_id)
    data = yield from Store(Storage.get_checkpoint, instance_id, task_id)
    if data is None:
        state = yield from Store(Storage.load, instance_id)
        if state is None:
            raise InstanceNotFoundError(instance_id)
        # Inside loops: the key behind loop scopes only (a top-level task "a/x" is not "x").
        best: tuple[list[int], bytes] | None = None
        for key, stored in state.checkpoints.items():
            if key.endswith(task_id) and key != task_id:
                order = loop_iterations(key[: -len(task_id)])
                if order is not None and (best is None or order > best[0]):
                    best = (order, stored)
        if best is None:
            return None
        data = best[1]
    try:
        return codec.decode(data)
    except Exception as exc:
        raise DeserializationError(
            f"stored output of task '{task_id}' of instance '{instance_id}' cannot be decoded "
            f"with codec '{codec.name}': {exc_text(exc)}"
        ) from None


def instance_status(codec: Codec, instance_id: str) -> Effects[WorkflowStatus]:
    """The stored status of an instance."""
    check_stored_name("instance_id", instance_id)
    record = yield from Store(Storage.get_instance, instance_id)
    if record is None:
        raise InstanceNotFoundError(instance_id)
    return status_from_record(record, codec)


def resume_run(
    definition: WorkflowDefinition,
    registry: Registry,
    codec: Codec,
    instance_id: str,
    *,
    inline: bool,
    token: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Effects[WorkflowStatus]:
    """Continue an instance from its checkpoints; finished steps are never re-run.

    The run is taken over first (``take_over``, as the execution ``token``): when another
    execution holds it (a live lease), or it changed since it was read, nothing runs and
    its current status is returned (``in_progress`` while the other one runs it).
    """
    check_stored_name("instance_id", instance_id)
    state = yield from Store(Storage.load, instance_id)
    if state is None:
        raise InstanceNotFoundError(instance_id)
    record: InstanceRecord = state.record
    _check_hash(definition, record)
    if record.status in TERMINAL or record.status is Status.PAUSED:
        return status_from_record(record, codec)
    wake_at = record.wake_at
    if (
        record.request is None
        and record.status is WAITING
        and wake_at is not None
        and not reached(clock, wake_at)
    ):
        early = wake_at - clock()
        if early > WAIT_OUT_SECS:
            return status_from_record(record, codec)
        # Asked to continue just before the deadline: wait it out, to the deadline exactly,
        # rather than park again and make the caller poll (the delay still never ends early).
        # The deadline may have passed since ``reached`` looked: then there is nothing to wait.
        if early > 0:
            yield from Sleep(early, clock)
    token = token or new_token()
    taking = _take_and_run(definition, registry, codec, state, token, inline, clock)
    return (yield from _releasing(instance_id, token, taking))


def _take_and_run(
    definition: WorkflowDefinition,
    registry: Registry,
    codec: Codec,
    state: RunState,
    token: str,
    inline: bool,
    clock: Callable[[], float],
) -> Effects[WorkflowStatus]:
    """Take the run over as ``token``, then run it (``resume_run``)."""
    record: InstanceRecord = state.record
    instance_id = record.instance_id
    taken = yield from Store(Storage.take_over, instance_id, record.token, token)
    if taken is None:
        current = yield from Store(Storage.get_instance, instance_id)
        if current is None:
            raise InstanceNotFoundError(instance_id)
        return status_from_record(current, codec)
    record = taken
    if record.request is not None:
        return (yield from _finish(instance_id, _stop_final(record.request), None, [], token))
    try:
        value = codec.decode(record.input)
    except Exception as exc:
        final = _undecodable_input(instance_id, codec, exc)
        return (yield from _finish(instance_id, final, None, [], token))
    execution = Execution(
        definition,
        registry,
        codec,
        instance_id,
        durable=True,
        checkpoints=state.checkpoints,
        attempts=state.attempts,
        token=token,
        clock=clock,
        run=record,
    )
    ended = yield from execution.run(value, inline)
    return (yield from _finish_ended(instance_id, ended, token))


def work_claim(
    definition: WorkflowDefinition,
    registry: Registry,
    codec: Codec,
    worker: WorkerMode,
    *,
    clock: Callable[[], float] = time.time,
) -> Effects[WorkflowStatus | None]:
    """A worker's turn on one claimed queue entry; returns the run's final status or None.

    The claimed task runs here, and so does the rest of its path as long as no
    other worker is needed (the next task is claimed in the same write that
    checkpoints the previous one). Tasks of other paths become queue entries.
    When this path must wait for another worker's task, the run is re-read once
    more, the claim still held: if that task finished meanwhile, the next step is
    queued from here, so a join is never forgotten by two workers finishing branches
    at once, nor by one of them being killed before it decided.
    """
    claim = worker.claim
    assert claim is not None, "a worker turn starts with a claim"
    instance_id = claim.instance_id
    lease_secs = worker.lease_secs
    current: Claim | None = claim
    state = yield from Store(Storage.load, instance_id)
    while True:
        if state is None or state.record.status not in ACTIVE or state.record.request is not None:
            record = None if state is None else state.record
            if record is not None and record.request is not None and current is not None:
                return (yield from _obey(current, record.request, lease_secs))
            if current is not None and record is not None and record.status not in TERMINAL:
                yield from Store(
                    QueueStorage.advance, current, [], release=True, lease_secs=lease_secs
                )
            return None
        record = state.record
        _check_hash(definition, record)
        if current is not None and current.key == "" and record.status in PARKED:
            current, stopped = yield from _wake(current, lease_secs)
            if stopped is not None:
                return stopped
        known = set(state.checkpoints)
        worker.claim = current
        execution = Execution(
            definition,
            registry,
            codec,
            instance_id,
            durable=True,
            checkpoints=state.checkpoints,
            attempts=state.attempts,
            worker_id=claim.worker_id,
            worker=worker,
            token=record.token,
            clock=clock,
            run=record,
        )
        try:
            value = codec.decode(record.input)
        except Exception as exc:
            ended = Ended(_undecodable_input(instance_id, codec, exc), None, [])
        else:
            ended = yield from execution.run(value, True)
        held = worker.claim
        if ended.final is not None:
            return (yield from _end(worker, held, instance_id, ended, record.token))
        current = yield from _suspend(worker, held, ended.pending, instance_id, record.token)
        state = yield from Store(Storage.load, instance_id)
        # Only another worker's checkpoint can unblock this path (what this turn wrote was
        # seen as it ran): without one, the turn ends now, not after one more pass.
        if state is None or set(state.checkpoints) <= known | worker.written:
            if current is not None:
                yield from Store(
                    QueueStorage.advance, current, [], release=True, lease_secs=lease_secs
                )
            return None


def _wake(claim: Claim, lease_secs: float) -> Effects[tuple[Claim | None, WorkflowStatus | None]]:
    """A worker moves a run past its timer or signal wait: the run shows as running while its
    next task runs. Returns the claim still held, and the final status when a cancel or pause
    applied while the run was parked is obeyed instead (``None``: go on)."""
    request, held = yield from Store(QueueStorage.advance, claim, [], lease_secs=lease_secs)
    if request is None:
        return held, None
    assert held is not None, "a checkpoint write keeps its claim"
    return None, (yield from _obey(held, request, lease_secs))


def _obey(claim: Claim, request: ControlRequest, lease_secs: float) -> Effects[WorkflowStatus]:
    """Stop the run per ``request`` under ``claim``; return its status (an applied one wins)."""
    stop = _stop_final(request)
    kept, _ = yield from Store(QueueStorage.advance, claim, [], final=stop, lease_secs=lease_secs)
    return _status_from_final(_stop_final(kept) if kept else stop, None)


def _end(
    worker: WorkerMode,
    held: Claim | None,
    instance_id: str,
    ended: Ended,
    token: str | None,
) -> Effects[WorkflowStatus]:
    """Write a worker's final state (under its claim when it holds one); return the status.
    A cancel or pause applied meanwhile stays, and is what the status says."""
    final, pending = ended.final, ended.pending
    assert final is not None
    then = worker.chain
    if held is not None and then is not None and not worker.stopping():
        # The worker's next claim rides on this write (ChainedQueueStorage).
        kept, worker.chained = yield from Store(
            EngineStorage.finish_and_claim, held, pending, final=final,
            enqueue=worker.drain(), lease_secs=worker.lease_secs, then=then,
        )  # fmt: skip
    elif held is not None:
        kept, _ = yield from Store(
            QueueStorage.advance, held, pending, final=final, enqueue=worker.drain(),
            lease_secs=worker.lease_secs,
        )  # fmt: skip
    else:
        kept = yield from Store(Storage.finish, instance_id, final, pending, token=token)
        yield from Store(QueueStorage.enqueue, instance_id, worker.drain())
    if kept is not None:
        return _status_from_final(_stop_final(kept), None)
    return _status_from_final(final, ended.output)


def _suspend(
    worker: WorkerMode,
    held: Claim | None,
    pending: list[StepRecord],
    instance_id: str,
    token: str | None,
) -> Effects[Claim | None]:
    """Write what a path that must wait finished, and the entries it leaves queued; return
    the claim still held for the re-read of the run (``None``: released)."""
    if held is None:
        if pending:
            yield from Store(Storage.save_steps, instance_id, pending, token=token)
        yield from Store(QueueStorage.enqueue, instance_id, worker.drain())
        return None
    items = worker.drain()
    lease = worker.lease_secs
    worker.wrote(pending)
    if any(item.key == held.key for item in items):
        # The claimed task itself goes back to the queue (a retry backoff).
        yield from Store(
            QueueStorage.advance, held, pending, enqueue=items, release=True, lease_secs=lease
        )
        return None
    # The claim is kept until the run has been re-read and what comes next queued: a
    # worker killed in between leaves a claim that expires, and whoever takes it over
    # decides instead (released here, a join could be lost for good).
    if not pending and not items:
        return held  # written already (a branch taken, a move refused): only the re-read
    _, kept = yield from Store(QueueStorage.advance, held, pending, enqueue=items, lease_secs=lease)
    return kept


def _control(instance_id: str, kind: str, reason: str | None, by: str | None) -> Effects[None]:
    check_stored_name("instance_id", instance_id)
    found = yield from Store(Storage.request_control, instance_id, ControlRequest(kind, reason, by))
    if found is None:
        raise InstanceNotFoundError(instance_id)
    if control_decision(found, kind) == "reject":
        raise BackendError(
            f"Cannot {kind} workflow in state: {found.value.replace('_', ' ').title()}"
        )


def cancel_run(instance_id: str, reason: str | None, by: str | None) -> Effects[None]:
    """Cancel now if nobody executes the run, else at its next step boundary."""
    return (yield from _control(instance_id, "cancel", reason, by))


def pause_run(instance_id: str, reason: str | None, by: str | None) -> Effects[None]:
    """Pause now if nobody executes the run, else at its next step boundary."""
    return (yield from _control(instance_id, "pause", reason, by))


def unpause_run(instance_id: str) -> Effects[None]:
    """Make a paused run runnable again (it does not run it)."""
    check_stored_name("instance_id", instance_id)
    found = yield from Store(Storage.unpause, instance_id)
    if found is None:
        raise InstanceNotFoundError(instance_id)
    if found is not Status.PAUSED:
        raise BackendError(
            f"Cannot unpause workflow '{instance_id}': it is not paused "
            f"(state: {found.value.replace('_', ' ').title()})"
        )


def send_signal_op(codec: Codec, instance_id: str, name: str, payload: Any) -> Effects[None]:
    """Buffer a signal event; refuse one for a finished run."""
    check_stored_name("instance_id", instance_id)
    check_stored_name("Signal name", name)
    data = codec.encode(payload)
    found = yield from Store(Storage.send_signal, instance_id, name, data)
    if found in TERMINAL:
        raise BackendError(
            f"Cannot send signal '{name}' to workflow '{instance_id}': it has already "
            f"finished (state: {found.value.title()})"
        )
