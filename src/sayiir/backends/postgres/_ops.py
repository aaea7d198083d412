"""The storage operations, written once, without I/O.

Each operation is a generator: it yields ``Q`` requests (a named query of ``queries.sql``
with its parameters) and receives the rows; its return value is the operation's result.
``_io`` runs these generators on a ``psycopg.Connection`` or ``psycopg.AsyncConnection``,
so the sync ``Storage`` and the ``AsyncStorage`` share every line of logic, as the engine's
interpreter shares its logic between ``drive`` and ``adrive``.

Every write is a single statement, so a call re-sent after a lost connection is either a
repeat of a committed write or the first one; the ``retry`` flags and tokens below let
the repeat recognise its own earlier commit.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from functools import cache
from typing import Any, TypeVar
from uuid import UUID, uuid4

from sayiir.core.records import (
    TERMINAL,
    AttemptRecord,
    AttemptState,
    Claim,
    ControlRequest,
    FinalState,
    InstanceRecord,
    QueueItem,
    RunState,
    Status,
    StepRecord,
    applied_request,
    control_decision,
    executes,
    fold_attempt,
    lease_expired,
    queue_priority,
    write_decision,
)
from sayiir.errors import (
    InstanceNotFoundError,
    LeaseLostError,
    RunReplacedError,
)

__all__ = [
    "Op",
    "Q",
    "Rows",
    "Script",
    "abandon",
    "advance",
    "claim",
    "consume_signal",
    "count_finished",
    "create_instance",
    "delete_finished",
    "enqueue",
    "finish",
    "get_checkpoint",
    "get_instance",
    "heartbeat",
    "load",
    "next_due",
    "ping",
    "record_attempt",
    "renew_lease",
    "request_control",
    "retention_cutoff",
    "save_steps",
    "send_signal",
    "start_token",
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


Request = Q | Script
Op = Generator[Request, Rows, T]

_STOPPED = (Status.CANCELLED, Status.PAUSED)
DEFAULT_LEASE_SECS = 30.0
_N_COLUMNS = 22  # the columns of _instance_columns in queries.sql


# -- rows <-> records ----------------------------------------------------------------------


def _record(row: tuple[Any, ...], at: int = 0) -> InstanceRecord:
    """An ``InstanceRecord`` from the ``_instance_columns`` of ``row`` starting at ``at``."""
    r = row[at : at + _N_COLUMNS]
    kind = r[13]
    return InstanceRecord(
        r[0], r[1], r[2], Status(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12],
        None if kind is None else ControlRequest(kind, r[14], r[15]),
        r[16], r[17], r[18], r[19], token=None if r[20] is None else str(r[20]),
        lease_until=r[21],
    )  # fmt: skip


def start_token(record: InstanceRecord) -> UUID:
    """The ``start_token`` stored with a new run: its ``InstanceRecord.token`` (a UUID, as
    the engine makes them), else a fresh one; it also lets a create re-sent after a lost
    connection recognise its own row."""
    return uuid4() if record.token is None else UUID(record.token)


def _token(token: str | None) -> UUID | None:
    return None if token is None else UUID(token)


def _refused(
    instance_id: str, token: str | None, final: Status | None = None
) -> Op[ControlRequest | None]:
    """A write found no row it may change: say why. The run is gone (raise), another
    execution owns it (raise), it has finished (raise), or a cancel or pause applied to it
    meanwhile wins over the write (return it: ``write_decision``)."""
    rows = yield Q("get_instance", {"id": instance_id})
    if not rows:
        raise InstanceNotFoundError(instance_id)
    record = _record(rows[0])
    if token is not None and record.token is not None and record.token != token:
        raise RunReplacedError(instance_id)
    decision = write_decision(instance_id, record.status, final)
    if decision == "write":  # changed back meanwhile (unpaused): the caller may try again
        raise RunReplacedError(instance_id)
    return applied_request(record)


def _instance_params(
    record: InstanceRecord, token: UUID | None, lease_secs: float | None = None
) -> dict[str, Any]:
    req = record.request
    return {
        "id": record.instance_id,
        "workflow_id": record.workflow_id,
        "definition_hash": record.definition_hash,
        "status": record.status.value,
        "input": record.input,
        "output": record.output,
        "error": record.error,
        "reason": record.reason,
        "cancelled_by": record.cancelled_by,
        "paused_by": record.paused_by,
        "wake_at": record.wake_at,
        "park_node": record.park_node,
        "signal_name": record.signal_name,
        "request_kind": None if req is None else req.kind,
        "request_reason": None if req is None else req.reason,
        "request_by": None if req is None else req.by,
        "distributed": record.distributed,
        "priority": queue_priority(record.priority),
        "start_token": token,
        "start_lease": lease_secs if executes(record) else None,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "completed_at": record.completed_at,
    }


def _obeyed(instance_id: str, row: tuple[Any, ...]) -> ControlRequest | None:
    """What the engine must obey after a write: the columns RETURNING by the _touch CTE."""
    status, reason, c_by, p_by, r_kind, r_reason, r_by = row
    record = InstanceRecord(
        instance_id, "", "", Status(status), b"", reason=reason, cancelled_by=c_by, paused_by=p_by
    )
    applied = applied_request(record)
    if applied is not None:
        return applied
    return None if r_kind is None else ControlRequest(r_kind, r_reason, r_by)


def _step_params(params: dict[str, Any], steps: Sequence[StepRecord]) -> str:
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
        return "/1"
    # One statement cannot upsert a row twice: the last write of a key wins, as in memory.
    steps = list({s.key: s for s in steps}.values())
    params["keys"] = [s.key for s in steps]
    params["task_ids"] = [s.task_id for s in steps]
    params["outputs"] = [s.output for s in steps]
    params["attempts"] = [s.attempt for s in steps]
    params["started"] = [s.started_at for s in steps]
    params["finished"] = [s.finished_at for s in steps]
    params["workers"] = [s.worker_id for s in steps]
    return ""


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
        row = (yield Q("create_instance", params))[0]
        if row[0]:
            return None
        if row[1] is not None:
            existing = _record(row, 1)
            if retry and existing.token == str(token):
                return None  # our first attempt committed before the connection broke
            return existing
        # A concurrent insert committed after this statement's snapshot: read again.


def load(instance_id: str) -> Op[RunState | None]:
    rows = yield Q("load", {"id": instance_id})
    if not rows:
        return None
    row = rows[0]
    at = _N_COLUMNS
    keys, outputs = row[at], row[at + 1]
    state = RunState(_record(row), dict(zip(keys, outputs, strict=True)) if keys else {})
    if row[at + 2]:
        for key, task_id, n, status, started, finished, error, retry_at, deadline, worker in zip(
            *row[at + 2 : at + 12], strict=True
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
        "new_token": UUID(new_token),
        "lease": float(lease_secs),
    }
    rows = yield Q("take_over", params)
    return _record(rows[0]) if rows else None


def renew_lease(instance_id: str, token: str, lease_secs: float) -> Op[bool]:
    params = {"id": instance_id, "token": UUID(token), "lease": float(lease_secs)}
    rows = yield Q("renew_lease", params)
    return bool(rows)


def save_steps(
    instance_id: str,
    steps: Sequence[StepRecord],
    token: str | None = None,
    lease_secs: float = DEFAULT_LEASE_SECS,
) -> Op[ControlRequest | None]:
    params: dict[str, Any] = {"id": instance_id, "token": _token(token), "lease": lease_secs}
    rows = yield Q("save_steps" + _step_params(params, steps), params)
    if not rows:
        return (yield from _refused(instance_id, token))
    return _obeyed(instance_id, rows[0])


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
    if not rows:
        return (yield from _refused(instance_id, token))
    return _obeyed(instance_id, rows[0])


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


def _final_params(params: dict[str, Any], final: FinalState) -> dict[str, Any]:
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
    params = _final_params({"id": instance_id, "token": _token(token)}, final)
    rows = yield Q("finish" + _step_params(params, steps), params)
    if not rows[0][0]:
        return (yield from _refused(instance_id, token, final.status))
    return None


def get_instance(instance_id: str) -> Op[InstanceRecord | None]:
    rows = yield Q("get_instance", {"id": instance_id})
    return _record(rows[0]) if rows else None


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


# -- worker queue --------------------------------------------------------------------------


def _item_params(params: dict[str, Any], items: Sequence[QueueItem]) -> str:
    """Add the parameters of ``{_items}`` to ``params``; return the query-name suffix of
    the variant they fit (``_sql.VARIANTS``). Parallel arrays; each item's tags are a slice
    of one flat array."""
    if not items:
        return "/q0"
    tags: list[str] = []
    lo: list[int] = []
    hi: list[int] = []
    for item in items:
        lo.append(len(tags) + 1)
        tags.extend(item.tags)
        hi.append(len(tags))
    params["q_keys"] = [item.key for item in items]
    params["q_task_ids"] = [item.task_id for item in items]
    params["q_priorities"] = [queue_priority(item.priority) for item in items]
    params["q_tags"] = tags
    params["q_tag_lo"] = lo
    params["q_tag_hi"] = hi
    params["q_at"] = [item.available_at for item in items]
    return ""


def _claims(rows: Rows, worker_id: str) -> list[Claim]:
    """Claims from rows (instance, key, attempt, hash, worker whose lease expired, last
    error); a lease taken over is the cause of the previous claim's end."""
    return [
        Claim(
            r[0],
            r[1],
            r[2],
            worker_id,
            r[3],
            r[5] if r[4] is None else lease_expired(r[4], r[2] - 1),
        )
        for r in rows
    ]


