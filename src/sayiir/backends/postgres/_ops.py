"""The storage operations, written once, without I/O.

Each operation is a generator: it yields ``Q`` requests (a named query of ``queries.sql``
with its parameters) and receives the rows; its return value is the operation's result.
``_io`` runs these generators on a ``psycopg.Connection`` or ``psycopg.AsyncConnection``,
so the sync ``Storage`` and the ``AsyncStorage`` share every line of logic, as the engine's
interpreter shares its logic between ``drive`` and ``adrive``.

Every write is one transaction: a single statement in autocommit, or, for a replacing
``create_instance`` (and a terminal ``_queue.advance``), a row lock and the write between
``begin`` and ``commit``. So a call re-sent after a lost connection is either a repeat of
a committed write or the first one; the ``retry`` flags and tokens below let the repeat
recognise its own earlier commit.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from functools import cache, lru_cache
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4

from sayiir.backends._sqlrows import instance_params
from sayiir.backends.postgres._rows import (
    INSTANCE_WIDTH,
    AdvanceRow,
    InstanceRow,
    LoadRow,
    RecoverRow,
    TouchedRow,
)
from sayiir.core.records import (
    TERMINAL,
    AttemptRecord,
    AttemptState,
    ControlRequest,
    FinalState,
    InstanceRecord,
    RunState,
    Status,
    StepRecord,
    applied_request,
    control_decision,
    executes,
    fold_attempt,
    queue_priority,
    write_decision,
)
from sayiir.errors import (
    InstanceNotFoundError,
    RunReplacedError,
)

__all__ = [
    "Op",
    "Q",
    "Rows",
    "Script",
    "consume_signal",
    "create_instance",
    "final_params",
    "finish",
    "get_checkpoint",
    "get_instance",
    "load",
    "obeyed",
    "ping",
    "record_attempt",
    "record_of",
    "renew_lease",
    "request_control",
    "save_steps",
    "send_signal",
    "start_token",
    "step_params",
    "take_over",
    "unpause",
]

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


class Q:
    """Run query ``name`` of ``queries.sql``.

    ``prepare``: a hot query, sent as a server-side prepared statement with binary results.
    Others (migrations, transaction control) run unprepared, in the simple protocol when
    they have no parameters.
    """

    __slots__ = ("name", "params", "prepare")

    def __init__(
        self, name: str, params: dict[str, Any] | None = None, *, prepare: bool = True
    ) -> None:
        self.name = name
        self.params = params
        self.prepare = prepare

    def __repr__(self) -> str:
        return f"Q({self.name!r})"


class Script:
    """Run the body of migration ``version`` (several statements, no parameters)."""

    __slots__ = ("version",)

    def __init__(self, version: int) -> None:
        self.version = version

    def __repr__(self) -> str:
        return f"Script({self.version})"


class Composed:
    """Run a statement composed at call time from fixed fragments (the console's run list,
    whose optional filters each add a condition; ``_console``), unprepared."""

    __slots__ = ("params", "text")

    def __init__(self, text: str, params: dict[str, Any]) -> None:
        self.text = text
        self.params = params

    def __repr__(self) -> str:
        return "Composed(...)"


Request = Q | Script | Composed
Op = Generator[Request, Rows, T]

_STOPPED = (Status.CANCELLED, Status.PAUSED)
DEFAULT_LEASE_SECS = 30.0


# -- rows <-> records ----------------------------------------------------------------------


def record_of(row: tuple[Any, ...], at: int = 0) -> InstanceRecord:
    """An ``InstanceRecord`` from the ``_instance_columns`` of ``row`` starting at ``at``."""
    r = InstanceRow._make(row[at : at + INSTANCE_WIDTH])
    kind = r.request_kind
    return InstanceRecord(
        r.instance_id,
        r.workflow_id,
        r.definition_hash,
        Status(r.status),
        r.input,
        output=r.output,
        error=r.error,
        reason=r.reason,
        cancelled_by=r.cancelled_by,
        paused_by=r.paused_by,
        wake_at=r.wake_at,
        park_node=r.park_node,
        signal_name=r.signal_name,
        request=None if kind is None else ControlRequest(kind, r.request_reason, r.request_by),
        created_at=r.created_at,
        updated_at=r.updated_at,
        completed_at=r.completed_at,
        distributed=r.distributed,
        token=None if r.start_token is None else str(r.start_token),
        lease_until=r.lease_until,
        traceparent=r.traceparent,
    )


def start_token(record: InstanceRecord) -> UUID:
    """The ``start_token`` stored with a new run: its ``InstanceRecord.token`` (a UUID, as
    the engine makes them), else a fresh one; it also lets a create re-sent after a lost
    connection recognise its own row."""
    return uuid4() if record.token is None else _uuid(record.token)


@lru_cache(maxsize=1024)
def _uuid(token: str) -> UUID:
    """A token as the UUID its column holds. Cached: a run's every write carries the same
    token, and parsing it each time was a few percent of a step's client CPU."""
    return UUID(token)


