"""What only the PostgreSQL queue promises: one statement per call, retries that recognise
their own commit, plans served by the partial indexes, claims exclusive across processes
(reliability plan R8), NOTIFY wake-ups that survive a killed listener (R22), per-prefix
channels (R25), and retention.

The queue semantics shared with InMemoryBackend are in tests/contract/test_queue_contract.py.
Every test uses a table prefix of its own in the module's database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sayiir import Flow, PostgresBackend, WorkflowClient, task
from sayiir.backends.postgres import _ops, _queue
from sayiir.backends.postgres._io import DRIVER
from sayiir.backends.postgres._names import MAX_PREFIX, queue_channel
from sayiir.cli.app import main as cli
from sayiir.core.records import (
    Claim,
    ControlRequest,
    FinalState,
    InstanceRecord,
    QueueItem,
    Status,
    StepRecord,
)
from sayiir.errors import LeaseLostError
from sayiir.worker import Worker

pytestmark = pytest.mark.postgres

LONG = 60.0


@pytest.fixture
def prefix() -> str:
    return f"q{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def backend(pg_dsn: str, prefix: str) -> Iterator[PostgresBackend]:
    b = PostgresBackend(pg_dsn, table_prefix=prefix, max_connections=12)
    b.get_instance("warm-up")  # connected and migrated
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def db(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


def table(prefix: str, name: str) -> sql.Identifier:
    return sql.Identifier("public", prefix + name)


def new(backend: PostgresBackend, status: Status = Status.RUNNING, *, h: str = "h") -> str:
    iid = f"inst-{uuid.uuid4().hex}"
    rec = InstanceRecord(iid, "wf", h, status, b"1", distributed=True)
    assert backend.create_instance(rec, replace=False) is None
    return iid


def step(key: str, output: bytes = b"1") -> StepRecord:
    return StepRecord(key, output, key, 1, 1.0, 2.0, "w")


def queue_rows(db: psycopg.Connection[Any], prefix: str, iid: str) -> list[tuple[Any, ...]]:
    query = sql.SQL(
        "SELECT task_key, worker_id, attempt FROM {} WHERE instance_id = %s ORDER BY task_key"
    ).format(table(prefix, "task_queue"))
    return db.execute(query, (iid,)).fetchall()


# -- one statement per call --------------------------------------------------------------------


class StatementCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = psycopg.Cursor.execute

        def counting(cur: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(cur, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", counting)

    def take(self) -> int:
        n, self.count = self.count, 0
        return n


def test_every_queue_operation_is_one_statement(
    backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = StatementCounter(monkeypatch)
    iid = new(backend)
    assert counter.take() == 1
    [claim] = backend.claim("w", ["h"], [], 5, LONG)
    assert counter.take() == 1
    calls: list[tuple[str, Callable[[], object]]] = [
        ("enqueue", lambda: backend.enqueue(iid, [QueueItem("x", "x", tags=("a", "b"))])),
        ("heartbeat", lambda: backend.heartbeat([claim], LONG)),
        ("advance keep", lambda: backend.advance(claim, [step("a")], enqueue=[QueueItem("y")])),
        ("send_signal", lambda: backend.send_signal(iid, "go", b"1")),
        ("request_control", lambda: backend.request_control(iid, ControlRequest("pause"))),
        ("unpause", lambda: backend.unpause(iid)),
    ]  # fmt: skip
    for name, call in calls:
        call()
        assert counter.take() == 1, name
    _, moved = backend.advance(claim, [step("b")], next_item=QueueItem("c", "c"))
    assert counter.take() == 1
    assert moved is not None
    backend.advance(moved, [step("c")], final=FinalState(Status.COMPLETED, b"1"))
    # A terminal final: BEGIN, the run row locked, the final write, COMMIT (one commit).
    assert counter.take() == 4


# -- retries recognise their own commit (R3) ---------------------------------------------------


class LoseConnectionAfterCommit:
    """The next ``n`` operations commit, then fail as if the connection broke."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, n: int = 1) -> None:
        self.left = n
        original = DRIVER.execute

        def execute(conn: Any, compiled: Any, op: Any) -> Any:
            result = original(conn, compiled, op)
            if self.left > 0:
                self.left -= 1
                conn.close()
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return result

        monkeypatch.setattr(DRIVER, "execute", execute)


