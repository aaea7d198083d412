"""Lifecycle of the PostgreSQL backend: the page's sync and async usage, pools, closing,
database outages (connections killed mid-run), and state that survives pg_dump/restore.

The outage tests terminate this module's connections with ``pg_terminate_backend``; they
never restart the shared server (reliability plan R5 has its own harness).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from sayiir import (
    CheckpointingRunner,
    Flow,
    JsonCodec,
    PostgresBackend,
    resume_workflow,
    run_durable_workflow,
    send_signal,
    task,
)
from sayiir.errors import BackendError

pytestmark = pytest.mark.postgres

DOCS = Path(__file__).resolve().parents[2] / "docs" / "postgres.md"


@task
def add_one(x: int) -> int:
    return x + 1


@task
def double(x: int) -> int:
    return x * 2


@pytest.fixture
def iid() -> str:
    return f"run-{secrets.token_hex(6)}"


def app_url(pg_dsn: str, name: str) -> str:
    return f"{pg_dsn}?application_name={name}"


def kill_connections(pg_dsn: str, application_name: str) -> int:
    """Terminate every server connection of ``application_name``; return how many."""
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


# -- the page's usage --------------------------------------------------------------------------


def test_sync_usage_as_on_the_page(pg_dsn: str, iid: str) -> None:
    workflow = Flow("order").then(add_one).then(double).build()
    backend = PostgresBackend(pg_dsn)
    status = run_durable_workflow(workflow, iid, 42, backend=backend)
    assert status.is_completed() and status.output == 86
    again = run_durable_workflow(workflow, iid, 42, backend=backend, conflict_policy="use_existing")
    assert again.output == 86
    backend.close()


def test_async_usage_as_on_the_page(pg_dsn: str, iid: str) -> None:
    workflow = Flow("order").then(add_one).then(double).build()

    async def main() -> None:
        backend = await PostgresBackend.connect(pg_dsn)
        assert backend._pools.async_hot() is not None  # the pool is open when connect returns
        runner = CheckpointingRunner(backend)
        status = await runner.run(workflow, iid, 42)
        assert status.is_completed() and status.output == 86
        await backend.aclose()

        backend = await PostgresBackend.connect_with_codec(pg_dsn, JsonCodec())
        assert isinstance(backend.codec, JsonCodec)
        async with backend:
            status = await CheckpointingRunner(backend).resume(workflow, iid)
            assert status.output == 86

    asyncio.run(main())


def test_signals_across_sync_and_async(pg_dsn: str, iid: str) -> None:
    workflow = Flow("approve").then(add_one).wait_for_signal("go").then(double).build()
    with PostgresBackend(pg_dsn) as backend:
        parked = run_durable_workflow(workflow, iid, 1, backend=backend)
        assert parked.is_awaiting_signal()

        async def deliver() -> None:
            await CheckpointingRunner(backend).send_signal(iid, "go", 20)

        asyncio.run(deliver())
        status = resume_workflow(workflow, iid, backend)
        assert status.is_completed() and status.output == 40


def test_connect_reports_a_bad_database_at_once(pg_dsn: str) -> None:
    url = re.sub(r"/[^/?]+(\?|$)", r"/no_such_db_here\1", pg_dsn, count=1)

    async def main() -> None:
        with pytest.raises(BackendError, match=r'database "no_such_db_here" does not exist'):
            await PostgresBackend.connect(url)

    asyncio.run(main())


# -- pools -------------------------------------------------------------------------------------


def test_from_a_caller_sync_pool_which_stays_open(pg_dsn: str, iid: str) -> None:
    workflow = Flow("pooled").then(add_one).build()
    with ConnectionPool(pg_dsn, min_size=1, max_size=2, open=True) as pool:
        backend = PostgresBackend.from_pool(pool)
        assert run_durable_workflow(workflow, iid, 1, backend=backend).output == 2
        with pool.connection() as conn:
            assert conn.autocommit is False  # handed back as we found it
        backend.close()
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_from_a_caller_pool_whose_connections_make_dict_rows(pg_dsn: str, iid: str) -> None:
    """Rows come back as tuples to sayiir whatever row factory the caller's connections use."""
    workflow = Flow("dict_rows").then(add_one).then(double).build()
    kwargs = {"row_factory": dict_row}
    pool: ConnectionPool[Any] = ConnectionPool(
        pg_dsn, min_size=1, max_size=2, kwargs=kwargs, open=True
    )
    with pool:
        backend = PostgresBackend.from_pool(pool, lease_secs=5)
        assert run_durable_workflow(workflow, iid, 1, backend=backend).output == 4
        record = backend.get_instance(iid)
        assert record is not None and record.status.value == "completed"
        with pool.connection() as conn:
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}  # still theirs
        backend.close()


