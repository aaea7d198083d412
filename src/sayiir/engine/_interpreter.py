"""The workflow interpreter: walks the node tree, replays checkpoints, runs what is left.

It performs no I/O itself. It is a generator that yields effects
(``_effects``) to a driver; the sync driver performs them by blocking, the
async driver with ``await``. The plain in-memory path uses the same code with
``durable=False`` (no checkpoints, delays sleep, signals are refused).

Checkpoint keys are the node keys given at build (``core.keys``: the id, ``id#N``
for the N-th use of an id; never shared by two steps), prefixed by a scope for loop
iterations (``"loop_0@2/body"``), so replay needs no position pointer: a node whose
key has a checkpoint is skipped, and its stored output is used.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, cast

from sayiir.backends.protocol import EngineStorage, QueueStorage, Storage
from sayiir.core.codec import Codec
from sayiir.core.context import TaskExecutionContext
from sayiir.core.describe import describe as describe_exception
from sayiir.core.describe import exc_text, storable
from sayiir.core.metadata import RetryPolicy, TaskMetadata
from sayiir.core.nodes import (
    Chain,
    ChildNode,
    DelayNode,
    ForkNode,
    LoopNode,
    RouteNode,
    SignalNode,
    TaskNode,
    WorkflowDefinition,
    key_fn_id,
    loop_scope,
    timeout_key,
)
from sayiir.core.records import (
    AttemptRecord,
    AttemptState,
    Claim,
    ClaimAsk,
    ControlRequest,
    FinalState,
    InstanceRecord,
    QueueItem,
    Status,
    StepRecord,
    applied_request,
)
from sayiir.core.task_limits import GateAnswer, GateAsk, TaskLimits
from sayiir.engine import _gate, _observe
from sayiir.engine._effects import Call, Effects, Parallel, Sleep, Store
from sayiir.engine._invoke import CallResult, TaskTimeout, call_sync, user_traceback
from sayiir.errors import BackendError

__all__ = ["Ended", "Execution", "Failure", "Lane", "WorkerMode"]

_SCALARS = (str, int, float, bool, type(None))
_NO_VALUE = object()
# ``tuple.__new__`` builds the NamedTuple without its generated ``__new__`` (one call less).
_new_context = tuple.__new__


class Failure(Exception):
    """The run failed; ``error`` is what the status shows, ``detail`` adds the traceback."""

    def __init__(self, error: str, detail: str | None = None, *, decode: bool = False) -> None:
        error = storable(error)  # user text (a message, a route key) may hold NUL/surrogates
        super().__init__(error)
        self.error = error
        self.detail = detail
        self.decode = decode  # a value could not be decoded (DeserializationError in-memory)


class _Parked(Exception):
    """This path waits for a timer or a signal; the run parks when nothing else can move."""

    def __init__(self, status: Status, wake_at: float | None, node: str, signal: str | None):
        super().__init__(node)
        self.status = status
        self.wake_at = wake_at
        self.node = node
        self.signal = signal


class _Stopped(Exception):
    """A cancel or pause request was found at a step boundary."""

    def __init__(self, request: ControlRequest) -> None:
        super().__init__(request.kind)
        self.request = request


class _Suspended(Exception):
    """Worker mode: this path needs a task that another worker runs or will claim."""


class Lane:
    """Per path of execution: checkpoints not yet written, and whether calls run inline.

    Checkpoints are written lazily, just before the next effect that matters
    (the next task call, a signal read, the end of the run), so that the last
    checkpoint and the final status share one write. On a worker, a lane is
    ``owned`` once it ran a task under this worker's claim: its next task is
    claimed by the same write that checkpoints the previous one. ``waiting`` is the queue
    entry a lane this worker does not own stopped at (a fork branch left for any worker):
    the worker may still take it (``Execution._spread``).
    """

    __slots__ = ("inline", "owned", "pending", "waiting")

    def __init__(self, inline: bool, owned: bool = False) -> None:
        self.inline = inline
        self.owned = owned
        self.pending: list[StepRecord] = []
        self.waiting: QueueItem | None = None


class WorkerMode:
    """An execution on a distributed worker: its current claim and what it leaves queued.

    Only tasks this worker holds a claim for run here; every other ready task
    becomes a queue entry for any worker (fork branches spread this way).
    """

    __slots__ = (
        "answer", "chain", "chained", "claim", "enqueued", "gated", "lease_secs", "stopping",
        "tags", "written",
    )  # fmt: skip

    def __init__(
        self,
        claim: Claim | None,
        lease_secs: float,
        stopping: Callable[[], bool],
        tags: frozenset[str] = frozenset(),
        gated: bool = False,
        chain: ClaimAsk | None = None,
    ) -> None:
        self.claim = claim
        self.lease_secs = lease_secs
        self.stopping = stopping
        self.tags = tags  # the task tags this worker serves
        # The storage asks a task's limits in the write that claims it (GatedQueueStorage);
        # ``answer``: what that write answered, for the task it claimed (``_gate.acquire``).
        self.gated = gated
        self.answer: GateAnswer | None = None
        # The storage claims the worker's next entry in the write that ends the run
        # (ChainedQueueStorage): what to ask, and what that write claimed (``_runs._end``).
        self.chain = chain
        self.chained: list[Claim] = []
        self.enqueued: list[QueueItem] = []
        # Checkpoint keys this worker wrote for the run: its own writes never unblock it.
        self.written: set[str] = set()

    def drain(self) -> list[QueueItem]:
        items, self.enqueued = self.enqueued, []
        return items

    def wrote(self, steps: list[StepRecord]) -> list[StepRecord]:
        """Note the keys of ``steps`` (about to be written under the claim); returns them."""
        self.written.update(step.key for step in steps)
        return steps


def describe(exc: BaseException) -> str:
    """``"<ExcType>: <message>"``, the error text of statuses and ``TaskError``; never raises."""
    if type(exc) is TaskTimeout:
        return exc_text(exc)
    return describe_exception(exc)


def _loop_envelope(value: Any, loop_id: str) -> tuple[bool, Any]:
    if isinstance(value, dict) and value.get("_loop") in ("again", "done") and "value" in value:
        return value["_loop"] == "done", value["value"]
    raise Failure(
        f"Failed to decode output of loop '{loop_id}' (expected LoopEnvelope): "
        "missing or invalid '_loop' tag in LoopResult JSON",
        decode=True,
    )


@dataclass(slots=True)
class Ended:
    """How an execution ended (``Execution.run``).

    ``final`` is the state to store (``None``: a worker's path waits for tasks of other
    workers); ``output`` the run's output when completed, the ``Failure`` when failed;
    ``pending`` the checkpoints not written yet (they go with ``final``).
    """

    final: FinalState | None
    output: Any
    pending: list[StepRecord]


class Execution:
    """One execution (start or resume) of one instance; create a new one per call."""

    def __init__(
        self,
        definition: WorkflowDefinition,
        registry: Mapping[str, Callable[[Any], Any]],
        codec: Codec,
        instance_id: str,
        *,
        durable: bool,
        checkpoints: dict[str, bytes] | None = None,
        attempts: dict[str, AttemptState] | None = None,
        worker_id: str | None = None,
        worker: WorkerMode | None = None,
        token: str | None = None,
        clock: Callable[[], float] = time.time,
        run: InstanceRecord | None = None,
    ) -> None:
        self.definition = definition
        self.registry = registry
        self.codec = codec
        self.instance_id = instance_id
        self.durable = durable
        self.checkpoints = checkpoints if checkpoints is not None else {}
        self.attempts = attempts if attempts is not None else {}
        self.worker_id = worker_id
        self.worker = worker
        self.token = token  # the run's InstanceRecord.token: our writes carry it
        self.clock = clock
        self.record = run  # the stored run (its trace context), None on the in-memory path
        self.scope: _observe.ExecutionScope | None = None  # while an observer is installed
        self._roundtrip: Callable[[Any], Any] = getattr(codec, "roundtrip", None) or (
            lambda v: codec.decode(codec.encode(v))
        )
        meta_json = definition.metadata_json
        self._workflow_metadata = json.loads(meta_json) if meta_json is not None else None
        self._metas: dict[Any, Any] = definition.runtime_cache
        # The last task output and its encoding: the final output is usually that value.
        self._last_encoded: tuple[Any, bytes | None] = (_NO_VALUE, None)

    # -- entry point ---------------------------------------------------------------------

    def run(self, value: Any, inline: bool) -> Effects[Ended]:
        """Execute the whole workflow on ``value``; return how it ended.

        Not a generator itself: unobserved, it hands back ``_run``'s (one frame less for
        every effect of the run to pass through)."""
        obs = _observe.OBSERVER
        if obs is None:
            return self._run(value, inline)
        return self._observed(obs, value, inline)

    def _observed(self, obs: _observe.Observer, value: Any, inline: bool) -> Effects[Ended]:
        definition = self.definition
        scope = obs.execution(
            definition.workflow_id,
            definition.definition_hash,
            self.instance_id,
            self.record,
            self.worker_id,
        )
        self.scope = scope
        try:
            ended = yield from self._run(value, inline)
        except BaseException as exc:
            scope.end(None, exc)
            raise
        scope.end(ended.final, None)  # a failed run: its status says why (the task's span too)
        return ended

    def _run(self, value: Any, inline: bool) -> Effects[Ended]:
        worker = self.worker
        lane = Lane(inline, owned=worker is not None and _free(worker, self.checkpoints))
        try:
            output = yield from self.chain(self.definition.nodes, value, "", lane)
            data = self._final_output(output)
        except Failure as f:
            return Ended(FinalState(Status.FAILED, error=f.error), f, lane.pending)
        except _Parked as p:
            self._resume_later(p)
            final = FinalState(p.status, wake_at=p.wake_at, park_node=p.node, signal_name=p.signal)
            return Ended(final, None, lane.pending)
        except _Suspended:
            return Ended(None, None, lane.pending)
        except _Stopped as s:
            req = s.request
            status = Status.CANCELLED if req.kind == "cancel" else Status.PAUSED
            return Ended(FinalState(status, reason=req.reason, by=req.by), None, lane.pending)
        except BackendError:
            raise  # storage failed or refused: the run keeps what storage has (a resume goes on)
        except Exception as exc:
            # Anything else is the engine's (or a codec's) own failure: the run is failed with
            # it, never left running.
            failure = _engine_failure(exc)
            return Ended(FinalState(Status.FAILED, error=failure.error), failure, lane.pending)
        return Ended(FinalState(Status.COMPLETED, output=data), output, lane.pending)

    def _final_output(self, output: Any) -> bytes | None:
        """The encoded output of the run (usually the last task's, encoded already)."""
        if not self.durable:
            return None
        last_value, last_data = self._last_encoded
        if output is last_value:
            return last_data
        try:
            return _encoded(self.codec, output)
        except Exception as exc:
            raise _task_failure(exc, f"{describe(exc)} (output of the workflow)") from None

    # -- structure -----------------------------------------------------------------------

    def chain(self, nodes: Chain, value: Any, scope: str, lane: Lane) -> Effects[Any]:
        for node in nodes:
            # Exact classes (none is subclassed): ``type(node) is`` is the cheapest dispatch.
            if type(node) is TaskNode:
                value = yield from self.task(node, value, scope, lane)
            elif type(node) is ForkNode:
                value = yield from self.fork(node, value, scope, lane)
            elif type(node) is RouteNode:
                value = yield from self.route(node, value, scope, lane)
            elif type(node) is LoopNode:
                value = yield from self.loop(node, value, scope, lane)
            elif type(node) is ChildNode:
                value = yield from self.chain(node.body, value, scope, lane)
            elif type(node) is DelayNode:
                value = yield from self.delay(node, value, scope, lane)
            else:
                value = yield from self.signal(cast(SignalNode, node), scope, lane)
        return value

    def fork(self, node: ForkNode, value: Any, scope: str, lane: Lane) -> Effects[Any]:
        if self.worker is None:
            yield from self.flush(lane)
            # Branch lanes call inline when this one does (the sync driver): a branch then
            # runs whole on the thread that takes it (``_drive._parallel``), calls included.
            inline = lane.inline
            branches = [self._branch(b, value, scope, Lane(inline)) for b in node.branches]
            results = yield from Parallel(branches)
        else:
            results = yield from self._spread(node, value, scope, lane)
        parked: list[_Parked] = []
        suspended = False
        for result in results:
            if isinstance(result, Failure | _Stopped):
                raise result
            if isinstance(result, _Parked):
                parked.append(result)
            elif isinstance(result, _Suspended):
                suspended = True
            elif isinstance(result, BaseException):
                raise result
        if suspended:
            for p in parked:  # their wake-ups must not wait for the other branches
                self._resume_later(p)
            raise _Suspended
        if parked:
            raise _merge_parked(parked)
        joined = dict(zip(node.branch_keys, results, strict=True))
        return (yield from self.task(node.join, joined, scope, lane))

    def _spread(self, node: ForkNode, value: Any, scope: str, lane: Lane) -> Effects[list[Any]]:
        """Worker mode: queue the branches for other workers, run the first one here, then
        take the queued ones nobody took yet, one by one.

        The branches this worker does not own only reach their first task (and
        queue it), so they are walked first; the owned branch runs last. Then each write
        that checkpoints what this worker finished also claims the next branch still
        queued (``advance(next_item=...)``): small branches cost one write each, not a
        claim, a load, a write and a re-read on another worker, while a branch another
        worker took already (a slow fork keeps both busy) ends the taking.
        """
        count = len(node.branches)
        results: list[Any] = [None] * count
        lanes = [Lane(lane.inline, owned=lane.owned and i == 0) for i in range(count)]
        # What the parent finished is written with the first branch's first write, together
        # with the other branches' queue entries: other workers never see them without it.
        lanes[0].pending, lane.pending = lane.pending, []
        for i in [*range(1, count), 0]:
            results[i] = yield from self._walk(node.branches[i], value, scope, lanes[i])
        for i in range(count):
            item = lanes[i].waiting
            if item is None or not isinstance(results[i], _Suspended):
                continue
            if not (yield from self._take_queued(item, lanes)):
                break
            lanes[i] = Lane(lane.inline)
            results[i] = yield from self._walk(node.branches[i], value, scope, lanes[i])
        # What the branches finished is not written branch by branch: it goes with the next
        # write of this turn (the join's claim, or the write that suspends or ends the turn),
        # which always carries the lane's pending checkpoints. One write, not one per branch.
        for branch in lanes:
            lane.pending += branch.pending
        if any(branch.owned for branch in lanes):
            lane.owned = True  # the join may run here once every branch is done
        return results

    def _walk(self, chain: Chain, value: Any, scope: str, lane: Lane) -> Effects[Any]:
        """A branch on a worker: its output, or how it stopped (``_spread``)."""
        try:
            return (yield from self.chain(chain, value, scope, lane))
        except (Failure, _Parked, _Stopped, _Suspended) as exc:
            return exc

    def _take_queued(self, item: QueueItem, lanes: list[Lane]) -> Effects[bool]:
        """Claim ``item``, a branch left queued, in the write of every checkpoint the fork's
        lanes hold; False when it is not taken (checkpointed or claimed meanwhile; the
        claim is kept), or this worker holds no claim or is stopping."""
        worker = self.worker
        assert worker is not None
        if worker.claim is None or worker.stopping():
            return False
        steps: list[StepRecord] = []
        for other in lanes:
            steps += other.pending
            other.pending = []
        return (yield from self._move(worker, steps, item))

    def _move(
        self, worker: WorkerMode, steps: list[StepRecord], item: QueueItem,
        gate: GateAsk | None = None,
    ) -> Effects[bool]:  # fmt: skip
        """Checkpoint ``steps``, queue what the turn leaves, and move the claim to ``item``,
        in one write; whether the claim moved (else it is kept: ``QueueStorage.advance``).
        With ``gate`` the same write asks the task's limits (``GatedQueueStorage``)."""
        assert worker.claim is not None
        if gate is not None and worker.gated:
            request, worker.claim, worker.answer = yield from Store(
                EngineStorage.advance_gated,
                worker.claim,
                worker.wrote(steps),
                enqueue=worker.drain(),
                next_item=item,
                lease_secs=worker.lease_secs,
                gate=gate,
            )
        else:
            request, worker.claim = yield from Store(
                QueueStorage.advance,
                worker.claim,
                worker.wrote(steps),
                enqueue=worker.drain(),
                next_item=item,
                lease_secs=worker.lease_secs,
            )
        if request is not None:
            raise _Stopped(request)
        return _holds(worker, item.key)

    def _branch(self, chain: Chain, value: Any, scope: str, lane: Lane) -> Effects[Any]:
        try:
            out = yield from self.chain(chain, value, scope, lane)
        except (Failure, _Parked, _Stopped, _Suspended):
            # A parked or failed branch still keeps what it finished.
            yield from self.flush(lane, check=False)
            raise
        yield from self.flush(lane)
        return out

    def route(self, node: RouteNode, value: Any, scope: str, lane: Lane) -> Effects[Any]:
        fn_id = key_fn_id(node.id)
        ckey = scope + fn_id
        stored = self.checkpoints.get(ckey)
        if stored is not None:
            key = self._decode(stored, ckey)
        else:
            fn = self._lookup(fn_id)
            result, span = yield from self._call(fn, value, fn_id, ckey, None, lane, 1)
            _end(span, "completed" if result.ok else "failed", result.error)
            if not result.ok:
                assert result.error is not None
                raise _task_failure(result.error)
            key = result.value
            if not isinstance(key, str):
                raise Failure(
                    f"Failed to decode input for task '{fn_id}' (expected String (branch key)): "
                    f"got {type(key).__name__}",
                    decode=True,
                )
            if self.durable:
                now = self.clock()
                try:
                    data = _encoded(self.codec, key)
                except Exception as exc:
                    raise _task_failure(exc, f"{describe(exc)} (branch key of '{fn_id}')") from None
                lane.pending.append(StepRecord(ckey, data, fn_id, 1, now, now, self.worker_id))
        chosen = dict(node.branches).get(key, node.default)
        if chosen is None:
            raise Failure(f"Branch node '{node.id}': no branch matches key '{key}'")
        result_value = yield from self.chain(chosen, value, scope, lane)
        return {"branch": key, "result": result_value}

    def loop(self, node: LoopNode, value: Any, scope: str, lane: Lane) -> Effects[Any]:
        for i in range(node.max_iterations):
            out = yield from self.chain(node.body, value, loop_scope(scope, node.id, i), lane)
            done, value = _loop_envelope(out, node.id)
            if done:
                return value
        if node.on_max == "fail":
            raise Failure(f"Loop '{node.id}' exceeded max iterations ({node.max_iterations})")
        return value

    def delay(self, node: DelayNode, value: Any, scope: str, lane: Lane) -> Effects[Any]:
        if not self.durable:
            if node.seconds > 0:
                yield from Sleep(node.seconds, self.clock)
            return value
        key = scope + node.key
        wake_at = self._timer(key, node.seconds, lane)
        if self.clock() < wake_at:
            raise _Parked(Status.WAITING, wake_at, node.id, None)
        return value

    def signal(self, node: SignalNode, scope: str, lane: Lane) -> Effects[Any]:
        if not self.durable:
            raise Failure(
                f"Cannot resume workflow: AwaitSignal '{node.id}' not supported in sync executor"
            )
        key = scope + node.key
        stored = self.checkpoints.get(key)
        if stored is None:
            yield from self.flush(lane)
            stored = yield from Store(
                Storage.consume_signal, self.instance_id, node.signal_name, key, token=self.token
            )
            if stored is not None and self.scope is not None:
                self.scope.event("sayiir.signal.received", {"sayiir.signal.name": node.signal_name})
        if stored is not None:
            return self._decode(stored, key)
        wake_at = None
        if node.timeout_secs is not None:
            wake_at = self._timer(timeout_key(key), node.timeout_secs, lane)
            if self.clock() >= wake_at:
                raise Failure(f"Signal '{node.signal_name}' timed out")
        raise _Parked(Status.AWAITING_SIGNAL, wake_at, node.id, node.signal_name)

    # -- tasks ---------------------------------------------------------------------------

    def task(self, node: TaskNode, value: Any, scope: str, lane: Lane) -> Effects[Any]:
        key = scope + node.key
        stored = self.checkpoints.get(key)
        if stored is not None:
            return self._decode(stored, key)
        fn = self._lookup(node.id)
        meta = node.metadata
        policy, max_retries, timeout = _options(meta)
        failures = 0
        if key in self.attempts:
            failures = yield from self._restore_attempts(lane, key, node, max_retries)
        while True:
            attempt = failures + 1
            held = False
            if meta is not None and meta.limits is not None:  # the one check without limits
                result, span, started, held = yield from self._gated(
                    meta.limits, fn, value, node.id, key, timeout, lane, attempt
                )
            else:
                started = self.clock()
                if timeout is not None and self.durable:
                    yield from self._record_running(lane, key, node.id, attempt, started, timeout)
                if lane.inline and self.worker is None:
                    # The common case, without ``_call``'s generator frame (one per task).
                    if lane.pending:
                        yield from self.flush(lane)
                    result, span = self._call_inline(fn, value, node.id, key, timeout, attempt)
                else:
                    result, span = yield from self._call(
                        fn, value, node.id, key, timeout, lane, attempt
                    )
            if result.ok:
                out = result.value
                try:
                    nxt = self._output(out, lane, key, node.id, attempt, started, held)
                except Exception as exc:  # RecursionError, a custom codec's error: all count
                    result = _output_failure(exc, node.id)
                else:
                    if held:
                        yield from self._slot_freed(lane, node.id, key)
                    return _ended(span, nxt)
            failures += 1
            yield from self._attempt_failed(
                result, span, lane, key, node.id, failures, started, policy, max_retries, held
            )

    def _attempt_failed(
        self, result: CallResult, span: _observe.AttemptScope | None, lane: Lane, key: str,
        task_id: str, failures: int, started: float, policy: RetryPolicy | None,
        max_retries: int, held: bool = False,
    ) -> Effects[None]:  # fmt: skip
        """After the ``failures``-th failed attempt: give back the slot it ``held``, then fail
        the run when no retry is left, else store the failure and wait out its backoff."""
        if held:
            yield from _gate.release(self, task_id, key)
        assert result.error is not None
        error = result.text or describe(result.error)
        if failures > max_retries:
            _end(span, "failed", result.error)
            if self.durable:  # the last attempt is a task execution too
                yield from self._store_failure(lane, key, task_id, failures, started, error)
            raise _task_failure(result.error, error)
        assert policy is not None
        _end(span, "retry", result.error, policy.delay_for(failures))
        yield from self._record_failure(lane, key, task_id, failures, started, error, policy)

    def _gated(
        self, limits: TaskLimits, fn: Callable[[Any], Any], value: Any, task_id: str, key: str,
        timeout: float | None, lane: Lane, attempt: int,
    ) -> Effects[tuple[CallResult, _observe.AttemptScope | None, float, bool]]:  # fmt: skip
        """One attempt of a task with limits: wait at its gate (``_gate``), run it; whether
        it holds a slot still, which the caller gives back (``_slot_freed``) however the
        attempt ends. Raising, the slot is given back here."""
        held = yield from _gate.acquire(self, limits, fn, value, task_id, key, lane)
        try:
            started = self.clock()
            if timeout is not None and self.durable:
                yield from self._record_running(lane, key, task_id, attempt, started, timeout)
            result, span = yield from self._call(fn, value, task_id, key, timeout, lane, attempt)
        except GeneratorExit:
            raise
        except BaseException:
            if held:
                with contextlib.suppress(Exception):  # the original error matters more
                    yield from _gate.release(self, task_id, key)
            raise
        return result, span, started, held

    def _slot_freed(self, lane: Lane, task_id: str, key: str) -> Effects[None]:
        """A task that held a slot of its ``max_concurrent`` succeeded: durable, the write of
        its checkpoint gives the slot back (``StepRecord.frees_slot``), one statement
        less per limited step. A worker writes it in its next write of the turn, before any
        other body runs here and with no wait in between (a turn suspends, never sleeps); an
        in-process run writes it now, as the slot must not stay held while this run
        sleeps or waits for its other branches (which may wait for this very slot)."""
        if not self.durable:
            yield from _gate.release(self, task_id, key)
        elif self.worker is None:
            yield from self.flush(lane)

    def _output(
        self, out: Any, lane: Lane, key: str, task_id: str, attempt: int, started: float,
        frees_slot: bool = False,
    ) -> Any:  # fmt: skip
        """What the next step gets from a task's output ``out`` (as if read back from
        storage); durable, its checkpoint joins the lane's pending ones (and gives back
        the slot the attempt holds, if ``frees_slot``)."""
        if not self.durable:
            return self._roundtrip(out)
        data = _encoded(self.codec, out)
        nxt = out if type(out) in _SCALARS else self.codec.decode(data)
        self._last_encoded = (nxt, data)
        lane.pending.append(
            StepRecord(
                key, data, task_id, attempt, started, self.clock(), self.worker_id, frees_slot
            )
        )
        return nxt

    def _record_running(
        self, lane: Lane, key: str, task_id: str, attempt: int, started: float, timeout: float
    ) -> Effects[None]:
        """Store that an attempt with a timeout runs, and its deadline: a resume after a crash
        counts it as timed out once the deadline passed."""
        yield from self.flush(lane)
        yield from self._record_checked(
            AttemptRecord(
                key,
                task_id,
                attempt,
                "running",
                started,
                deadline=started + timeout,
                worker_id=self.worker_id,
            ),
        )

    def _restore_attempts(
        self, lane: Lane, key: str, node: TaskNode, max_retries: int
    ) -> Effects[int]:
        """Continue the retry schedule of earlier executions; return the failures so far."""
        state = self.attempts[key]
        failures = state.failures
        meta = node.metadata
        if state.running_deadline is not None and self.clock() >= state.running_deadline:
            # The process died while this attempt ran, after its deadline had passed.
            failures += 1
            timeout = meta.timeout_secs if meta is not None else None
            error = str(TaskTimeout(node.id, timeout or 0.0))
            if failures > max_retries:
                raise Failure(error)
            assert meta is not None and meta.retries is not None
            yield from self._record_failure(
                lane, key, node.id, failures, self.clock(), error, meta.retries
            )
        elif state.next_retry_at is not None:
            wait = state.next_retry_at - self.clock()
            if wait > 0:
                if self.worker is not None:
                    self._retry_later(key, node.id, state.next_retry_at)
                yield from Sleep(wait, self.clock)
        return failures

    def _store_failure(
        self,
        lane: Lane,
        key: str,
        task_id: str,
        attempt: int,
        started: float,
        error: str,
        retry_in: float | None = None,
    ) -> Effects[None]:
        """Store a failed attempt; with ``retry_in``, stop if a cancel/pause is waiting."""
        yield from self.flush(lane, check=retry_in is not None)
        now = self.clock()
        record = AttemptRecord(
            key, task_id, attempt, "failed", started, now, error,
            None if retry_in is None else now + retry_in, worker_id=self.worker_id,
        )  # fmt: skip
        if retry_in is None:
            yield from Store(Storage.record_attempt, self.instance_id, record, token=self.token)
        else:
            yield from self._record_checked(record)

    def _record_failure(
        self,
        lane: Lane,
        key: str,
        task_id: str,
        failures: int,
        started: float,
        error: str,
        policy: RetryPolicy,
    ) -> Effects[None]:
        delay = policy.delay_for(failures)
        if self.durable:
            yield from self._store_failure(lane, key, task_id, failures, started, error, delay)
        if delay > 0:
            if self.worker is not None:
                self._retry_later(key, task_id, self.clock() + delay)
            yield from Sleep(delay, self.clock)
            if self.durable:
                # A cancel or pause asked for during the backoff stops the next attempt.
                record = yield from Store(Storage.get_instance, self.instance_id)
                request = None if record is None else record.request or applied_request(record)
                if request is not None:
                    raise _Stopped(request)

    def _call(
        self,
        fn: Callable[[Any], Any],
        value: Any,
        task_id: str,
        key: str,
        timeout: float | None,
        lane: Lane,
        attempt: int,
    ) -> Effects[tuple[CallResult, _observe.AttemptScope | None]]:
        """Call a task once; return its ``CallResult`` and the attempt's observer scope
        (``None`` unless an observer is installed), for the caller to end with the outcome."""
        if self.worker is not None:
            yield from self._take(key, task_id, fn, lane)
        elif lane.pending:
            yield from self.flush(lane)
        if lane.inline:
            return self._call_inline(fn, value, task_id, key, timeout, attempt)
        ctx = self._context(fn, task_id, attempt)
        scope = self.scope
        span = None if scope is None else scope.attempt(task_id, key, attempt)
        return (yield from Call(fn, value, ctx, timeout, span)), span

    def _call_inline(
        self,
        fn: Callable[[Any], Any],
        value: Any,
        task_id: str,
        key: str,
        timeout: float | None,
        attempt: int,
    ) -> tuple[CallResult, _observe.AttemptScope | None]:
        """``_call`` on this thread, once its storage work is done (not a generator)."""
        ctx = self._context(fn, task_id, attempt)
        scope = self.scope
        span = None if scope is None else scope.attempt(task_id, key, attempt)
        return call_sync(fn, value, ctx, timeout, span), span

    def _context(
        self, fn: Callable[[Any], Any], task_id: str, attempt: int
    ) -> TaskExecutionContext:
        return _new_context(
            TaskExecutionContext,
            (
                self.definition.workflow_id,
                self.instance_id,
                task_id,
                self._meta(task_id, fn),
                self._workflow_metadata,
                attempt,
            ),
        )

    # -- worker mode -----------------------------------------------------------------------

    def _take(
        self, key: str, task_id: str, fn: Callable[[Any], Any], lane: Lane,
        gate: GateAsk | None = None,
    ) -> Effects[None]:  # fmt: skip
        """Decide whether this worker runs the task at ``key`` now, or leaves it queued.
        ``gate``: the task's limits, asked in the write that claims it, if one does (the
        answer is left in ``WorkerMode.answer``)."""
        worker = self.worker
        assert worker is not None
        if _holds(worker, key):
            lane.owned = True
            return
        item = self._queue_item(key, task_id, fn)
        serves = worker.tags.issuperset(item.tags)
        if not (lane.owned and worker.claim is not None and serves) or worker.stopping():
            worker.enqueued.append(item)
            if serves:
                lane.waiting = item
            raise _Suspended
        if (
            worker.claim.key == ""
            and not lane.pending
            and not worker.enqueued
            and not self.checkpoints
            and not self.attempts
        ):
            # A "continue" claim covers the first task of a fresh run: the claim moves only
            # with that task's checkpoint (a crash before it re-runs the task, as it should).
            # Only there: a later wake-up (a signal sent while a task runs) must not run a
            # task that another worker may hold; the write below claims it or finds it held.
            return
        # Continue this lane here: checkpoint the last task and claim this one in one write.
        steps, lane.pending = lane.pending, []
        if not (yield from self._move(worker, steps, item, gate)):
            raise _Suspended  # done or held by another worker: this turn re-reads

    def _queue_item(
        self, key: str, task_id: str, fn: Callable[[Any], Any], at: float | None = None
    ) -> QueueItem:
        meta = self._meta(task_id, fn)
        return QueueItem(key, task_id, meta.priority or 3, tuple(meta.tags or ()), at)

    def _retry_later(self, key: str, task_id: str, at: float) -> NoReturn:
        """Worker mode: a retry backoff is not slept through holding the claim (one failing
        task would idle the worker); the task goes back to the queue, due at ``at``, for
        whichever worker is free then. Its failed attempts are stored already."""
        assert self.worker is not None
        self.worker.enqueued.append(self._queue_item(key, task_id, self._lookup(task_id), at))
        raise _Suspended

    def _resume_later(self, parked: _Parked) -> None:
        """Worker mode: a timer (or a signal timeout) becomes a queue entry due at ``wake_at``."""
        if self.worker is not None and parked.wake_at is not None:
            self.worker.enqueued.append(QueueItem("", available_at=parked.wake_at))

    # -- helpers -------------------------------------------------------------------------

    def flush(self, lane: Lane, *, check: bool = True) -> Effects[None]:
        """Write the lane's pending checkpoints; stop if a cancel/pause is waiting."""
        if not lane.pending:
            return
        steps, lane.pending = lane.pending, []
        worker = self.worker
        if worker is not None and worker.claim is not None:
            request, _ = yield from Store(
                QueueStorage.advance,
                worker.claim,
                worker.wrote(steps),
                enqueue=worker.drain(),
                lease_secs=worker.lease_secs,
            )
        else:
            request = yield from Store(
                Storage.save_steps, self.instance_id, steps, token=self.token
            )
        if request is not None and check:
            raise _Stopped(request)

    def _record_checked(self, attempt: AttemptRecord) -> Effects[None]:
        """Store an attempt; stop if a cancel/pause is waiting."""
        request = yield from Store(
            Storage.record_attempt, self.instance_id, attempt, token=self.token
        )
        if request is not None:
            raise _Stopped(request)

    def _timer(self, key: str, seconds: float, lane: Lane) -> float:
        stored = self.checkpoints.get(key)
        if stored is not None:
            return float(self._decode(stored, key))
        # Whole microseconds: what every backend stores, so statuses read back identically.
        wake_at = round(self.clock() + seconds, 6)
        data = self.codec.encode(wake_at)
        self.checkpoints[key] = data
        lane.pending.append(StepRecord(key, data, None, 1, wake_at - seconds, wake_at - seconds))
        return wake_at

    def _decode(self, data: bytes, key: str) -> Any:
        try:
            return self.codec.decode(data)
        except Exception as exc:
            raise Failure(
                f"DeserializationError: checkpoint '{key}' of instance '{self.instance_id}' "
                f"cannot be decoded with codec '{self.codec.name}': {exc_text(exc)}",
                decode=True,
            ) from None

    def _lookup(self, task_id: str) -> Callable[[Any], Any]:
        fn = self.registry.get(task_id)
        if fn is None:
            raise Failure(f"KeyError: \"Task '{task_id}' not found\"")
        return fn

    def _meta(self, task_id: str, fn: Callable[[Any], Any]) -> TaskMetadata:
        """The metadata a task sees at runtime, derived once per (task id, callable)."""
        cache_key = (task_id, fn)
        meta: TaskMetadata | None = self._metas.get(cache_key)
        if meta is None:
            declared = getattr(fn, "_metadata", None)
            meta = declared.copy() if isinstance(declared, TaskMetadata) else TaskMetadata()
            if meta.tags is None:
                meta.tags = []
            if meta.display_name is None:
                meta.display_name = task_id
            self._metas[cache_key] = meta
        return meta


def _options(meta: TaskMetadata | None) -> tuple[RetryPolicy | None, int, float | None]:
    """A task's retry policy, its number of retries and its timeout (none without metadata)."""
    if meta is None:
        return None, 0, None
    policy = meta.retries
    return policy, policy.max_retries if policy is not None else 0, meta.timeout_secs


def _end(
    span: _observe.AttemptScope | None,
    outcome: str,
    error: BaseException | None = None,
    retry_in: float | None = None,
) -> None:
    """End a task attempt's observer scope (when observed) with its outcome."""
    if span is not None:
        span.end(outcome, error, retry_in)


def _ended(span: _observe.AttemptScope | None, value: Any) -> Any:
    """``value``, after ending the attempt's observer scope (when observed) as completed."""
    if span is not None:
        span.end("completed", None, None)
    return value


def _holds(worker: WorkerMode, key: str) -> bool:
    return worker.claim is not None and worker.claim.key == key


def _free(worker: WorkerMode, checkpoints: Mapping[str, bytes]) -> bool:
    """Whether the worker's claim lets it go on along the run's main path: a "continue"
    claim, or a claim whose own task is done (a turn that re-read the run: it may then take
    the join, or what comes next, in the same write as its next checkpoint)."""
    claim = worker.claim
    return claim is not None and (claim.key == "" or claim.key in checkpoints)


def _task_failure(exc: BaseException, text: str | None = None) -> Failure:
    """The run's failure from a task's (or a codec's) exception: its text and user frames."""
    return Failure(text or describe(exc), user_traceback(exc))


def _engine_failure(exc: Exception) -> Failure:
    return _task_failure(exc, f"{describe(exc)} (raised inside sayiir while running the workflow)")


def _encoded(codec: Codec, value: Any) -> bytes:
    """``codec.encode(value)``, refusing a result no backend could store as bytes."""
    data = codec.encode(value)
    if type(data) is not bytes and not isinstance(data, bytes | bytearray):
        raise TypeError(
            f"codec {codec.name!r} returned {type(data).__name__} from encode(), not bytes"
        )
    return data


def _output_failure(exc: Exception, task_id: str) -> CallResult:
    """A task output that could not be encoded: a failed attempt of that task.

    The exception is kept as it is (never rebuilt: its class may not take one message); the
    task is named in a note and in the error text, after the reference's message.
    """
    with contextlib.suppress(Exception):  # __notes__ replaced by something not a list
        exc.add_note(f"while encoding the output of task {task_id!r}")
    return CallResult(False, error=exc, text=f"{describe(exc)} (output of task '{task_id}')")


def _merge_parked(parked: list[_Parked]) -> _Parked:
    """A fork parks on its earliest wake-up; a delay wins over a signal for the status."""
    delays = [p for p in parked if p.status is Status.WAITING]
    pool = delays or parked
    timed = [p for p in pool if p.wake_at is not None]
    return min(timed, key=lambda p: p.wake_at or 0.0) if timed else pool[0]