def enqueue(instance_id: str, items: Sequence[QueueItem]) -> Op[None]:
    """Add entries, skipping keys already queued or checkpointed (a repeat changes nothing)."""
    params: dict[str, Any] = {"id": instance_id, "key": None}
    yield Q("enqueue" + _item_params(params, items), params)


def claim(
    worker_id: str,
    definition_hashes: Sequence[str],
    tags: Sequence[str],
    limit: int,
    lease_secs: float,
    *,
    token: UUID,
    retry: bool,
) -> Op[list[Claim]]:
    """Claim up to ``limit`` entries; a re-sent call returns what its first attempt claimed."""
    if retry:
        rows = yield Q("claimed_by_token", {"worker": worker_id, "token": token})
        if rows:
            return _claims(rows, worker_id)
    rows = yield Q(
        "claim",
        {
            "worker": worker_id,
            "hashes": list(definition_hashes),
            "tags": list(tags),
            "n": limit,
            "lease": float(lease_secs),
            "token": token,
        },
    )
    return _claims(rows, worker_id)


def next_due(definition_hashes: Sequence[str], tags: Sequence[str]) -> Op[float | None]:
    """Seconds until the next entry ``claim`` would take falls due (database clock)."""
    rows = yield Q("next_due", {"hashes": list(definition_hashes), "tags": list(tags)})
    due: float | None = rows[0][0]
    return due