def test_a_retried_claim_returns_what_its_first_attempt_claimed(
    backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    iids = {new(backend) for _ in range(3)}
    LoseConnectionAfterCommit(monkeypatch)
    claims = backend.claim("w", ["h"], [], 2, LONG)
    assert len(claims) == 2 and {c.attempt for c in claims} == {1}
    [last] = backend.claim("w", ["h"], [], 5, LONG)
    assert {c.instance_id for c in claims} | {last.instance_id} == iids


def test_retried_advances_recognise_their_commit(
    backend: PostgresBackend, db: psycopg.Connection[Any], prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    iid = new(backend)
    [claim] = backend.claim("w", ["h"], [], 1, LONG)
    lose = LoseConnectionAfterCommit(monkeypatch, n=0)

    def once(call: Callable[[], Any]) -> Any:
        lose.left = 1
        result = call()
        assert lose.left == 0, "the connection was lost after the first attempt"
        return result

    # Kept: the re-sent write finds its claim and writes again (upserts: same rows).
    assert once(lambda: backend.advance(claim, [step("a")])) == (None, claim)
    # Moved to the next task: the re-sent write finds the entry it claimed (token).
    _, moved = once(lambda: backend.advance(claim, [step("b")], next_item=QueueItem("c", "c")))
    assert moved == Claim(iid, "c", 1, "w", "h")
    assert queue_rows(db, prefix, iid) == [("c", "w", 1)]
    # Given up with its own key queued again (a parked "" holder): found queued.
    wake = time.time() + 3600
    parked = FinalState(Status.WAITING, wake_at=wake)
    again = [QueueItem("c", available_at=wake)]
    assert once(lambda: backend.advance(moved, [], final=parked, enqueue=again)) == (None, None)
    assert queue_rows(db, prefix, iid) == [("c", None, 0)]
    backend.send_signal(iid, "go", b"1")  # a "" entry, due now
    [cont] = backend.claim("w", ["h"], [], 1, LONG)
    assert cont.key == ""
    # Released: the entry is gone, the re-sent write reports success.
    assert once(lambda: backend.advance(cont, [step("d")], release=True)) == (None, None)
    assert queue_rows(db, prefix, iid) == [("c", None, 0)]
    assert backend.get_checkpoint(iid, "d") == b"1"


def test_a_retried_final_is_applied_once(
    backend: PostgresBackend, db: psycopg.Connection[Any], prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    iid = new(backend)
    [claim] = backend.claim("w", ["h"], [], 1, LONG)
    backend.enqueue(iid, [QueueItem("b", "b")])
    LoseConnectionAfterCommit(monkeypatch)
    done = FinalState(Status.COMPLETED, output=b"7")
    assert backend.advance(claim, [step("a")], final=done) == (None, None)
    rec = backend.get_instance(iid)
    assert rec is not None and (rec.status, rec.output) == (Status.COMPLETED, b"7")
    assert queue_rows(db, prefix, iid) == []


def test_a_retry_after_a_lost_lease_is_still_refused(
    backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt never reached the server; meanwhile another worker took over."""
    iid = new(backend)
    [old] = backend.claim("w1", ["h"], [], 1, 0.2)
    time.sleep(0.4)
    original = DRIVER.execute
    state = {"first": True}

    def execute(conn: Any, compiled: Any, op: Any) -> Any:
        if state["first"]:
            state["first"] = False
            op.close()
            assert [c.worker_id for c in backend.claim("w2", ["h"], [], 1, LONG)] == ["w2"]
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return original(conn, compiled, op)

    monkeypatch.setattr(DRIVER, "execute", execute)
    with pytest.raises(LeaseLostError):
        backend.advance(old, [step("a")], release=True)
    assert backend.get_checkpoint(iid, "a") is None


# -- plans -------------------------------------------------------------------------------------


def plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


def explain(db: psycopg.Connection[Any], backend: PostgresBackend, name: str, params: Any) -> Any:
    query = backend._compiled().queries[name]
    row = db.execute(b"EXPLAIN (FORMAT JSON) " + query, params).fetchone()
    assert row is not None
    return list(plan_nodes(row[0][0]["Plan"]))


@pytest.fixture
def big_queue(backend: PostgresBackend, db: psycopg.Connection[Any], prefix: str) -> str:
    """A few thousand entries: 3000 runs, mostly due, some future, some claimed."""
    instances, queue = table(prefix, "workflow_instances"), table(prefix, "task_queue")
    db.execute(
        sql.SQL(
            "INSERT INTO {} (instance_id, workflow_id, definition_hash, status, input,"
            " distributed) SELECT 'big-' || g, 'wf', 'h' || (g % 3), 'running', '\\x31', true"
            " FROM generate_series(1, 3000) AS g"
        ).format(instances)
    )
    db.execute(
        sql.SQL(
            "INSERT INTO {} (instance_id, task_key, task_id, definition_hash, priority,"
            " available_at, worker_id, attempt, lease_expires_at)"
            " SELECT 'big-' || g, 'k' || g, 't', 'h' || (g % 3), 1 + g % 5,"
            " now() + (g % 7 - 3) * interval '1 minute',"
            " CASE WHEN g % 10 = 0 THEN 'w' END, CASE WHEN g % 10 = 0 THEN 1 ELSE 0 END,"
            " CASE WHEN g % 10 = 0 THEN now() + (g % 3 - 1) * interval '1 minute' END"
            " FROM generate_series(1, 3000) AS g"
        ).format(queue)
    )
    # Run concurrency limits (migration 0007): every third entry has a key, and the slots
    # of a thousand keys are held (the claim must probe them by index, not scan them).
    slots = table(prefix, "concurrency_slots")
    db.execute(
        sql.SQL(
            "UPDATE {} SET concurrency_key = 'key' || (substr(instance_id, 5)::int % 1000),"
            " concurrency_limit = 2 WHERE substr(instance_id, 5)::int % 3 = 0"
        ).format(queue)
    )
    db.execute(
        sql.SQL(
            "INSERT INTO {} (concurrency_key, slot, instance_id)"
            " SELECT 'key' || g, 0, 'big-' || (g * 3) FROM generate_series(1, 1000) AS g"
        ).format(slots)
    )
    # Task limits (migration 0011): 2000 task slots held over 200 tasks, 1000 steps waiting.
    task_slots, task_waits = table(prefix, "task_slots"), table(prefix, "task_waits")
    db.execute(
        sql.SQL(
            "INSERT INTO {} (task_id, slot, instance_id, step_key, owner, attempt)"
            " SELECT 't' || (g % 200), g / 200, 'big-' || g, 'k' || g, 'k' || g, 1"
            " FROM generate_series(1, 2000) AS g"
        ).format(task_slots)
    )
    db.execute(
        sql.SQL(
            "INSERT INTO {} (instance_id, step_key, task_id, kind, name, lim)"
            " SELECT 'big-' || g, 'k' || g, 't' || (g % 200), 'slot', 't' || (g % 200), 10"
            " FROM generate_series(1, 1000) AS g"
        ).format(task_waits)
    )
    for name in (queue, instances, slots, task_slots, task_waits):
        db.execute(sql.SQL("ANALYZE {}").format(name))
    return prefix


def test_the_claim_query_walks_the_partial_indexes(
    db: psycopg.Connection[Any], backend: PostgresBackend, big_queue: str
) -> None:
    nodes = explain(
        db,
        backend,
        "claim",
        {"worker": "w", "hashes": ["h1"], "tags": [], "n": 5, "lease": 30.0,
         "token": uuid.uuid4()},
    )  # fmt: skip
    ready, lease = big_queue + "task_queue_ready_idx", big_queue + "task_queue_lease_idx"
    # Unclaimed entries: walked in claim order on the partial index, stopping at the LIMIT.
    assert any(n["Node Type"] == "Index Scan" and n.get("Index Name") == ready for n in nodes)
    # Expired leases: found through their own partial index.
    assert any(n.get("Index Name") == lease for n in nodes)
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes


@pytest.mark.parametrize(
    "name",
    ["advance", "advance_final", "advance_recover", "heartbeat", "enqueue", "claimed_by_token",
     "abandon",
     "count_finished", "delete_finished", "create_instance", "send_signal", "unpause",
     "request_control", "finish", "take_over", "renew_lease", "save_steps", "consume_signal",
     "acquire_task_slot", "release_task_slot", "take_rate_token", "record_task_wait",
     "task_wait", "purge_task_limit_rows"],
)  # fmt: skip
def test_queue_statements_use_no_sequential_scan(
    db: psycopg.Connection[Any], backend: PostgresBackend, big_queue: str, name: str
) -> None:
    params: dict[str, Any] = {
        "id": "big-7", "key": "k7", "attempt": 1, "worker": "w", "fate": "drop",
        "terminal": False, "lease": 30.0, "token": uuid.uuid4(), "move": True,
        "n_key": "k8", "n_task_id": "t", "n_priority": 3, "n_tags": [], "n_due": False,
        "ids": ["big-7", "big-8"], "keys": ["k7", "k8"], "attempts": [1, 1],
        "workers": ["w", "w"], "cutoff": time.time(), "batch": 100, "name": "go",
        "payload": b"1", "send_id": uuid.uuid4(), "kind": "cancel", "reason": None,
        "by": None, "applied_status": "cancelled", "apply": ["waiting"],
        "request": ["running"], "error": "boom", "retry_in": 1.0, "new_token": uuid.uuid4(),
        "task": "t", "limit": 2, "owner": "k7", "bucket": "b", "n": 5, "per": 1.0,
        "now": time.time(), "retry_at": None,
    }  # fmt: skip
    _queue._item_params(params, [QueueItem("k9", "t", tags=("a",)), QueueItem("k10")])
    _ops.step_params(params, [step("k7"), step("k8")])
    _ops.step_params(params, [step("k7")])
    _ops.final_params(params, FinalState(Status.WAITING, wake_at=time.time()))
    rec = InstanceRecord("big-new", "wf", "h1", Status.RUNNING, b"1", distributed=True)
    params.update({k: v for k, v in _ops._instance_params(rec, uuid.uuid4()).items()
                   if k != "id"})  # fmt: skip
    queries = backend._compiled().queries
    variants = [v for v in queries if v.split("/")[0] == name]  # one per step/item count
    big = {big_queue + "task_queue", big_queue + "workflow_instances"}
    if name != "purge_task_limit_rows":  # that one sweeps them whole (they hold few rows)
        big |= {big_queue + "task_slots", big_queue + "task_waits"}
    for variant in variants:
        nodes = explain(db, backend, variant, params)
        scans = [n for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] in big]
        assert not scans, (variant, nodes)


# -- claims exclusive across processes (R8, scaled down) ---------------------------------------

CLAIMER = """
import json, random, sys, threading
from sayiir.backends.postgres import PostgresBackend
dsn, prefix, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
backend = PostgresBackend(dsn, table_prefix=prefix, max_connections=4)
out, lock = [], threading.Lock()
def run(n):
    rnd = random.Random(seed * 10 + n)
    empty = 0
    while empty < 3:
        got = backend.claim(f"p{seed}-{n}", ["h"], [], rnd.randint(1, 20), 600)
        empty = 0 if got else empty + 1
        with lock:
            out.extend([c.instance_id, c.key, c.attempt, c.worker_id] for c in got)
threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
for t in threads: t.start()
for t in threads: t.join()
backend.close()
print(json.dumps(out))
"""


def test_processes_claiming_at_once_take_each_entry_exactly_once(
    pg_dsn: str, backend: PostgresBackend, prefix: str
) -> None:
    iids = [new(backend) for _ in range(100)]
    for iid in iids:
        backend.enqueue(iid, [QueueItem(f"k{j}", "t", priority=1 + j % 5) for j in range(19)])
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, pg_dsn, prefix, str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    elapsed = time.monotonic() - started
    claims: list[list[Any]] = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        claims.extend(json.loads(out))
    counts = Counter((iid, key) for iid, key, _, _ in claims)
    assert len(counts) == 100 * 20  # every entry ...
    assert set(counts.values()) == {1}  # ... claimed exactly once
    assert {attempt for _, _, attempt, _ in claims} == {1}
    assert len({w for _, _, _, w in claims}) > 1
    print(f"\n2000 entries claimed by 4 processes x 2 threads in {elapsed:.2f}s")


# -- wake-ups (LISTEN/NOTIFY) ------------------------------------------------------------------

picked: dict[str, float] = {}


@task
def mark(run: str) -> str:
    picked[run] = time.monotonic()
    return run


QUICK = Flow("quick").then(mark).build()


def listeners(db: psycopg.Connection[Any], channel: str) -> list[int]:
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
        (sql.SQL("LISTEN {}").format(sql.Identifier(channel)).as_string(db),),
    ).fetchall()
    return [pid for (pid,) in rows]


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def sent_before_a_marker(listen: psycopg.Connection[Any], channel: str) -> list[tuple[str, str]]:
    """The notifications ``listen`` got before a marker sent now (channel, payload): they
    arrive in commit order, so once the marker is in, nothing sent earlier is still due."""
    listen.execute("SELECT pg_notify(%s, 'marker')", (channel,))
    got: list[tuple[str, str]] = []
    for n in listen.notifies(timeout=60.0):
        if (n.channel, n.payload) == (channel, "marker"):
            return got
        got.append((n.channel, n.payload))
    raise AssertionError("the marker notification never arrived")


def replaced(db: psycopg.Connection[Any], channel: str, pid: int) -> Callable[[], bool]:
    """True once another connection than ``pid`` listens on ``channel``."""
    return lambda: listeners(db, channel) not in ([], [pid])


def pickup(client: WorkflowClient, run: str) -> float:
    """Seconds from submit to the task starting on a worker."""
    start = time.monotonic()
    client.submit(QUICK, run, run)
    wait_for(lambda: run in picked, 60.0)  # generous: the worker's next poll is an hour away
    return picked[run] - start


def test_notify_wakes_an_idle_worker_long_before_its_poll_and_after_reconnects(
    backend: PostgresBackend, db: psycopg.Connection[Any], prefix: str
) -> None:
    channel = queue_channel("public", prefix)
    client = WorkflowClient(backend)
    claims: list[bool] = []  # one per claim the worker made: whether it got work
    real_claim = backend.claim

    def claim(*args: Any, **kwargs: Any) -> Any:
        got = real_claim(*args, **kwargs)
        claims.append(bool(got))
        return got

    backend.claim = claim  # type: ignore[method-assign]
    # Polling once an hour: a run picked up within the test can only have been woken by NOTIFY.
    handle = Worker("w", backend, poll_interval=3600.0).start([QUICK])
    try:
        wait_for(lambda: len(listeners(db, channel)) == 1)
        wait_for(lambda: len(claims) >= 1)  # the first (empty) poll is over: it sleeps an hour
        latencies = [pickup(client, f"r{uuid.uuid4().hex}") for _ in range(5)]
        for _ in range(2):  # R22: kill the listener; it reconnects and wake-ups work again
            wait_for(lambda: not claims[-1])  # the claim after the last task came back empty
            [pid] = listeners(db, channel)
            polled = len(claims)
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_for(replaced(db, channel, pid))
            # Relistened, the worker looks once for what it missed; then only NOTIFY wakes it.
            wait_for(lambda: len(claims) > polled)  # noqa: B023
            pickup(client, f"r{uuid.uuid4().hex}")
        print(f"\npickup latency with NOTIFY: median {sorted(latencies)[2] * 1000:.1f} ms")
    finally:
        handle.shutdown()
        handle.join(10)
    wait_for(lambda: listeners(db, channel) == [])  # the last unsubscribe closed it


def test_the_callback_runs_after_every_relisten(
    backend: PostgresBackend, db: psycopg.Connection[Any], prefix: str
) -> None:
    calls: list[float] = []
    unsubscribe = backend.subscribe(lambda: calls.append(time.monotonic()))
    channel = queue_channel("public", prefix)
    listen = psycopg.connect(db.info.dsn, autocommit=True)  # counts what is sent, in order
    try:
        wait_for(lambda: len(calls) == 1)  # after the first LISTEN: look for work now
        [pid] = listeners(db, channel)
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: len(calls) == 2)  # reconnected: look again (notifications were lost)
        listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        iid = new(backend)  # a distributed run: its start entry notifies
        wait_for(lambda: len(calls) == 3)
        assert sent_before_a_marker(listen, channel) == [(channel, "")]  # the start entry's
        backend.enqueue(iid, [QueueItem("later", available_at=time.time() + 3600)])
        assert sent_before_a_marker(listen, channel) == []  # an entry due later wakes nobody
        backend.enqueue(iid, [QueueItem("now")])
        assert sent_before_a_marker(listen, channel) == [(channel, "")]
        wait_for(lambda: len(calls) == 7)  # the entry due now, and our three markers
    finally:
        listen.close()
        unsubscribe()
    wait_for(lambda: listeners(db, channel) == [])


def test_notifications_carry_no_payload_and_stay_in_their_prefix(
    pg_dsn: str, backend: PostgresBackend, prefix: str
) -> None:
    other_prefix = f"o{uuid.uuid4().hex[:10]}_"
    with (
        PostgresBackend(pg_dsn, table_prefix=other_prefix) as other,
        psycopg.connect(pg_dsn, autocommit=True) as listen,
    ):
        channel = queue_channel("public", prefix)
        listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        new(other)  # another prefix: another channel
        iid = new(backend)
        assert sent_before_a_marker(listen, channel) == [(channel, "")]
        # Nothing became claimable (the run's "" entry is already due): nobody is woken.
        backend.send_signal(iid, "go", b"1")
        assert sent_before_a_marker(listen, channel) == []


def test_a_channel_too_long_for_a_name_is_hashed_and_works(pg_dsn: str) -> None:
    schema = "s" * 30
    prefix = ("p" + uuid.uuid4().hex * 2)[: MAX_PREFIX - 1] + "_"
    channel = queue_channel(schema, prefix)
    assert len(channel) <= 63 and channel.startswith("sayiir_queue_")
    assert channel != queue_channel(schema, prefix[:-2] + "x_")
    calls: list[int] = []
    with PostgresBackend(pg_dsn, schema=schema, table_prefix=prefix) as backend:
        unsubscribe = backend.subscribe(lambda: calls.append(1))
        wait_for(lambda: len(calls) == 1)
        new(backend)
        wait_for(lambda: len(calls) == 2)
        unsubscribe()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# -- retention ---------------------------------------------------------------------------------


def finished(backend: PostgresBackend, status: Status = Status.COMPLETED) -> str:
    iid = new(backend)
    backend.send_signal(iid, "go", b"consumed")
    assert backend.consume_signal(iid, "go", "sig") == b"consumed"
    backend.send_signal(iid, "go", b"left over")
    backend.save_steps(iid, [step("a")])
    backend.finish(iid, FinalState(status, output=b"1", error="e"), [])
    return iid


def test_delete_finished_deletes_old_finished_runs_in_batches(
    backend: PostgresBackend, db: psycopg.Connection[Any], prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    old = [finished(backend, s) for s in (Status.COMPLETED, Status.FAILED) * 2]
    cancelled = new(backend, Status.WAITING)
    backend.request_control(cancelled, ControlRequest("cancel", "r", "ops"))
    old.append(cancelled)
    active = [new(backend), new(backend, Status.AWAITING_SIGNAL), new(backend, Status.PAUSED)]
    for iid in (old[0], old[1], active[0]):  # task limits' rows (no foreign key): a slot, a wait
        assert backend.acquire_task_slot(f"t-{iid}", 1, iid, "s", "some-token", None)
        assert backend.take_rate_token("c", f"b-{iid}", 1, 60.0, 1e9, "other", "s") == 0.0
        assert backend.take_rate_token("c", f"b-{iid}", 1, 60.0, 1e9 + 1, iid, "s") > 0
    db.execute(
        sql.SQL(
            "UPDATE {} SET completed_at = now() - interval '2 days' WHERE completed_at IS NOT NULL"
        ).format(table(prefix, "workflow_instances"))
    )
    recent = finished(backend)
    assert backend.count_finished(86400) == 5
    assert backend.count_finished(0) == 6
    counter = StatementCounter(monkeypatch)
    assert backend.delete_finished(86400, batch_size=2) == 5
    assert counter.take() == 1 + 3  # the cutoff, then batches of 2, 2, 1: one statement each
    for iid in old:
        assert backend.get_instance(iid) is None
    for iid in [*active, recent]:
        assert backend.get_instance(iid) is not None
    left = db.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM {cp} WHERE instance_id = ANY(%(ids)s)),"
            " (SELECT count(*) FROM {te} WHERE instance_id = ANY(%(ids)s)),"
            " (SELECT count(*) FROM {q} WHERE instance_id = ANY(%(ids)s)),"
            " (SELECT count(*) FROM {sig} WHERE instance_id = ANY(%(ids)s)"
            "  AND consumed_at IS NOT NULL),"
            " (SELECT count(*) FROM {sig} WHERE instance_id = ANY(%(ids)s)"
            "  AND consumed_at IS NULL)"
        ).format(
            cp=table(prefix, "checkpoints"),
            te=table(prefix, "task_executions"),
            q=table(prefix, "task_queue"),
            sig=table(prefix, "workflow_signals"),
        ),
        {"ids": old},
    ).fetchone()
    assert left == (0, 0, 0, 0, 4)  # unconsumed events stay for a future run with that id
    limit_rows = db.execute(
        sql.SQL(
            "SELECT (SELECT array_agg(DISTINCT instance_id) FROM {s}),"
            " (SELECT array_agg(DISTINCT instance_id) FROM {w})"
        ).format(s=table(prefix, "task_slots"), w=table(prefix, "task_waits"))
    ).fetchone()
    assert limit_rows == ([active[0]], [active[0]])  # the deleted runs' went with them
    assert backend.delete_finished(0) == 1  # the recent one
    assert backend.delete_finished(0) == 0


def test_delete_finished_checks_its_arguments(backend: PostgresBackend) -> None:
    with pytest.raises(ValueError):
        backend.delete_finished(-1)
    with pytest.raises(ValueError):
        backend.delete_finished(1, batch_size=0)
    with pytest.raises(TypeError):
        backend.delete_finished("1")  # type: ignore[arg-type]


def test_retention_cli(
    pg_dsn: str, backend: PostgresBackend, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done = [finished(backend) for _ in range(3)]
    args = ["retention", pg_dsn, "--table-prefix", prefix]
    assert cli([*args, "--older-than-days", "0", "--dry-run"]) == 0
    assert "would delete 3 finished run(s)" in capsys.readouterr().out
    assert all(backend.get_instance(iid) is not None for iid in done)
    assert cli([*args, "--older-than-days", "1"]) == 0
    assert "deleted 0 finished run(s)" in capsys.readouterr().out
    assert cli([*args, "--older-than-days", "0", "--batch-size", "2"]) == 0
    assert "deleted 3 finished run(s)" in capsys.readouterr().out
    assert all(backend.get_instance(iid) is None for iid in done)
    assert cli([*args, "--older-than-days", "-1"]) == 1
    assert "older-than-days" in capsys.readouterr().err
    assert cli([*args, "--older-than-days", "1", "--batch-size", "0"]) == 1
    assert "batch-size" in capsys.readouterr().err
    assert cli(["retention", pg_dsn]) == 1  # --older-than-days is required
    capsys.readouterr()


def test_retention_cli_purges_expired_dedupe_keys(
    pg_dsn: str, backend: PostgresBackend, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    now = time.time()
    for i in range(5):  # windows passed a minute ago (no submit came since to purge them)
        assert backend.take_dedupe_key(f"old-{i}", f"r{i}", now - 120, now - 60) == f"r{i}"
    assert backend.take_dedupe_key("live", "r-live", now, now + 3600) == "r-live"
    args = ["retention", pg_dsn, "--table-prefix", prefix, "--older-than-days", "30"]
    assert cli([*args, "--dry-run"]) == 0
    assert "would delete 5 expired dedupe key(s)" in capsys.readouterr().out
    assert cli([*args, "--batch-size", "2"]) == 0
    assert "deleted 5 expired dedupe key(s)" in capsys.readouterr().out
    assert backend.count_expired_dedupe_keys(time.time()) == 0
    assert backend.take_dedupe_key("live", "r-other", time.time(), now + 7200) == "r-live"


def test_concurrent_workers_and_retention_do_not_deadlock(backend: PostgresBackend) -> None:
    runs = [finished(backend) for _ in range(20)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                new(backend)
                for c in backend.claim("w", ["h"], [], 5, LONG):
                    backend.advance(c, [step("a")], final=FinalState(Status.COMPLETED, b"1"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        deleted = sum(backend.delete_finished(0, batch_size=3) for _ in range(5))
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    assert deleted >= len(runs)


# -- a move never takes a branch checkpointed while it waited for the run's row lock ----------


def test_a_move_waiting_for_the_run_lock_never_takes_a_key_checkpointed_meanwhile(
    backend: PostgresBackend, db: psycopg.Connection[Any], prefix: str, pg_dsn: str
) -> None:
    """Worker B holds branch "k" and commits its checkpoint (dropping its entry) while
    worker A's write, which would take "k", waits for the run's row lock: A's statement
    began before that commit, so its snapshot has neither the checkpoint nor the drop. It
    must not take "k" (its task would run twice): A keeps its claim and re-reads."""
    iid = new(backend)
    [first] = backend.claim("A", ["h"], [], 1, LONG)
    _, a = backend.advance(
        first, [step("first")], enqueue=[QueueItem("k", "k")], next_item=QueueItem("b0", "b0")
    )
    assert a is not None and a.key == "b0"
    [b] = backend.claim("B", ["h"], [], 1, LONG)
    assert b.key == "k"
    inst, queue, cps = (
        table(prefix, n) for n in ("workflow_instances", "task_queue", "checkpoints")
    )
    with psycopg.connect(pg_dsn) as other:  # B's write of "k", held open
        other.execute(
            sql.SQL("SELECT 1 FROM {} WHERE instance_id = %s FOR NO KEY UPDATE").format(inst),
            (iid,),
        )
        other.execute(
            sql.SQL(
                "INSERT INTO {} (instance_id, key, task_id, output) VALUES (%s, 'k', 'k', %s)"
            ).format(cps),
            (iid, b"7"),
        )
        other.execute(
            sql.SQL("DELETE FROM {} WHERE instance_id = %s AND task_key = 'k'").format(queue),
            (iid,),
        )
        other.execute(
            sql.SQL("UPDATE {} SET updated_at = now() WHERE instance_id = %s").format(inst), (iid,)
        )
        result: list[Any] = []
        writer = threading.Thread(
            target=lambda: result.append(
                backend.advance(a, [step("b0")], next_item=QueueItem("k", "k"))
            )
        )
        writer.start()
        deadline = time.monotonic() + 30
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'WITH lock AS MATERIALIZED%%'"
        )
        while db.execute(waiting).fetchall() == [(0,)]:  # A's snapshot is taken, it waits
            assert time.monotonic() < deadline, "A's write never waited for the lock"
            time.sleep(0.01)
        other.commit()
    writer.join(30)
    assert result == [(None, a)]  # not taken: A keeps its claim
    assert queue_rows(db, prefix, iid) == [("b0", "A", 1)]  # no entry for "k" came back
    assert backend.get_checkpoint(iid, "b0") == b"1"


def test_a_slot_taken_by_a_holder_the_taker_cannot_see_yet_is_not_stolen(
    backend: PostgresBackend, db: psycopg.Connection[Any], prefix: str, pg_dsn: str
) -> None:
    """The race behind a CI run where three bodies of a max_concurrent=2 task ran at once.

    A taker's statement judges a slot's holder alive with the statement's snapshot. Holder
    h2 makes its run alive and takes the slot (from a dead holder) after that snapshot: the
    taker, which saw the dead holder, blocks on h2's row, then re-checks h2 against its old
    snapshot, where h2's run is not yet alive. It must not take the slot over."""
    limit_one = ("t-race", 1)
    assert backend.acquire_task_slot(*limit_one, "dead-run", "s", "a-token-no-run-has", None)
    h2 = new(backend)  # running, but nobody's lease yet: not alive
    token = uuid.uuid4()
    query = backend._compiled().queries["acquire_task_slot"]
    params = {"task": "t-race", "limit": 1, "id": h2, "key": "s", "owner": str(token),
              "attempt": None}  # fmt: skip
    with psycopg.connect(pg_dsn) as x:
        x.execute(
            sql.SQL(
                "UPDATE {} SET start_token = %s, lease_until = now() + interval '1 hour'"
                " WHERE instance_id = %s"
            ).format(table(prefix, "workflow_instances")),
            (token, h2),
        )
        assert x.execute(query, params).fetchone() == (True, True)  # h2 holds it (uncommitted)
        result: list[bool] = []
        taker = threading.Thread(
            target=lambda: result.append(
                backend.acquire_task_slot(*limit_one, "h3", "s", "h3-token", None)
            )
        )
        taker.start()
        deadline = time.monotonic() + 10
        while not _waits_for_a_lock(db) and time.monotonic() < deadline:
            time.sleep(0.01)  # h3's statement has its snapshot, and waits for h2's row
        assert _waits_for_a_lock(db)
        x.commit()
    taker.join(10)
    assert result == [False]
    holders = db.execute(
        sql.SQL("SELECT instance_id FROM {} WHERE task_id = 't-race'").format(
            table(prefix, "task_slots")
        )
    ).fetchall()
    assert holders == [(h2,)]


def _waits_for_a_lock(db: psycopg.Connection[Any]) -> bool:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    ).fetchone()
    return row is not None and row[0] > 0
