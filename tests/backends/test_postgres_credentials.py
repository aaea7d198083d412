"""Password rotation: new pool connections use the new password, without a restart.

A private cluster (``pg_cluster``: scram-sha-256 for every role but ``postgres``, TLS on)
holds role ``app``. Runs go on in a thread while the test changes the role's password
(``ALTER ROLE``), hands the new one to the source the backend reads (a ``password=``
function, or a ``PGPASSFILE``), and ends the role's sessions so that the pool must open
new connections. The runs continue; the sessions that serve them afterwards
authenticated with the new password (the old one no longer works).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from sayiir import CheckpointingRunner, Flow, PostgresBackend, run_durable_workflow, task

if TYPE_CHECKING:
    from tests.pgcluster import PrivateCluster

pytestmark = pytest.mark.slow

OLD, NEW = "first-Pw-1", "second-Pw-2"


@task
def add_one(x: int) -> int:
    return x + 1


@task
def double(x: int) -> int:
    return x * 2


WORKFLOW = Flow("rotation").then(add_one).then(double).build()


@pytest.fixture(scope="module")
def app_db(pg_cluster: PrivateCluster) -> str:
    """A database owned by role ``app`` (which logs in with a password)."""
    pg_cluster.execute(f"CREATE ROLE app LOGIN PASSWORD '{OLD}'")
    name = pg_cluster.create_database()
    pg_cluster.execute(f"ALTER DATABASE {name} OWNER TO app")
    return name


def logs_in(cluster: PrivateCluster, dbname: str, password: str) -> bool:
    url = cluster.url(dbname, user="app", password=password, sslmode="require")
    try:
        with psycopg.connect(url, connect_timeout=10):
            return True
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
        return False


class Runs:
    """Runs started one after the other in a thread until ``stop()``."""

    def __init__(self, backend: PostgresBackend, label: str) -> None:
        self.backend = backend
        self.label = label
        self.done: list[tuple[str, Any]] = []
        self.error: BaseException | None = None
        self.progress = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop)
        self._thread.start()

    def _loop(self) -> None:
        i = 0
        try:
            while not self._stop.is_set():
                status = run_durable_workflow(
                    WORKFLOW, f"{self.label}-{i}", i, backend=self.backend
                )
                with self.progress:
                    self.done.append((status.status, status.output))
                    self.progress.notify_all()
                i += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
            with self.progress:
                self.progress.notify_all()

    def wait_for(self, count: int, timeout: float = 120.0) -> None:
        with self.progress:
            ok = self.progress.wait_for(
                lambda: len(self.done) >= count or self.error is not None, timeout
            )
        assert self.error is None, f"a run failed: {self.error!r}"
        assert ok, f"only {len(self.done)} runs in {timeout:g}s"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)


def rotate_while_running(
    cluster: PrivateCluster, dbname: str, backend: PostgresBackend, hand_over: Callable[[], None]
) -> None:
    """Change app's password under running runs; check that they go on with the new one."""
    label = f"r{time.monotonic_ns()}"
    runs = Runs(backend, label)
    try:
        runs.wait_for(3)
        cluster.execute(f"ALTER ROLE app PASSWORD '{NEW}'")
        hand_over()
        before = len(runs.done)
        rotated_at = cluster.execute("SELECT now()")[0][0]
        ended = cluster.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = 'app' AND backend_type = 'client backend'"
        )[0][0]
        assert ended >= 1, "the backend should have had connections open"
        # A connection of the pool in its start-up during that statement (no user name yet)
        # escaped it and, opened before the rotation, served the next runs: end every session
        # opened before the rotation until none is left.
        deadline = time.monotonic() + 60
        while cluster.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE (usename = 'app' OR usename IS NULL) AND backend_type = 'client backend' "
            f"AND backend_start <= '{rotated_at}'::timestamptz"
        )[0][0]:
            assert time.monotonic() < deadline, "sessions from before the rotation keep coming"
        runs.wait_for(before + 5)
    finally:
        runs.stop()
    assert runs.error is None, f"a run failed: {runs.error!r}"
    assert all(status == "completed" for status, _ in runs.done), runs.done
    assert [out for _, out in runs.done] == [(i + 1) * 2 for i in range(len(runs.done))]
    sessions = cluster.execute(
        "SELECT count(*) FROM pg_stat_activity "
        f"WHERE usename = 'app' AND backend_start > '{rotated_at}'::timestamptz"
    )[0][0]
    assert sessions >= 1, "the pool should have opened new connections after the rotation"
    assert not logs_in(cluster, dbname, OLD) and logs_in(cluster, dbname, NEW)


@pytest.fixture
def reset_password(pg_cluster: PrivateCluster, app_db: str) -> None:
    pg_cluster.execute(f"ALTER ROLE app PASSWORD '{OLD}'")


@pytest.mark.usefixtures("reset_password")
def test_a_password_function_is_asked_for_each_new_connection(
    pg_cluster: PrivateCluster, app_db: str
) -> None:
    current = [OLD]
    asked: list[str] = []

    def password() -> str:
        asked.append(current[0])
        return current[0]

    url = pg_cluster.url(app_db, user="app", sslmode="require")
    with PostgresBackend(url, password=password, retry_timeout_secs=120) as backend:
        rotate_while_running(pg_cluster, app_db, backend, lambda: current.__setitem__(0, NEW))
    assert asked[0] == OLD and NEW in asked
    assert OLD not in asked[asked.index(NEW) :]  # never a cached, stale answer


@pytest.mark.usefixtures("reset_password")
def test_pgpassfile_is_read_again_for_each_new_connection(
    pg_cluster: PrivateCluster, app_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passfile = tmp_path / "pgpass"

    def write(password: str) -> None:
        passfile.write_text(f"127.0.0.1:{pg_cluster.port}:{app_db}:app:{password}\n")
        passfile.chmod(0o600)

    write(OLD)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    url = pg_cluster.url(app_db, user="app", sslmode="require")  # no password in the URL
    with PostgresBackend(url, retry_timeout_secs=120) as backend:
        rotate_while_running(pg_cluster, app_db, backend, lambda: write(NEW))


@pytest.mark.usefixtures("reset_password")
def test_the_async_pool_asks_the_password_function_too(
    pg_cluster: PrivateCluster, app_db: str
) -> None:
    current = [OLD]
    url = pg_cluster.url(app_db, user="app", sslmode="require")

    async def main() -> list[Any]:
        backend = await PostgresBackend.connect(
            url, password=lambda: current[0], retry_timeout_secs=120
        )
        async with backend:
            runner = CheckpointingRunner(backend)
            outputs = [(await runner.run(WORKFLOW, f"async-old-{i}", i)).output for i in range(3)]
            pg_cluster.execute(f"ALTER ROLE app PASSWORD '{NEW}'")
            current[0] = NEW
            pg_cluster.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = 'app' AND backend_type = 'client backend'"
            )
            for i in range(3, 6):
                outputs.append((await runner.run(WORKFLOW, f"async-new-{i}", i)).output)
            return outputs

    assert asyncio.run(main()) == [(i + 1) * 2 for i in range(6)]
    assert not logs_in(pg_cluster, app_db, OLD)