def heartbeat(claims: Sequence[Claim], lease_secs: float) -> Op[list[Claim]]:
    """Extend the leases still held; return the claims that were lost."""
    rows = yield Q(
        "heartbeat",
        {
            "ids": [c.instance_id for c in claims],
            "keys": [c.key for c in claims],
            "attempts": [c.attempt for c in claims],
            "workers": [c.worker_id for c in claims],
            "lease": float(lease_secs),
        },
    )
    held = {(r[0], r[1], r[2], r[3]) for r in rows}
    return [c for c in claims if (c.instance_id, c.key, c.attempt, c.worker_id) not in held]


def _lease_lost(claim: Claim) -> LeaseLostError:
    return LeaseLostError(
        f"worker '{claim.worker_id}' lost its claim on task '{claim.key}' of "
        f"instance '{claim.instance_id}' (attempt {claim.attempt}); "
        "its result was not written"
    )


def advance(
    claim: Claim,
    steps: Sequence[StepRecord],
    *,
    final: FinalState | None,
    enqueue: Sequence[QueueItem],
    next_item: QueueItem | None,
    release: bool,
    lease_secs: float,
    token: UUID,
    retry: bool,
) -> Op[tuple[ControlRequest | None, Claim | None]]:
    """``QueueStorage.advance`` in one fenced statement (see ``InMemoryBackend.advance``); a
    terminal final locks the run row first, in a statement of its own (same transaction).

    The order of the reference: checkpoints; the claim given up (unless kept); new entries
    (a key checkpointed by this write is not queued; the claim's own key is queued again
    only when the claim is given up); then the final state, or the claim moved to
    ``next_item`` unless that key is queued or checkpointed by now.
    """
    step_keys = {s.key for s in steps}
    terminal = final is not None and final.status in TERMINAL
    give_up = final is not None or release or next_item is not None
    items = [] if terminal else [it for it in enqueue if it.key not in step_keys]
    queued = {it.key for it in items}
    nxt = None if final is not None else next_item
    if nxt is not None and (nxt.key in step_keys or nxt.key in queued):
        nxt = None  # checkpointed or queued by this very write: another worker's to take
    if not give_up:
        fate = "keep"
    elif not terminal and claim.key in queued:
        fate = "requeue"
    elif nxt is not None and nxt.key == claim.key:
        fate = "renew"
    else:
        fate = "drop"
    params: dict[str, Any] = {
        "id": claim.instance_id,
        "key": claim.key,
        "attempt": claim.attempt,
        "worker": claim.worker_id,
        "fate": fate,
        "terminal": terminal,
        "lease": float(lease_secs),
        "token": token,
        "move": nxt is not None and nxt.key != claim.key,
        "n_key": None if nxt is None else nxt.key,
        "n_task_id": None if nxt is None else nxt.task_id,
        "n_priority": None if nxt is None else queue_priority(nxt.priority),
        "n_tags": None if nxt is None else list(nxt.tags),
    }
    variant = _step_params(params, steps) + _item_params(params, items)
    if final is not None:
        _final_params(params, final)
        if terminal:
            # Locked first, in a statement of its own: the final write then reads a snapshot
            # that has every entry a concurrent enqueue committed (in one statement its older
            # snapshot could leave such an entry behind), and later enqueues find the run over.
            yield Q("begin", prepare=False)
            yield Q("lock_instance", {"id": claim.instance_id})
            rows = yield Q("advance_final" + variant, params)
            yield Q("commit", prepare=False)
        else:
            rows = yield Q("advance_final" + variant, params)
        if not rows[0][0]:
            yield from _recover(claim, params, retry and give_up, final=True)
        elif not rows[0][2]:  # a pause applied meanwhile stays (write_decision)
            found = yield Q("get_instance", {"id": claim.instance_id})
            return (applied_request(_record(found[0])) if found else None), None
        return None, None
    rows = yield Q("advance" + variant, params)
    row = rows[0]
    if not row[0]:
        return (yield from _recover(claim, params, retry and give_up, final=False))
    request = _obeyed(claim.instance_id, row[1:8])
    if fate == "keep":
        return request, claim
    if row[9] is None or nxt is None:
        return request, None
    return request, Claim(claim.instance_id, nxt.key, row[9], claim.worker_id, row[8])