def _token(token: str | None) -> UUID | None:
    return None if token is None else _uuid(token)


def _refused(
    instance_id: str, token: str | None, final: Status | None = None
) -> Op[ControlRequest | None]:
    """A write found no row it may change: say why. The run is gone (raise), another
    execution owns it (raise), it has finished (raise), or a cancel or pause applied to it
    meanwhile wins over the write (return it: ``write_decision``)."""
    rows = yield Q("get_instance", {"id": instance_id})
    if not rows:
        raise InstanceNotFoundError(instance_id)
    record = record_of(rows[0])
    if token is not None and record.token is not None and record.token != token:
        raise RunReplacedError(instance_id)
    decision = write_decision(instance_id, record.status, final)
    if decision == "write":  # changed back meanwhile (unpaused): the caller may try again
        raise RunReplacedError(instance_id)
    return applied_request(record)


def _instance_params(
    record: InstanceRecord, token: UUID | None, lease_secs: float | None = None
) -> dict[str, Any]:
    """``instance_params`` plus this schema's: the queue priority, the execution's token
    and lease (``id`` is how every query here names the instance)."""
    params = instance_params(record)
    params["id"] = record.instance_id
    params["priority"] = queue_priority(record.priority)
    params["concurrency_key"] = record.concurrency_key
    params["concurrency_limit"] = record.concurrency_limit if record.concurrency_key else None
    params["start_token"] = token
    params["start_lease"] = lease_secs if executes(record) else None
    return params


def obeyed(instance_id: str, row: TouchedRow | AdvanceRow | RecoverRow) -> ControlRequest | None:
    """What the engine must obey after a write: the columns RETURNING by the _touch CTE."""
    record = InstanceRecord(
        instance_id, "", "", Status(row.status), b"", reason=row.reason,
        cancelled_by=row.cancelled_by, paused_by=row.paused_by,
    )  # fmt: skip
    applied = applied_request(record)
    if applied is not None:
        return applied
    kind = row.request_kind
    return None if kind is None else ControlRequest(kind, row.request_reason, row.request_by)


def _touched(instance_id: str, token: str | None, rows: Rows) -> Op[ControlRequest | None]:
    """The answer of a write through ``_touch``: what the engine must obey, or, when it
    changed nothing, why (``_refused``)."""
    if not rows:
        return (yield from _refused(instance_id, token))
    return obeyed(instance_id, TouchedRow._make(rows[0]))


def step_params(params: dict[str, Any], steps: Sequence[StepRecord]) -> str:
    """Add the parameters of ``{_steps}`` to ``params``; return the query-name suffix of
    the variant they fit (``_sql.VARIANTS``)."""
    if not steps:
        return "/0"
    if len(steps) == 1:
        step = steps[0]
        params["s_key"] = step.key
        params["s_task_id"] = step.task_id
        params["s_output"] = step.output
        params["s_attempt"] = step.attempt
        params["s_started"] = step.started_at
        params["s_finished"] = step.finished_at
        params["s_worker"] = step.worker_id
        return "/1/f" if step.frees_slot else "/1"
    # One statement cannot upsert a row twice: the last write of a key wins, as in memory.
    steps = list({s.key: s for s in steps}.values())
    params["keys"] = [s.key for s in steps]
    params["task_ids"] = [s.task_id for s in steps]
    params["outputs"] = [s.output for s in steps]
    params["attempts"] = [s.attempt for s in steps]
    params["started"] = [s.started_at for s in steps]
    params["finished"] = [s.finished_at for s in steps]
    params["workers"] = [s.worker_id for s in steps]
    return "/f" if any(s.frees_slot for s in steps) else ""


