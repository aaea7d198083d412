"""The worker-queue operations of ``QueueStorage``, written once, without I/O (as ``_ops``).

Every entry point is one fenced statement (``advance`` of a terminal final state: two, in
one transaction; ``finish_and_claim``: that advance and a claim, in one transaction), so a
call re-sent after a lost connection either repeats a committed write, which it recognises
by its token, or makes the first one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sayiir.backends.postgres._ops import (
    Op,
    Q,
    Rows,
    final_params,
    obeyed,
    record_of,
    step_params,
)
from sayiir.backends.postgres._rows import AdvanceRow, ClaimRow, HeldRow, RecoverRow
from sayiir.core.records import (
    TERMINAL,
    Claim,
    ClaimAsk,
    ControlRequest,
    FinalState,
    QueueItem,
    StepRecord,
    applied_request,
    lease_expired,
    queue_priority,
)
from sayiir.errors import LeaseLostError

__all__ = ["abandon", "advance", "claim", "enqueue", "finish_and_claim", "heartbeat", "next_due"]


# -- worker queue --------------------------------------------------------------------------

# A claim whose candidate lost a concurrency slot to another claimer tries again this often.
_SLOT_RACE_RETRIES = 3


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
    """Claims from ``ClaimRow`` rows; a lease taken over is the cause of the previous
    claim's end."""
    claims = []
    for r in map(ClaimRow._make, rows):
        expired = r.expired_from
        cause = r.last_error if expired is None else lease_expired(expired, r.attempt - 1)
        claim = Claim(
            r.instance_id, r.task_key, r.attempt, worker_id, r.definition_hash, cause, r.waited
        )
        claims.append(claim)
    return claims


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
    params = {
        "worker": worker_id,
        "hashes": list(definition_hashes),
        "tags": list(tags),
        "n": limit,
        "lease": float(lease_secs),
        "token": token,
    }
    claims: list[Claim] = []
    for _ in range(_SLOT_RACE_RETRIES):
        rows = yield Q("claim", params)
        lost_a_slot = bool(rows) and rows[-1][0] is None  # the marker row (see queries.sql)
        claims += _claims(rows[:-1] if lost_a_slot else rows, worker_id)
        if not lost_a_slot or len(claims) >= limit:
            break
        params["n"] = limit - len(claims)
    return claims


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
    held = {(r.instance_id, r.task_key, r.attempt, r.worker_id) for r in map(HeldRow._make, rows)}
    return [c for c in claims if (c.instance_id, c.key, c.attempt, c.worker_id) not in held]


def _lease_lost(claim: Claim) -> LeaseLostError:
    return LeaseLostError(
        f"worker '{claim.worker_id}' lost its claim on task '{claim.key}' of "
        f"instance '{claim.instance_id}' (attempt {claim.attempt}); "
        "its result was not written"
    )


