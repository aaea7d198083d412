"""Retry classification by cause, against a real TLS-enabled PostgreSQL of the module's own.

The classifier (``_errors.is_transient``) is fed the exceptions that psycopg really
raises: from a private cluster with ``ssl=on`` and a self-signed certificate (wrong
password, unknown database, a certificate that does not verify, a session killed, a
server stopped and crashed), and from a tiny fake server for the startup refusals that
cannot be produced on demand ("the database system is starting up").

Then the point of it all: a run going on under ``sslmode=require`` while the cluster is
restarted (cleanly, and as after a crash, where the TLS stream just ends with
"SSL error: unexpected eof while reading"): the run completes, no step runs twice, and no
error is mistaken for a permanent one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool
import pytest

from sayiir import Flow, PostgresBackend, run_durable_workflow, task
from sayiir.backends.postgres import _ops
from sayiir.backends.postgres._errors import is_transient
from sayiir.backends.postgres._io import execute
from sayiir.backends.postgres._sql import compile_sql

if TYPE_CHECKING:
    from tests.pgcluster import PrivateCluster

APP_PASSWORD = "app-Pw-1"


@pytest.fixture(scope="module")
def cluster(pg_cluster: PrivateCluster) -> PrivateCluster:
    """The module's cluster with a password role ``app`` (scram over TCP)."""
    pg_cluster.execute(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
    return pg_cluster


def caught(action: Any) -> psycopg.Error:
    """The psycopg error ``action()`` raises (it must raise one)."""
    try:
        action()
    except psycopg.Error as exc:
        return exc
    raise AssertionError("no error raised")


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def run_on(conn: psycopg.Connection[Any]) -> None:
    """One real operation through the backend's executor (which notes a lost connection)."""
    execute(conn, compile_sql("public", "sayiir_"), _ops.ping())


# -- a server that refuses every startup with one FATAL ------------------------------------


class RefusingServer:
    """Reads the startup packet (declining TLS), answers with one FATAL ErrorResponse."""

    def __init__(self, code: str, message: str) -> None:
        self.fields = [b"SFATAL", b"VFATAL", b"C" + code.encode(), b"M" + message.encode()]
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                while True:
                    (length,) = struct.unpack("!i", conn.recv(4, socket.MSG_WAITALL))
                    body = conn.recv(length - 4, socket.MSG_WAITALL)
                    if struct.unpack("!i", body[:4])[0] in (80877103, 80877104):
                        conn.sendall(b"N")  # no TLS, no GSS encryption
                        continue
                    break
                payload = b"".join(f + b"\0" for f in self.fields) + b"\0"
                conn.sendall(b"E" + struct.pack("!i", len(payload) + 4) + payload)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@contextlib.contextmanager
def refusing(code: str, message: str) -> Iterator[RefusingServer]:
    server = RefusingServer(code, message)
    try:
        yield server
    finally:
        server.close()


# -- the classifier, on real errors ---------------------------------------------------------


def test_tls_is_on_and_required_connections_use_it(cluster: PrivateCluster) -> None:
    with connect(cluster.url(sslmode="require")) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)


@pytest.mark.parametrize(
    "name, params",
    [
        ("wrong password", {"user": "app", "password": "not-it"}),
        ("no password supplied", {"user": "app"}),
        ("unknown role", {"user": "nobody", "password": "x"}),
        ("unknown database", {"dbname": "no_such_db"}),
        ("certificate that does not verify", {"sslmode": "verify-full",
                                              "sslrootcert": "/etc/ssl/certs/ca-certificates.crt"}),
    ],
)  # fmt: skip
def test_refusals_that_waiting_cannot_change_are_permanent(
    cluster: PrivateCluster, name: str, params: dict[str, str]
) -> None:
    params = dict(params)
    dbname = params.pop("dbname", "postgres")
    user = params.pop("user", "postgres")
    password = params.pop("password", None)
    params.setdefault("sslmode", "require")
    url = cluster.url(dbname, user=user, password=password, **params)
    exc = caught(lambda: connect(url))
    assert exc.sqlstate is None and exc.pgconn is not None  # what libpq gives at connect
    assert not is_transient(exc), f"{name}: {exc}"