def test_from_a_caller_async_pool_which_stays_open(pg_dsn: str, iid: str) -> None:
    workflow = Flow("apooled").then(add_one).build()

    async def main() -> None:
        async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False) as pool:
            backend = PostgresBackend.from_pool(pool)
            status = await CheckpointingRunner(backend).run(workflow, iid, 1)
            assert status.output == 2
            await backend.aclose()
            assert not pool.closed
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT 1")
                assert await cur.fetchone() == (1,)

    asyncio.run(main())


def test_the_other_api_opens_its_own_pool_from_the_same_conninfo(pg_dsn: str, iid: str) -> None:
    workflow = Flow("mixed").then(add_one).build()

    async def main() -> None:
        async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False) as pool:
            backend = PostgresBackend.from_pool(pool)
            # Sync use (from a thread: it blocks) opens a sync pool of the backend's own.
            status = await asyncio.to_thread(
                run_durable_workflow, workflow, iid, 1, backend=backend
            )
            assert status.output == 2
            own = backend._pools.sync_hot()
            assert own is not None and own is not pool  # type: ignore[comparison-overlap]
            await backend.aclose()
            assert own.closed and not pool.closed

    asyncio.run(main())


def test_pool_options_reach_the_pool(pg_dsn: str) -> None:
    backend = PostgresBackend(
        pg_dsn,
        max_connections=7,
        min_connections=2,
        acquire_timeout_secs=3,
        idle_timeout_secs=60,
        max_lifetime_secs=120,
    )
    backend.load("x")
    pool = backend._pools.sync_hot()
    assert pool is not None
    assert (pool.min_size, pool.max_size, pool.timeout) == (2, 7, 3.0)
    assert (pool.max_idle, pool.max_lifetime) == (60.0, 120.0)
    backend.close()
    with pytest.raises(ValueError):
        PostgresBackend(pg_dsn, min_connections=5, max_connections=2)
    with pytest.raises(ValueError):
        PostgresBackend(pg_dsn, max_connections=0)


def test_closed_backend_refuses_work(pg_dsn: str) -> None:
    with PostgresBackend(pg_dsn) as backend:
        backend.load("x")
    with pytest.raises(BackendError, match="closed"):
        backend.load("x")


