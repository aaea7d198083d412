"""Group commit on the async pool (backends/postgres/_group.py): concurrent runs' writes share
a transaction, and each keeps the guarantees of a write made alone.

* writes that arrive together are committed together (one ``BEGIN ... COMMIT`` pipeline);
* a fenced (stale) write in a group is refused alone, the others of its group commit;
* a write that fails mid-group (a server error after others ran) fails alone: the group is
  rolled back and every write runs again on its own;
* a group whose commit may have happened before the connection broke is run again write by
  write, and each write is recognised as committed once (exactly-once checkpoints, a create
  that finds its own row);
* a process killed while groups commit leaves every acknowledged write committed and each
  run's checkpoints a prefix of what it wrote (crash semantics unchanged).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest

from sayiir.backends.postgres import PostgresBackend
from sayiir.backends.postgres._io import DRIVER
from sayiir.core.records import FinalState, InstanceRecord, Status, StepRecord
from sayiir.errors import BackendError, RunReplacedError

pytestmark = pytest.mark.postgres

T = TypeVar("T")
T0 = 1_700_000_000.25
RUNS = 12


def record(iid: str) -> InstanceRecord:
    return InstanceRecord(
        iid, "wf", "hash-1", Status.RUNNING, b"1", created_at=T0, updated_at=T0,
        token=str(uuid.uuid4()),
    )  # fmt: skip


def step(key: str, out: bytes = b"1", attempt: int = 1) -> StepRecord:
    return StepRecord(key, out, "t", attempt, T0 + 1, T0 + 1.5, None)


class Groups:
    """Records the size of every group ``_io.agroup`` runs (and can make one fail)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        self.lose_after_commit = 0  # the next n groups commit, then "lose the connection"
        original = DRIVER.agroup

        async def agroup(conn: Any, compiled: Any, requests: Any) -> Any:
            self.sizes.append(len(requests))
            rows = await original(conn, compiled, requests)
            if self.lose_after_commit > 0:
                self.lose_after_commit -= 1
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return rows

        monkeypatch.setattr(DRIVER, "agroup", agroup)


def run(pg_dsn: str, body: Callable[[Any], Awaitable[T]]) -> T:
    """``body(storage)`` on the async storage of a backend with a pool of 4."""

    async def main() -> T:
        backend = await PostgresBackend.connect(pg_dsn, max_connections=4)
        try:
            return await body(backend.async_storage())
        finally:
            await backend.aclose()

    return asyncio.run(main())


def checkpoints(pg_dsn: str, iids: list[str]) -> dict[str, list[str]]:
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT instance_id, key FROM sayiir_checkpoints"
            " WHERE instance_id = ANY(%s) ORDER BY instance_id, key",
            [iids],
        ).fetchall()
    found: dict[str, list[str]] = {iid: [] for iid in iids}
    for iid, key in rows:
        found[iid].append(key)
    return found


async def created(storage: Any, n: int = RUNS) -> list[InstanceRecord]:
    records = [record(f"g-{uuid.uuid4().hex}") for _ in range(n)]
    outcomes = await asyncio.gather(*(storage.create_instance(r, replace=False) for r in records))
    assert outcomes == [None] * n
    return records