# -- operations ----------------------------------------------------------------------------


def ping() -> Op[int]:
    """A round trip that proves the pool hands out working connections."""
    rows = yield Q("server_info", prepare=False)
    return int(rows[0][0])


def create_instance(
    record: InstanceRecord,
    *,
    replace: bool,
    token: UUID,
    retry: bool,
    lease_secs: float = DEFAULT_LEASE_SECS,
) -> Op[InstanceRecord | None]:
    params = _instance_params(record, token, lease_secs)
    if replace:
        # Two statements: the row lock makes the second one's snapshot include every
        # checkpoint a concurrent writer of the old run committed, so none survives.
        yield Q("begin", prepare=False)
        yield Q("lock_instance", {"id": record.instance_id})
        yield Q("replace_instance", params)
        yield Q("commit", prepare=False)
        return None
    while True:
        inserted, *row = (yield Q("create_instance", params))[0]
        if inserted:
            return None
        if row[0] is not None:  # the instance_id of the run found there
            existing = record_of(tuple(row))
            if retry and existing.token == str(token):
                return None  # our first attempt committed before the connection broke
            return existing
        # A concurrent insert committed after this statement's snapshot: read again.


def load(instance_id: str) -> Op[RunState | None]:
    rows = yield Q("load", {"id": instance_id})
    if not rows:
        return None
    row = rows[0]
    more = LoadRow._make(row[INSTANCE_WIDTH:])
    keys, outputs = more.keys, more.outputs
    state = RunState(record_of(row), dict(zip(keys, outputs or (), strict=True)) if keys else {})
    if more.attempt_keys:
        for key, task_id, n, status, started, finished, error, retry_at, deadline, worker in zip(
            *cast("tuple[list[Any], ...]", more[2:]), strict=True
        ):
            fold_attempt(
                state.attempts.setdefault(key, AttemptState()),
                AttemptRecord(
                    key, task_id, n, status, started, finished, error, retry_at, deadline, worker
                ),
            )
    return state


def take_over(
    instance_id: str, token: str | None, new_token: str, lease_secs: float
) -> Op[InstanceRecord | None]:
    """``Storage.take_over`` in one statement (a re-sent one that finds its own first commit
    returns nothing: the resume then reports the run in progress, and its lease expires)."""
    params = {
        "id": instance_id,
        "token": _token(token),
        "new_token": _uuid(new_token),
        "lease": float(lease_secs),
    }
    rows = yield Q("take_over", params)
    return record_of(rows[0]) if rows else None


def renew_lease(instance_id: str, token: str, lease_secs: float) -> Op[bool]:
    params = {"id": instance_id, "token": _uuid(token), "lease": float(lease_secs)}
    rows = yield Q("renew_lease", params)
    return bool(rows)


def save_steps(
    instance_id: str,
    steps: Sequence[StepRecord],
    token: str | None = None,
    lease_secs: float = DEFAULT_LEASE_SECS,
) -> Op[ControlRequest | None]:
    params: dict[str, Any] = {"id": instance_id, "token": _token(token), "lease": lease_secs}
    rows = yield Q("save_steps" + step_params(params, steps), params)
    return (yield from _touched(instance_id, token, rows))


def record_attempt(
    instance_id: str,
    attempt: AttemptRecord,
    token: str | None = None,
    lease_secs: float = DEFAULT_LEASE_SECS,
) -> Op[ControlRequest | None]:
    finished = attempt.finished_at
    rows = yield Q(
        "record_attempt",
        {
            "id": instance_id,
            "token": _token(token),
            "lease": lease_secs,
            "key": attempt.key,
            "task_id": attempt.task_id,
            "attempt": attempt.attempt,
            "status": attempt.status,
            "worker_id": attempt.worker_id,
            "started": attempt.started_at,
            "finished": finished,
            "error": attempt.error,
            "next_retry_at": attempt.next_retry_at,
            "deadline": attempt.deadline,
        },
    )
    return (yield from _touched(instance_id, token, rows))