def test_client_settings_and_unknown_hosts_are_permanent(cluster: PrivateCluster) -> None:
    bad_option = caught(lambda: connect(cluster.url(sslmode="require", gssencmode="sometimes")))
    assert not is_transient(bad_option), str(bad_option)
    unknown_host = caught(lambda: connect("postgresql://u@no-such-host.invalid/db"))
    assert not is_transient(unknown_host), str(unknown_host)


def test_a_verified_certificate_connects(cluster: PrivateCluster) -> None:
    url = cluster.url(sslmode="verify-full", sslrootcert=str(cluster.ca_file))
    with connect(url) as conn:
        run_on(conn)


@pytest.mark.parametrize(
    "code, message",
    [
        ("57P03", "the database system is starting up"),
        ("57P03", "the database system is shutting down"),
        ("57P03", "the database system is not yet accepting connections"),
        ("53300", "sorry, too many clients already"),
        ("53300", "remaining connection slots are reserved for roles with the SUPERUSER attribute"),
    ],
)
def test_a_server_that_says_not_now_is_retried(code: str, message: str) -> None:
    with refusing(code, message) as server:
        exc = caught(lambda: connect(f"postgresql://app:pw@127.0.0.1:{server.port}/db"))
    assert message in str(exc)
    assert is_transient(exc), str(exc)


def test_a_server_that_refuses_for_good_is_not_retried() -> None:
    with refusing("28000", 'no pg_hba.conf entry for host "127.0.0.1"') as server:
        exc = caught(lambda: connect(f"postgresql://app:pw@127.0.0.1:{server.port}/db"))
    assert not is_transient(exc), str(exc)


def test_too_many_connections_for_a_role_is_retried(cluster: PrivateCluster) -> None:
    cluster.execute("CREATE ROLE limited LOGIN PASSWORD 'pw' CONNECTION LIMIT 1")
    url = cluster.url(user="limited", password="pw", sslmode="require")
    with connect(url):
        exc = caught(lambda: connect(url))
    assert is_transient(exc), str(exc)


def test_a_statement_error_on_a_live_connection_is_permanent(cluster: PrivateCluster) -> None:
    with connect(cluster.url(sslmode="require")) as conn:
        exc = caught(lambda: conn.execute("SELECT * FROM no_such_table"))
        assert not is_transient(exc)
        conn.execute("SET statement_timeout = 50")
        timeout = caught(lambda: conn.execute("SELECT pg_sleep(5)"))
        assert timeout.sqlstate == "57014" and not is_transient(timeout)


def test_a_terminated_tls_session_is_retried(cluster: PrivateCluster) -> None:
    with connect(cluster.url(sslmode="require", application_name="victim")) as conn:
        run_on(conn)
        cluster.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'victim'"
        )
        exc = caught(lambda: run_on(conn))
        assert conn.broken
    assert is_transient(exc), str(exc)


def test_a_closed_connection_is_retried(cluster: PrivateCluster) -> None:
    conn = connect(cluster.url(sslmode="require"))
    conn.close()
    exc = caught(lambda: run_on(conn))
    assert is_transient(exc), str(exc)


def test_a_tls_stream_cut_without_a_word_is_retried(cluster: PrivateCluster) -> None:
    """A killed backend: the TLS stream just ends ("SSL error: unexpected eof while
    reading", "SSL SYSCALL error: EOF detected" with older OpenSSL)."""
    with connect(cluster.url(sslmode="require")) as conn:
        run_on(conn)
        pid = conn.info.backend_pid
        os.kill(pid, signal.SIGKILL)
        while os.path.exists(f"/proc/{pid}"):  # gone, and its socket closed
            time.sleep(0.05)
        exc = caught(lambda: run_on(conn))
        assert conn.broken
    assert exc.sqlstate is None and "SSL" in str(exc)
    assert is_transient(exc), str(exc)
    wait_until_connectable(cluster)  # the killed backend made the server recover