def test_backend_is_shared_by_threads(pg_dsn: str) -> None:
    workflow = Flow("threads").then(add_one).then(double).build()
    results: list[Any] = []
    with PostgresBackend(pg_dsn, max_connections=4) as backend:

        def run(n: int) -> None:
            results.append(
                run_durable_workflow(
                    workflow, f"t-{secrets.token_hex(4)}", n, backend=backend
                ).output
            )

        threads = [threading.Thread(target=run, args=(n,)) for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(results) == sorted((n + 1) * 2 for n in range(12))


# -- the database goes away --------------------------------------------------------------------


def test_calls_survive_killed_connections(
    pg_dsn: str, iid: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"sayiir_outage_{secrets.token_hex(3)}"
    backend = PostgresBackend(app_url(pg_dsn, name), min_connections=3, retry_timeout_secs=20)

    @task
    def kill_then_add(x: int) -> int:
        kill_connections(pg_dsn, name)  # the checkpoint after this task finds them dead
        return x + 1

    workflow = (
        Flow("outage")
        .then(add_one)
        .then(kill_then_add, name="kill_1")
        .then(kill_then_add, name="kill_2")
        .build()
    )
    status = run_durable_workflow(workflow, iid, 1, backend=backend)
    assert status.is_completed() and status.output == 4
    for _ in range(3):
        assert kill_connections(pg_dsn, name) >= 1
        assert backend.get_instance(iid) is not None
    backend.close()
    assert "retrying" in caplog.text


def test_async_calls_survive_killed_connections(pg_dsn: str, iid: str) -> None:
    name = f"sayiir_aoutage_{secrets.token_hex(3)}"
    workflow = Flow("aoutage").then(add_one).then(double).build()

    async def main() -> None:
        async with await PostgresBackend.connect(app_url(pg_dsn, name), min_connections=2) as b:
            storage = b.async_storage()
            await CheckpointingRunner(b).run(workflow, iid, 1)
            for _ in range(3):
                assert await asyncio.to_thread(kill_connections, pg_dsn, name) >= 1
                rec = await storage.get_instance(iid)
                assert rec is not None and rec.output == b"4"

    asyncio.run(main())


# -- all state is in PostgreSQL ----------------------------------------------------------------


@pytest.mark.skipif(
    not (shutil.which("pg_dump") and shutil.which("psql")), reason="needs pg_dump and psql"
)
def test_a_restored_dump_continues_the_waiting_run(pg_dsn: str, iid: str) -> None:
    workflow = Flow("dumped").then(add_one).wait_for_signal("go").then(double).build()
    with PostgresBackend(pg_dsn) as backend:
        assert run_durable_workflow(workflow, iid, 1, backend=backend).is_awaiting_signal()
    dump = subprocess.run(["pg_dump", pg_dsn], check=True, capture_output=True).stdout
    copy = f"sayiir_restore_{secrets.token_hex(4)}"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(copy)))
    restored = re.sub(r"/[^/?]+(\?|$)", rf"/{copy}\1", pg_dsn, count=1)
    try:
        subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", restored],
            input=dump,
            check=True,
            capture_output=True,
        )
        with PostgresBackend(restored) as backend:
            send_signal(iid, "go", 5, backend=backend)
            status = resume_workflow(workflow, iid, backend)
            assert status.is_completed() and status.output == 10
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(copy))
            )


# -- the documented monitoring queries run -----------------------------------------------------


def doc_queries() -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture
def some_history(pg_dsn: str) -> Iterator[None]:
    @task
    def boom(x: int) -> int:
        raise RuntimeError("boom")

    ok = Flow("mon-ok").then(add_one).then(double).build()
    bad = Flow("mon-bad").then(add_one).then(boom).build()
    with PostgresBackend(pg_dsn) as backend:
        for i in range(3):
            run_durable_workflow(ok, f"mon-ok-{secrets.token_hex(4)}", i, backend=backend)
        run_durable_workflow(bad, f"mon-bad-{secrets.token_hex(4)}", 1, backend=backend)
    yield


def test_documented_monitoring_queries_run(pg_dsn: str, some_history: None) -> None:
    queries = doc_queries()
    assert len(queries) >= 7
    assert queries[0].strip() == (
        "SELECT status, COUNT(*) FROM sayiir_workflow_instances\n"
        "WHERE created_at > NOW() - INTERVAL '1 hour' GROUP BY status;"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        results = [conn.execute(query.encode()).fetchall() for query in queries]
    counts: dict[str, int] = dict(results[0])
    assert counts.get("completed", 0) >= 3 and counts.get("failed", 0) >= 1
    assert all(results[i] for i in range(1, 7)), "these queries see the history just made"


def doc_retention_query() -> str:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Retention", 1)[1].split("\n## ", 1)[0]
    (query,) = re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)
    return str(query)


