"""Claims skip rows that another session has locked (``FOR UPDATE SKIP LOCKED``).

A claimer that waited on a row lock instead would serialise every worker behind the
slowest transaction on the queue; the claim-once tests cannot see it (they still claim
each entry once, only slower). Here a second session holds a row lock on the oldest entry
and the claiming session runs with a short ``lock_timeout``: a claim that skips returns the
next entry at once, one that waits fails fast with a lock timeout instead of hanging.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from sayiir import Flow, PostgresBackend, WorkflowClient, task

pytestmark = pytest.mark.postgres


@task
def step(x: int) -> int:
    return x


WF = Flow("locked").then(step).build()
HASHES = [WF.definition_hash]


@pytest.fixture
def prefix() -> str:
    return f"k{uuid.uuid4().hex[:10]}_"


@pytest.fixture
def backend(pg_dsn: str, prefix: str) -> Iterator[PostgresBackend]:
    """A backend whose sessions give up on a row lock after 2 s (and do not retry)."""
    options = quote("-c lock_timeout=2000", safe="")
    sep = "&" if "?" in pg_dsn else "?"
    b = PostgresBackend(f"{pg_dsn}{sep}options={options}", table_prefix=prefix,
                        retry_timeout_secs=0)  # fmt: skip
    b.get_instance("warm-up")  # connected and migrated
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def locker(pg_dsn: str, prefix: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """Another session, in a transaction, that can lock queue rows until the test ends."""
    conn = psycopg.connect(pg_dsn)
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def lock_entry(conn: psycopg.Connection[tuple[object, ...]], prefix: str, instance: str) -> None:
    rows = conn.execute(
        sql.SQL("SELECT task_key FROM {} WHERE instance_id = %s FOR UPDATE").format(
            sql.Identifier(f"{prefix}task_queue")
        ),
        [instance],
    ).fetchall()
    assert len(rows) == 1, rows


def test_a_locked_ready_entry_is_skipped_not_waited_for(backend, locker, prefix) -> None:
    client = WorkflowClient(backend)
    client.submit(WF, "oldest", 1)
    client.submit(WF, "newer", 2)
    lock_entry(locker, prefix, "oldest")
    [claim] = backend.claim("w1", HASHES, [], 1, 60.0)  # a lock timeout raises here
    assert claim.instance_id == "newer"
    assert backend.claim("w2", HASHES, [], 1, 60.0) == []  # the locked one is not taken
    locker.rollback()
    [claim] = backend.claim("w2", HASHES, [], 1, 60.0)
    assert claim.instance_id == "oldest"


def test_a_locked_expired_claim_is_skipped_not_waited_for(backend, locker, prefix) -> None:
    """The second walk of the claim (entries whose lease expired) skips locked rows too."""
    client = WorkflowClient(backend)
    client.submit(WF, "oldest", 1)
    client.submit(WF, "newer", 2)
    first = backend.claim("gone", HASHES, [], 2, 0.001)
    assert [c.instance_id for c in first] == ["oldest", "newer"]
    time.sleep(0.05)  # both leases are over
    lock_entry(locker, prefix, "oldest")
    [claim] = backend.claim("w1", HASHES, [], 1, 60.0)
    assert (claim.instance_id, claim.attempt) == ("newer", 2)
    locker.rollback()
    [claim] = backend.claim("w1", HASHES, [], 1, 60.0)
    assert (claim.instance_id, claim.attempt) == ("oldest", 2)