def test_a_stopped_server_is_retried_while_down(cluster: PrivateCluster) -> None:
    conns = [connect(cluster.url(sslmode=mode)) for mode in ("require", "prefer", "disable")]
    cluster.stop(mode="immediate")
    try:
        for conn in conns:
            exc = caught(lambda conn=conn: run_on(conn))
            assert is_transient(exc), str(exc)
            conn.close()
        refused = caught(lambda: connect(cluster.url(sslmode="require")))
        assert is_transient(refused), str(refused)
    finally:
        cluster.start()


def test_the_issue_texts_are_retried() -> None:
    """The two messages of the issue, as libpq words them with older OpenSSL versions."""
    from psycopg.errors import FinishedPGconn

    for text in ("SSL SYSCALL error: EOF detected", "SSL connection has been closed unexpectedly"):
        assert is_transient(psycopg.OperationalError(f"consuming input failed: {text}"))
        attempt = psycopg.OperationalError(
            f'connection failed: connection to server at "db", port 5432 failed: {text}',
            pgconn=FinishedPGconn(),
        )
        assert is_transient(attempt)
    assert is_transient(psycopg_pool.PoolTimeout("couldn't get a connection"))


def wait_until_connectable(cluster: PrivateCluster, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(cluster.url(sslmode="require")):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- a run through a restart of the TLS server ---------------------------------------------

ran: list[str] = []
entered = threading.Event()
release = threading.Event()


@task
def first(x: int) -> int:
    ran.append("first")
    return x + 1


@task
def slow(x: int) -> int:
    ran.append("slow")
    entered.set()
    assert release.wait(120), "the test never released the step"
    return x * 10


@task
def third(x: int) -> int:
    ran.append("third")
    return x + 5


@task
def fourth(x: int) -> int:
    ran.append("fourth")
    return x * 2


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_a_run_under_sslmode_require_survives_a_restart(
    cluster: PrivateCluster, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sayiir.backends.postgres")
    ran.clear()
    entered.clear()
    release.clear()
    dbname = cluster.create_database()
    wf = Flow(f"tls-restart-{mode}").then(first).then(slow).then(third).then(fourth).build()
    url = cluster.url(dbname, sslmode="require", application_name="sayiir_tls")
    backend = PostgresBackend(url, retry_timeout_secs=120)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["status"] = run_durable_workflow(wf, f"through-{mode}", 1, backend=backend)
        except BaseException as exc:  # reported below, not lost in the thread
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert entered.wait(60), "the run never reached its second step"
        tls = cluster.execute(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a "
            "JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'sayiir_tls'"
        )
        assert tls[0][0] >= 1 and tls[0][1] is True  # the pool's connections use TLS
        cluster.stop(mode=mode)
        release.set()  # the step ends while the server is down: its write must wait
        deadline = time.monotonic() + 60
        while not any("retrying" in r.getMessage() for r in caplog.records):  # it did
            assert time.monotonic() < deadline, "the write never met the stopped server"
            time.sleep(0.02)
        cluster.start()
    finally:
        release.set()
        thread.join(180)
    assert "error" not in result, f"the run failed: {result.get('error')!r}"
    status = result["status"]
    assert status.status == "completed" and status.output == (2 * 10 + 5) * 2
    assert ran == ["first", "slow", "third", "fourth"]  # nothing ran twice, nothing lost
    rows = cluster.execute(
        f"SELECT task_key, count(*) FROM sayiir_task_executions "
        f"WHERE instance_id = 'through-{mode}' AND status = 'completed' GROUP BY 1",
        dbname,
    )
    assert dict(rows) == {"first": 1, "slow": 1, "third": 1, "fourth": 1}
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries, "the restart should have been met and retried"
    if mode == "immediate":  # the TLS stream just ended: the case the issue is about
        assert any("SSL" in message for message in retries), retries
    backend.close()