def test_concurrent_writes_share_one_transaction(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = Groups(monkeypatch)

    async def body(storage: Any) -> list[InstanceRecord]:
        await storage.get_instance("warm-up")  # migrate first
        records = await created(storage)
        saved = await asyncio.gather(
            *(storage.save_steps(r.instance_id, [step("a")], token=r.token) for r in records)
        )
        assert saved == [None] * RUNS
        finals = await asyncio.gather(*(
            storage.finish(r.instance_id, FinalState(Status.COMPLETED, b"2"), [step("b")],
                           token=r.token)
            for r in records
        ))  # fmt: skip
        assert finals == [None] * RUNS
        for r in records:
            got = await storage.get_instance(r.instance_id)
            assert got is not None and got.status == Status.COMPLETED and got.output == b"2"
        return records

    records = run(pg_dsn, body)
    # Three rounds of RUNS writes (create, save, finish), each in fewer transactions.
    assert sum(groups.sizes) == 3 * RUNS
    assert len(groups.sizes) < 3 * RUNS and max(groups.sizes) > 1
    found = checkpoints(pg_dsn, [r.instance_id for r in records])
    assert all(keys == ["a", "b"] for keys in found.values())


def test_a_fenced_write_does_not_poison_its_group(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = Groups(monkeypatch)

    async def body(storage: Any) -> tuple[list[InstanceRecord], list[Any]]:
        records = await created(storage)
        stale = records[3]
        assert await storage.renew_lease(stale.instance_id, stale.token, release=True)
        taken = await storage.take_over(stale.instance_id, stale.token, str(uuid.uuid4()))
        assert taken is not None
        groups.sizes.clear()
        outcomes = await asyncio.gather(
            *(storage.save_steps(r.instance_id, [step("a")], token=r.token) for r in records),
            return_exceptions=True,
        )
        return records, outcomes

    records, outcomes = run(pg_dsn, body)
    assert isinstance(outcomes[3], RunReplacedError)
    assert [o for i, o in enumerate(outcomes) if i != 3] == [None] * (RUNS - 1)
    assert sum(groups.sizes) == RUNS and max(groups.sizes) > 1  # the stale one was grouped
    found = checkpoints(pg_dsn, [r.instance_id for r in records])
    assert found.pop(records[3].instance_id) == []
    assert all(keys == ["a"] for keys in found.values())


def test_a_write_failing_mid_group_fails_alone(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = Groups(monkeypatch)

    async def body(storage: Any) -> tuple[list[InstanceRecord], list[Any]]:
        records = await created(storage)
        groups.sizes.clear()
        # attempt is an integer column: 2**40 is a server-side error, after the writes
        # sorted before it in the group already ran.
        outcomes = await asyncio.gather(
            *(
                storage.save_steps(
                    r.instance_id, [step("a", attempt=2**40 if i == 5 else 1)], token=r.token
                )
                for i, r in enumerate(records)
            ),
            return_exceptions=True,
        )
        return records, outcomes

    records, outcomes = run(pg_dsn, body)
    assert isinstance(outcomes[5], BackendError), outcomes[5]
    assert "out of range" in str(outcomes[5])
    assert [o for i, o in enumerate(outcomes) if i != 5] == [None] * (RUNS - 1)
    assert groups.sizes[0] > 1  # the failing write was grouped, then everything ran alone
    found = checkpoints(pg_dsn, [r.instance_id for r in records])
    assert found.pop(records[5].instance_id) == []
    assert all(keys == ["a"] for keys in found.values())


def test_a_group_lost_after_its_commit_is_applied_once(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = Groups(monkeypatch)

    async def body(storage: Any) -> list[InstanceRecord]:
        await storage.get_instance("warm-up")
        records = [record(f"g-{uuid.uuid4().hex}") for _ in range(RUNS)]
        groups.lose_after_commit = 1
        # The creates commit, the answer is lost, each create runs again alone: it finds
        # its own row (same token) and reports it created, not "already exists".
        outcomes = await asyncio.gather(
            *(storage.create_instance(r, replace=False) for r in records)
        )
        assert outcomes == [None] * RUNS
        groups.lose_after_commit = 1
        saved = await asyncio.gather(
            *(storage.save_steps(r.instance_id, [step("a")], token=r.token) for r in records)
        )
        assert saved == [None] * RUNS
        return records

    records = run(pg_dsn, body)
    assert groups.sizes[0] == RUNS and groups.lose_after_commit == 0
    found = checkpoints(pg_dsn, [r.instance_id for r in records])
    assert all(keys == ["a"] for keys in found.values())
    with psycopg.connect(pg_dsn) as conn:
        [(executions,)] = conn.execute(
            "SELECT count(*) FROM sayiir_task_executions WHERE instance_id = ANY(%s)",
            [[r.instance_id for r in records]],
        ).fetchall()
    assert executions == RUNS  # one task execution per write, not two


def test_writes_keep_flowing_with_one_flusher(pg_dsn: str) -> None:
    """A pool of 2 has one flusher, which ends whenever the queue is empty: a write queued
    just then must start the next one (it once waited forever)."""

    async def main() -> list[InstanceRecord]:
        backend = await PostgresBackend.connect(pg_dsn, max_connections=2)
        storage = backend.async_storage()
        try:
            records = await created(storage, 30)

            async def steps(r: InstanceRecord) -> None:
                for k in range(10):
                    await storage.save_steps(r.instance_id, [step(f"s{k}")], token=r.token)

            # A hang guard, not a timing assertion: the lost wake-up never finishes.
            await asyncio.wait_for(asyncio.gather(*(steps(r) for r in records)), 300)
            return records
        finally:
            await backend.aclose()

    records = asyncio.run(main())
    found = checkpoints(pg_dsn, [r.instance_id for r in records])
    assert all(keys == [f"s{k}" for k in range(10)] for keys in found.values())


CHILD = """
import asyncio, sys, uuid
from sayiir.backends.postgres import PostgresBackend
from sayiir.core.records import InstanceRecord, Status, StepRecord

async def main(url, n):
    backend = await PostgresBackend.connect(url, max_connections=4)
    storage = backend.async_storage()

    async def one(i):
        iid = f"crash-{i}"
        rec = InstanceRecord(iid, "wf", "h", Status.RUNNING, b"1", created_at=1.0,
                             updated_at=1.0, token=str(uuid.uuid4()))
        await storage.create_instance(rec, replace=False)
        for k in range(1000):
            step = StepRecord(f"s{k:04d}", b"1", "t", 1, 2.0, 3.0, None)
            await storage.save_steps(iid, [step], token=rec.token)
            sys.stdout.write(f"{iid} s{k:04d}\\n")
            sys.stdout.flush()

    await asyncio.gather(*(one(i) for i in range(n)))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_a_kill_while_groups_commit_keeps_every_acknowledged_write(pg_dsn: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, pg_dsn, "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acked: dict[str, set[str]] = {}
    for _ in range(600):  # acknowledged writes, then SIGKILL in the middle of the next ones
        line = proc.stdout.readline()
        assert line, "the child ended early"
        iid, key = line.split()
        acked.setdefault(iid, set()).add(key)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    found = checkpoints(pg_dsn, [f"crash-{i}" for i in range(20)])
    for iid, keys in found.items():
        assert acked.get(iid, set()) <= set(keys), iid  # acknowledged: committed
        # Each run wrote s0000, s0001, ... one after the other: what survived is a prefix.
        assert keys == [f"s{k:04d}" for k in range(len(keys))], iid