def _fate(
    claim: Claim,
    steps: Sequence[StepRecord],
    final: FinalState | None,
    enqueue: Sequence[QueueItem],
    next_item: QueueItem | None,
    give_up: bool,
) -> tuple[str, QueueItem | None, list[QueueItem], bool]:
    """What an advance does with the claimed entry (``fate``, see ``_release`` in
    queries.sql), the entry it moves the claim to (``None``: none), the items it queues,
    and whether the next one is among them, due now (then taken at once, not queued)."""
    step_keys = {s.key for s in steps}
    terminal = final is not None and final.status in TERMINAL
    renew = final is None and next_item is not None and next_item.key == claim.key
    items = [] if terminal else [it for it in enqueue if it.key not in step_keys]
    nxt = None if final is not None else next_item
    if nxt is not None and nxt.key in step_keys:
        nxt = None  # checkpointed by this very write: nothing to take
    mine = [] if nxt is None else [it for it in items if it.key == nxt.key]
    if (renew and mine) or any(it.available_at is not None for it in mine):
        nxt = None  # queued by this very write (for later: a backoff): not taken
    elif mine:
        items = [it for it in items if it.key != mine[0].key]  # taken at once instead
    if not (give_up or renew):
        return ("keep" if nxt is None else "move"), nxt, items, bool(mine) and nxt is not None
    if not terminal and claim.key in {it.key for it in items}:
        return "requeue", nxt, items, False
    return ("renew" if nxt is not None and renew else "drop"), nxt, items, False


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
    in_transaction: bool = False,
) -> Op[tuple[ControlRequest | None, Claim | None]]:
    """``QueueStorage.advance`` in one fenced statement (see ``InMemoryBackend.advance``); a
    terminal final locks the run row first, in a statement of its own (same transaction).

    The order of the reference: checkpoints; the claim given up (``final``, ``release``);
    new entries (a key checkpointed by this write is not queued; the claim's own key is
    queued again only when the claim is given up); then the final state, or the claim moved
    to ``next_item`` ("move": inserted claimed, or its due, never claimed entry taken over;
    the claimed entry is dropped only then, otherwise kept).
    """
    terminal = final is not None and final.status in TERMINAL
    give_up = final is not None or release
    fate, nxt, items, taken_at_once = _fate(claim, steps, final, enqueue, next_item, give_up)
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
        "n_due": taken_at_once,
    }
    variant = step_params(params, steps) + _item_params(params, items)
    if final is not None:
        final_params(params, final)
        if terminal:
            # Locked first, in a statement of its own: the final write then reads a snapshot
            # that has every entry a concurrent enqueue committed (in one statement its older
            # snapshot could leave such an entry behind), and later enqueues find the run over.
            if not in_transaction:
                yield Q("begin", prepare=False)
            yield Q("lock_instance", {"id": claim.instance_id})
            rows = yield Q("advance_final" + variant, params)
            if not in_transaction:
                yield Q("commit", prepare=False)
        else:
            rows = yield Q("advance_final" + variant, params)
        held, _woken, written = rows[0]
        if not held:
            yield from _recover(claim, params, retry and give_up, final=True)
        elif not written:  # a pause applied meanwhile stays (write_decision)
            found = yield Q("get_instance", {"id": claim.instance_id})
            return (applied_request(record_of(found[0])) if found else None), None
        return None, None
    rows = yield Q("advance" + variant, params)
    row = AdvanceRow._make(rows[0])
    if not row.held:
        may_have_committed = retry and fate != "keep"
        return (yield from _recover(claim, params, may_have_committed, final=False))
    if fate == "move" and row.next_attempt is None and not row.fresh:
        row = yield from _move_locked(params, in_transaction)
    request = obeyed(claim.instance_id, row)
    if fate == "keep":
        return request, claim
    if row.next_attempt is None or nxt is None or row.definition_hash is None:
        return request, claim if fate == "move" else None  # not taken: the claim is kept
    return request, Claim(
        claim.instance_id, nxt.key, row.next_attempt, claim.worker_id, row.definition_hash
    )


def finish_and_claim(
    held: Claim, steps: Sequence[StepRecord], final: FinalState, enqueue: Sequence[QueueItem],
    lease_secs: float, token: UUID, retry: bool, then: ClaimAsk,
) -> Op[tuple[ControlRequest | None, list[Claim]]]:  # fmt: skip
    """``ChainedQueueStorage.finish_and_claim``: the final advance, then the worker's next
    claim, in one transaction (one commit, one WAL flush, where there were two). A re-sent
    call finds what its first attempt did by ``token``, as each of the two does alone."""
    yield Q("begin", prepare=False)
    request, _ = yield from advance(
        held, steps, final=final, enqueue=enqueue, next_item=None, release=False,
        lease_secs=lease_secs, token=token, retry=retry, in_transaction=True,
    )  # fmt: skip
    claims = yield from claim(
        then.worker_id, then.definition_hashes, then.tags, 1, lease_secs, token=token, retry=retry
    )
    yield Q("commit", prepare=False)
    return request, claims


def _move_locked(params: dict[str, Any], in_transaction: bool) -> Op[AdvanceRow]:
    """The move of an advance whose snapshot missed a concurrent write of the run (its
    checkpoints are written, the claim kept): again, with nothing else to write, after
    locking the run row in a statement of its own, so the snapshot is current (as the
    terminal final does). Rare: only when two workers write the same run at once.
    ``in_transaction``: in the caller's transaction (``advance_gated``), which commits."""
    if not in_transaction:
        yield Q("begin", prepare=False)
    yield Q("lock_instance", {"id": params["id"]})
    rows = yield Q("advance/0/q0", params)  # no steps, no items: the first statement wrote them
    if not in_transaction:
        yield Q("commit", prepare=False)
    return AdvanceRow._make(rows[0])


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
    row = RecoverRow._make(rows[0])
    request = None if final else obeyed(claim.instance_id, row)
    if row.next_attempt is not None:
        return request, Claim(
            claim.instance_id, params["n_key"], row.next_attempt, claim.worker_id,
            row.definition_hash,
        )  # fmt: skip
    if row.key_claimed:
        raise _lease_lost(claim)
    return request, None