def consume_signal(
    instance_id: str,
    signal_name: str,
    key: str,
    token: str | None = None,
    lease_secs: float = DEFAULT_LEASE_SECS,
) -> Op[bytes | None]:
    """Idempotent per ``key``, so a call re-sent after a lost connection needs no flag."""
    params = {
        "id": instance_id,
        "name": signal_name,
        "key": key,
        "token": _token(token),
        "lease": lease_secs,
    }
    rows = yield Q("consume_signal", params)
    ours, payload, previous = rows[0]
    if not ours:
        yield from _refused(instance_id, token)
        return None  # a cancelled run takes no event; the engine's finish learns why
    found: bytes | None = previous if previous is not None else payload
    return found


def final_params(params: dict[str, Any], final: FinalState) -> dict[str, Any]:
    """The parameters of ``_finish_set`` (flags computed as ``InMemoryBackend._finish``)."""
    status = final.status
    stopped = status in _STOPPED
    terminal = status in TERMINAL
    params.update({
        "status": status.value,
        "output": final.output,
        "error": final.error,
        "wake_at": final.wake_at,
        "park_node": final.park_node,
        "signal_name": final.signal_name,
        "reason": final.reason,
        "by": final.by,
        "set_reason": stopped,
        "set_cancelled_by": status is Status.CANCELLED,
        "set_paused_by": status is Status.PAUSED,
        "terminal": terminal,
        "clear_request": stopped or terminal,
    })  # fmt: skip
    return params


def finish(
    instance_id: str, final: FinalState, steps: Sequence[StepRecord], token: str | None = None
) -> Op[ControlRequest | None]:
    params = final_params({"id": instance_id, "token": _token(token)}, final)
    rows = yield Q("finish" + step_params(params, steps), params)
    if not rows[0][0]:
        return (yield from _refused(instance_id, token, final.status))
    return None


def get_instance(instance_id: str) -> Op[InstanceRecord | None]:
    rows = yield Q("get_instance", {"id": instance_id})
    return record_of(rows[0]) if rows else None


def get_checkpoint(instance_id: str, key: str) -> Op[bytes | None]:
    rows = yield Q("get_checkpoint", {"id": instance_id, "key": key})
    return rows[0][0] if rows else None


@cache
def _decisions(kind: str) -> tuple[list[str], list[str]]:
    """The statuses where a ``kind`` request applies now, and where it is stored."""
    apply = [s.value for s in Status if control_decision(s, kind) == "apply"]
    store = [s.value for s in Status if control_decision(s, kind) == "request"]
    return apply, store


def request_control(instance_id: str, request: ControlRequest) -> Op[Status | None]:
    apply, store = _decisions(request.kind)
    applied = Status.CANCELLED if request.kind == "cancel" else Status.PAUSED
    rows = yield Q(
        "request_control",
        {
            "id": instance_id,
            "kind": request.kind,
            "reason": request.reason,
            "by": request.by,
            "applied_status": applied.value,
            "apply": apply,
            "request": store,
        },
    )
    return Status(rows[0][0]) if rows else None


def unpause(instance_id: str) -> Op[Status | None]:
    rows = yield Q("unpause", {"id": instance_id})
    if not rows:
        return None
    status, request_kind = rows[0][:2]
    if status == Status.PAUSED or request_kind == "pause":
        return Status.PAUSED
    return Status(status)


def send_signal(
    instance_id: str, signal_name: str, payload: bytes, *, send_id: UUID
) -> Op[Status | None]:
    rows = yield Q(
        "send_signal",
        {"id": instance_id, "name": signal_name, "payload": payload, "send_id": send_id},
    )
    found = rows[0][0]
    return None if found is None else Status(found)