def test_documented_retention_query_deletes_only_old_finished_runs(pg_dsn: str) -> None:
    ok = Flow("ret-ok").then(add_one).build()
    waiting = Flow("ret-wait").then(add_one).wait_for_signal("go").build()
    done_id, wait_id = f"ret-{secrets.token_hex(4)}", f"ret-{secrets.token_hex(4)}"
    with PostgresBackend(pg_dsn) as backend:
        run_durable_workflow(ok, done_id, 1, backend=backend)
        run_durable_workflow(waiting, wait_id, 1, backend=backend)
        with pytest.raises(BackendError, match="already finished"):
            send_signal(done_id, "late", 1, backend=backend)
        query = doc_retention_query()
        assert "interval '30 days'" in query
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(query.encode())  # nothing is 30 days old: a no-op
            assert backend.get_instance(done_id) is not None
            conn.execute(query.replace("interval '30 days'", "interval '0 seconds'").encode())
            left = conn.execute(
                "SELECT (SELECT count(*) FROM sayiir_checkpoints WHERE instance_id = %(i)s),"
                " (SELECT count(*) FROM sayiir_task_executions WHERE instance_id = %(i)s)",
                {"i": done_id},
            ).fetchone()
        assert backend.get_instance(done_id) is None
        assert left == (0, 0)
        assert backend.get_instance(wait_id) is not None  # still waiting: kept


def test_the_retry_budget_of_a_first_call_starts_with_that_call(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call made before the backend is ready (first contact, pool still opening) gets the
    whole retry_timeout_secs: its budget once started at the epoch of time.monotonic(), so a
    transient failure there (a pool checkout cut to 0.05 s) failed at once, reporting hours
    of retrying."""
    from sayiir.backends.postgres._io import DRIVER, Retry

    budgets: list[float] = []

    class Recording(Retry):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            budgets.append(self.remaining())

    monkeypatch.setattr(DRIVER, "Retry", Recording)
    with PostgresBackend(pg_dsn, retry_timeout_secs=30) as backend:
        assert backend.load("nobody") is None
    assert budgets and all(25 < left <= 30 for left in budgets), budgets


# -- a pool serves where it was opened ---------------------------------------------------------


def session_pids(pg_dsn: str, application_name: str) -> set[int]:
    """The server processes of the connections of ``application_name``."""
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return {pid for (pid,) in rows}


def wait_for_sessions(pg_dsn: str, application_name: str, count: int) -> set[int]:
    """The sessions of ``application_name`` once there are ``count`` of them (the server
    notices a closed connection a moment after the client closed it); fails after 10 s."""
    deadline = time.monotonic() + 10
    while len(pids := session_pids(pg_dsn, application_name)) != count:
        assert time.monotonic() < deadline, f"{len(pids)} sessions of {application_name}"
        time.sleep(0.05)
    return pids


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_opens_its_own_pool_and_leaves_the_parents_alone(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The sync pool belongs to its process, as the async pool to its event loop: a child
    forked after the backend was used must neither talk on the parent's connections nor
    close them (closing one tells the server to end the parent's session)."""
    name = f"sayiir_fork_{secrets.token_hex(3)}"
    backend = PostgresBackend(app_url(pg_dsn, name), min_connections=1, max_connections=1)
    assert backend.load("nobody") is None
    parent = wait_for_sessions(pg_dsn, name, 1)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            assert backend.load("nobody") is None
            backend.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert wait_for_sessions(pg_dsn, name, 1) == parent  # the child's session is gone, ours not
    assert backend.load("nobody") is None
    backend.close()
    assert "retrying" not in caplog.text


# -- the psycopg parse cache -------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "limit"), [(True, 1 << 16), (False, 4096)])
def test_the_parse_cache_limit_is_raised_on_first_use_unless_opted_out(
    pg_dsn: str, flag: bool, limit: int
) -> None:
    """psycopg caches the parsing of queries up to 4 KB; a backend raises that (process-wide)
    limit on first use, and leaves psycopg alone with ``raise_parse_cache_limit=False``."""
    code = (
        "import os\n"
        "from psycopg import _queries\n"
        "from sayiir import PostgresBackend\n"
        "before = _queries.MAX_CACHED_STATEMENT_LENGTH\n"
        f"backend = PostgresBackend(os.environ['DSN'], raise_parse_cache_limit={flag})\n"
        "untouched = _queries.MAX_CACHED_STATEMENT_LENGTH\n"
        "assert backend.load('nobody') is None\n"
        "backend.close()\n"
        "print(before, untouched, _queries.MAX_CACHED_STATEMENT_LENGTH)\n"
    )
    env = {**os.environ, "DSN": pg_dsn}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert out.split() == ["4096", "4096", str(limit)]
