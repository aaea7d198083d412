"""The console's read contract (``RunQueries``), checked against every backend.

One suite, parametrized like the storage contract: filters, every sort column in both
directions, keyset pages that add up to the whole list, capped counts, run detail with
attempts, errors, signals and step pages, status counts, stored definitions and the audit.
Runs are made either as records (exact times) or by running real workflows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sayiir import Flow, RetryPolicy, resume_workflow, run_durable_workflow, send_signal, task
from sayiir.core.graph import definition_json
from sayiir.core.queries import (
    SORT_COLUMNS,
    AuditEntry,
    RunFilter,
    RunSort,
    RunSummary,
    public_status,
)
from sayiir.core.records import InstanceRecord, Status

Backend = Any  # Storage + RunQueries (the `backend` fixture: tests/contract/conftest.py)

T0 = 1_700_000_000.0
STATUSES = [Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.WAITING, Status.PAUSED]


def seed(backend: Backend, tag: str, n: int = 23) -> list[InstanceRecord]:
    """``n`` runs of two workflows, statuses in turn, created one second apart; three share
    a creation time (ties are broken by instance id)."""
    out = []
    for i in range(n):
        created = T0 + (i if i not in (5, 6, 7) else 5)
        rec = InstanceRecord(
            f"{tag}-{i:03d}",
            f"{tag}-wf{i % 2}",
            "h",
            STATUSES[i % len(STATUSES)],
            b"1",
            error="boom" if STATUSES[i % len(STATUSES)] is Status.FAILED else None,
            created_at=created,
            updated_at=T0 + 100 - i,
            token=str(uuid.uuid4()),
        )
        assert backend.create_instance(replace(rec), replace=False) is None
        out.append(rec)
    return out


def sort_key(rec: InstanceRecord, column: str) -> tuple[Any, ...]:
    """Sort column, then creation time after a status or workflow id, then instance id."""
    value = rec.status.value if column == "status" else getattr(rec, column)
    if column == "instance_id":
        return (value,)
    if column in ("status", "workflow_id"):
        return (value, rec.created_at, rec.instance_id)
    return (value, rec.instance_id)


def all_pages(backend: Backend, f: RunFilter, sort: RunSort, limit: int) -> list[RunSummary]:
    out: list[RunSummary] = []
    cursor = None
    for _ in range(100):
        page = backend.list_runs(f, sort, cursor, limit)
        assert len(page.runs) <= limit
        out.extend(page.runs)
        cursor = page.next_cursor
        if cursor is None:
            return out
        assert len(page.runs) == limit  # a page before the last is full
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize("column", SORT_COLUMNS)
@pytest.mark.parametrize("descending", [True, False])
def test_pages_add_up_to_the_sorted_list(
    backend: Backend, tag: str, column: str, descending: bool
) -> None:
    recs = seed(backend, tag)
    sort = RunSort(column, descending)  # type: ignore[arg-type]
    got = all_pages(backend, RunFilter(instance_prefix=tag + "-"), sort, 4)
    expected = sorted(recs, key=lambda r: sort_key(r, column), reverse=descending)
    assert [r.instance_id for r in got] == [r.instance_id for r in expected]


def test_filters_narrow_the_list(backend: Backend, tag: str) -> None:
    recs = seed(backend, tag)
    mine = RunFilter(instance_prefix=tag + "-")

    def ids(**kw: Any) -> list[str]:
        f = replace(mine, **kw)
        return sorted(r.instance_id for r in all_pages(backend, f, RunSort(), 5))

    def want(pred: Callable[[InstanceRecord], bool]) -> list[str]:
        return sorted(r.instance_id for r in recs if pred(r))

    assert ids(status=("failed",)) == want(lambda r: r.status is Status.FAILED)
    assert ids(status=("in_progress", "paused")) == want(
        lambda r: r.status in (Status.RUNNING, Status.PAUSED)
    )
    assert ids(workflow_id=f"{tag}-wf1") == want(lambda r: r.workflow_id == f"{tag}-wf1")
    assert ids(workflow_id=f"{tag}-wf1", status=("failed",)) == want(
        lambda r: r.workflow_id == f"{tag}-wf1" and r.status is Status.FAILED
    )
    assert ids(failed_only=True) == want(lambda r: r.status is Status.FAILED)
    assert ids(failed_only=True, status=("completed",)) == []
    assert ids(instance_prefix=f"{tag}-01") == want(lambda r: r.instance_id.startswith(f"{tag}-01"))
    after = datetime.fromtimestamp(T0 + 10, tz=UTC)
    before = datetime.fromtimestamp(T0 + 15, tz=UTC)
    assert ids(created_after=after, created_before=before) == want(
        lambda r: T0 + 10 <= r.created_at < T0 + 15
    )
    up = datetime.fromtimestamp(T0 + 90, tz=UTC)
    assert ids(updated_after=up) == want(lambda r: r.updated_at >= T0 + 90)


def test_summaries_carry_the_public_status_and_times(backend: Backend, tag: str) -> None:
    recs = seed(backend, tag, 5)
    page = backend.list_runs(RunFilter(instance_prefix=tag + "-"), RunSort("instance_id", False))
    for rec, row in zip(recs, page.runs, strict=True):
        assert row.instance_id == rec.instance_id
        assert row.workflow_id == rec.workflow_id
        assert row.status == public_status(rec.status.value)
        assert abs(row.created_at.timestamp() - rec.created_at) < 1e-3
        assert row.error == rec.error
    assert page.runs[0].status == "in_progress"


def test_count_is_capped(backend: Backend, tag: str) -> None:
    seed(backend, tag, 12)
    mine = RunFilter(instance_prefix=tag + "-")
    assert backend.count_runs(mine, cap=100) == (12, False)
    assert backend.count_runs(mine, cap=12) == (12, False)
    assert backend.count_runs(mine, cap=5) == (5, True)
    assert backend.count_runs(replace(mine, status=("failed",)), cap=100) == (2, False)


def test_a_cursor_of_another_order_or_garbage_is_refused(backend: Backend, tag: str) -> None:
    seed(backend, tag, 6)
    mine = RunFilter(instance_prefix=tag + "-")
    page = backend.list_runs(mine, RunSort(), None, 2)
    assert page.next_cursor is not None
    with pytest.raises(ValueError, match="another sort order"):
        backend.list_runs(mine, RunSort("instance_id"), page.next_cursor, 2)
    with pytest.raises(ValueError, match="invalid cursor"):
        backend.list_runs(mine, RunSort(), "not-a-cursor!", 2)
    with pytest.raises(ValueError, match="limit"):
        backend.list_runs(mine, RunSort(), None, 0)


def test_bad_filters_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown status 'running'"):
        RunFilter(status=("running",))
    with pytest.raises(ValueError, match="no time zone"):
        RunFilter(created_after=datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="cannot sort"):
        RunSort("input")  # type: ignore[arg-type]


# -- run detail (real workflows) -------------------------------------------------------------

_FLAKY: dict[str, int] = {}


@task(retries=RetryPolicy(max_retries=2, initial_delay_secs=0.0))
def flaky(x: int) -> dict[str, Any]:
    n = _FLAKY[str(x)] = _FLAKY.get(str(x), 0) + 1
    if n < 2:
        raise RuntimeError(f"flaky failure {n}")
    return {"x": x, "blob": "y" * 5000}


def _workflow(name: str) -> Any:
    return (
        Flow(name)
        .then(flaky)
        .wait_for_signal("approve", name="approval")
        .then(lambda d: {"approved": d}, name="finish")
        .build()
    )


def test_run_detail_shows_steps_attempts_signals_and_previews(backend: Backend, tag: str) -> None:
    wf = _workflow(f"{tag}-flow")
    x = int(uuid.uuid4().int % 10**9)
    iid = f"{tag}-run"
    status = run_durable_workflow(wf, iid, x, backend=backend)
    assert status.status == "awaiting_signal"
    send_signal(iid, "approve", {"ok": True}, backend=backend)
    send_signal(iid, "approve", {"ok": "spare"}, backend=backend)  # stays pending
    assert resume_workflow(wf, iid, backend=backend).is_completed()

    d = backend.run_detail(iid, preview_bytes=100)
    assert d is not None
    assert d.run.instance_id == iid and d.run.status == "completed"
    assert d.input_preview == str(x)
    by_key = {s.key: s for s in d.steps}
    assert next(iter(by_key)) == "flaky"  # start order
    first = by_key["flaky"]
    assert first.kind == "task" and first.status == "completed" and first.task_id == "flaky"
    assert [a.outcome for a in first.attempts] == ["failed", "completed"]
    assert first.attempts[0].error is not None and "flaky failure 1" in first.attempts[0].error
    assert first.output_bytes is not None and first.output_bytes > 5000
    assert first.output_preview is not None and len(first.output_preview) < 130
    assert "chars)" in first.output_preview  # truncated, says so
    assert backend.step_output(iid, "flaky") == {"x": x, "blob": "y" * 5000}
    assert by_key["finish"].status == "completed"
    states = sorted((s.name, s.state) for s in d.signals)
    assert states == [("approve", "consumed"), ("approve", "pending")]
    assert backend.run_input(iid) == x
    assert backend.run_output(iid) == {"approved": {"ok": True}}
    with pytest.raises(KeyError):
        backend.step_output(iid, "no-such-step")
    assert backend.run_detail(f"{tag}-missing") is None


def test_run_detail_pages_its_steps(backend: Backend, tag: str) -> None:
    wf = Flow(f"{tag}-many")
    for i in range(7):
        wf = wf.then(lambda v: v + 1, name=f"s{i}")
    iid = f"{tag}-many-run"
    assert run_durable_workflow(wf.build(), iid, 0, backend=backend).output == 7
    keys: list[str] = []
    cursor = None
    for _ in range(10):
        d = backend.run_detail(iid, steps_cursor=cursor, steps_limit=3)
        assert d is not None
        keys.extend(s.key for s in d.steps)
        cursor = d.steps_next_cursor
        if cursor is None:
            break
    assert keys == [f"s{i}" for i in range(7)]


def test_a_failed_step_shows_its_error(backend: Backend, tag: str) -> None:
    def boom(_: int) -> int:
        raise ValueError("no good")

    wf = Flow(f"{tag}-fail").then(boom, name="boom").build()
    iid = f"{tag}-fail-run"
    assert run_durable_workflow(wf, iid, 1, backend=backend).is_failed()
    d = backend.run_detail(iid)
    assert d is not None
    assert d.run.status == "failed" and d.run.error is not None and "no good" in d.run.error
    (s,) = d.steps
    assert s.status == "failed" and s.output_preview is None
    assert s.attempts[-1].outcome == "failed"
    assert s.attempts[-1].error is not None and "no good" in s.attempts[-1].error


# -- stats, definitions, audit -----------------------------------------------------------------


def test_status_counts_over_a_window(backend: Backend, tag: str) -> None:
    # Times far from every other test's runs, so the shared database does not interfere.
    base = T0 - 10_000_000 - (uuid.uuid4().int % 1_000_000) * 10
    for i, st in enumerate([Status.COMPLETED, Status.COMPLETED, Status.FAILED, Status.RUNNING]):
        rec = InstanceRecord(
            f"{tag}-c{i}", "wf", "h", st, b"1", created_at=base + i * 30, updated_at=base,
            token=str(uuid.uuid4()),
        )  # fmt: skip
        backend.create_instance(rec, replace=False)
    since = datetime.fromtimestamp(base, tz=UTC)
    c = backend.status_counts(since, since + timedelta(seconds=90), 60)
    assert c.totals == {"completed": 2, "failed": 1}  # the run at +90 s is outside
    assert sorted((b.timestamp() - base, s, n) for b, s, n in c.buckets) == [
        (0.0, "completed", 2),
        (60.0, "failed", 1),
    ]


def test_definitions_are_stored_once_per_hash(backend: Backend, tag: str) -> None:
    # The hash covers the structure (ids included), not the workflow id: a step named after
    # the test keeps it apart from the other tests' workflows in a shared database.
    wf = Flow(f"{tag}-def").then(lambda x: x, name=f"{tag}-step").build()
    for i in range(3):
        run_durable_workflow(wf, f"{tag}-d{i}", i, backend=backend)
    info = backend.get_definition(wf.definition_hash)
    assert info is not None
    assert info.workflow_id == f"{tag}-def"
    assert info.structure == definition_json(wf)
    hashes = [d.definition_hash for d in backend.list_definitions()]
    assert hashes.count(wf.definition_hash) == 1
    assert backend.get_definition("no-such-hash") is None


def test_audit_entries_are_listed_newest_first(backend: Backend, tag: str) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    iid = f"{tag}-a"
    for i, action in enumerate(["pause", "unpause", "cancel"]):
        entry = AuditEntry(at + timedelta(seconds=i), "alice", action, iid, {"reason": "r"})
        backend.record_audit(entry)
    backend.record_audit(AuditEntry(at, "bob", "cancel", f"{tag}-other", {}))
    got = backend.list_audit(iid)
    assert [e.action for e in got] == ["cancel", "unpause", "pause"]
    assert got[0].actor == "alice" and got[0].detail == {"reason": "r"}
    assert got[0].at == at + timedelta(seconds=2)
    assert len(backend.list_audit(iid, limit=1)) == 1