def abandon(claim: Claim, error: str, retry_in: float) -> Op[bool]:
    """``QueueStorage.abandon``: one fenced statement (a re-sent one finds the claim gone)."""
    rows = yield Q(
        "abandon",
        {
            "id": claim.instance_id,
            "key": claim.key,
            "attempt": claim.attempt,
            "worker": claim.worker_id,
            "error": error,
            "retry_in": max(float(retry_in), 0.0),
        },
    )
    return bool(rows[0][0])


def _recover(
    claim: Claim, params: dict[str, Any], may_have_committed: bool, *, final: bool
) -> Op[tuple[ControlRequest | None, Claim | None]]:
    """The claim is gone. A re-sent advance that gave it up may find its own first commit.

    An entry the first attempt claimed (``n_key`` with this call's token) proves it; an
    entry now claimed by someone else proves the lease was lost. Otherwise the claimed
    entry is gone or queued again, which the first attempt did (or a worker that took over
    and finished: then nothing we write matters anymore, and nothing is written).
    """
    if not may_have_committed:
        raise _lease_lost(claim)
    rows = yield Q("advance_recover", params)
    if not rows:
        raise _lease_lost(claim)
    row = rows[0]
    request = None if final else _obeyed(claim.instance_id, row[:7])
    if row[8] is not None:
        return request, Claim(claim.instance_id, params["n_key"], row[8], claim.worker_id, row[7])
    if row[9]:
        raise _lease_lost(claim)
    return request, None


# -- retention -----------------------------------------------------------------------------


def retention_cutoff(older_than_secs: float) -> Op[float]:
    """The database clock minus ``older_than_secs``, as epoch seconds."""
    rows = yield Q("retention_cutoff", {"older_than": float(older_than_secs)})
    return float(rows[0][0])


def count_finished(cutoff: float) -> Op[int]:
    rows = yield Q("count_finished", {"cutoff": cutoff})
    return int(rows[0][0])


def delete_finished(cutoff: float, batch_size: int) -> Op[int]:
    """Delete one batch of runs that finished before ``cutoff``; return how many."""
    rows = yield Q("delete_finished", {"cutoff": cutoff, "batch": batch_size})
    return int(rows[0][0])
