"""Security of the PostgreSQL backend (spec/postgres.md §5; reliability plan §4, R16, R17, R19).

The shared test server trusts every local connection, so a wrong password cannot fail
there; a tiny fake server (below) asks for a clear-text password and answers with an
authentication error that even quotes it back, which is the worst case for a leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from sayiir.backends.postgres import PostgresBackend
from sayiir.errors import BackendError

pytestmark = pytest.mark.postgres

SECRET = "Sup3r-Secret_pw"


def assert_no_secret(exc: BaseException, secret: str = SECRET) -> None:
    """The secret is nowhere in the error, its chain, or its notes."""
    seen: BaseException | None = exc
    while seen is not None:
        for text in (str(seen), repr(seen), *getattr(seen, "__notes__", ())):
            assert secret not in text, text
        assert getattr(seen, "pgconn", None) is None
        seen = seen.__cause__ or seen.__context__
    assert exc.__cause__ is None and exc.__context__ is None


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, hostpart = rest.split("@", 1) if "@" in rest else ("postgres", rest)
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{password}@{hostpart}"


# -- a server that rejects every password ------------------------------------------------------


class FakeAuthServer:
    """Speaks just enough of the protocol to ask for a password and refuse it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.passwords: list[str] = []
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
                self._handle(conn)

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("closed")
            data += chunk
        return data

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        while True:  # SSLRequest / GSSENCRequest get "N", then the startup message
            (length,) = struct.unpack("!i", self._read(conn, 4))
            body = self._read(conn, length - 4)
            code = struct.unpack("!i", body[:4])[0]
            if code in (80877103, 80877104):
                conn.sendall(b"N")
                continue
            break
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = self._read(conn, 1)
        (length,) = struct.unpack("!i", self._read(conn, 4))
        password = self._read(conn, length - 4).rstrip(b"\0").decode()
        assert kind == b"p"
        self.passwords.append(password)
        fields = [
            b"SFATAL",
            b"VFATAL",
            b"C28P01",
            f'Mpassword authentication failed for user "app" (password "{password}")'.encode(),
        ]
        payload = b"".join(f + b"\0" for f in fields) + b"\0"
        conn.sendall(b"E" + struct.pack("!i", len(payload) + 4) + payload)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def fake_server() -> Iterator[FakeAuthServer]:
    server = FakeAuthServer()
    try:
        yield server
    finally:
        server.close()


def test_wrong_password_fails_fast_without_the_password(
    fake_server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://app:{SECRET}@127.0.0.1:{fake_server.port}/sayiir"
    caplog.set_level(logging.DEBUG)
    backend = PostgresBackend(url)
    with pytest.raises(BackendError) as info:
        backend.get_instance("x")
    # One connection, no retry logged: an authentication error is not retried as an outage.
    assert fake_server.passwords == [SECRET]  # the server really got (and echoed) it
    assert "retrying" not in caplog.text
    message = str(info.value)
    assert f"127.0.0.1:{fake_server.port}/sayiir" in message
    assert "password authentication failed" in message
    assert_no_secret(info.value)
    assert SECRET not in repr(backend)
    assert SECRET not in caplog.text
    backend.close()


def test_wrong_password_fails_the_async_connect_too(fake_server: FakeAuthServer) -> None:
    url = f"postgresql://app:{SECRET}@127.0.0.1:{fake_server.port}/sayiir"

    async def main() -> BackendError:
        with pytest.raises(BackendError) as info:
            await PostgresBackend.connect(url)
        return info.value

    exc = asyncio.run(main())
    assert "password authentication failed" in str(exc)
    assert_no_secret(exc)


def test_a_password_function_is_used_and_never_shown(
    fake_server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://app@127.0.0.1:{fake_server.port}/sayiir"
    backend = PostgresBackend(url, password=lambda: SECRET)
    with pytest.raises(BackendError) as info:
        backend.get_instance("x")
    assert fake_server.passwords == [SECRET]  # sent, and echoed back by the server
    assert "password authentication failed" in str(info.value)
    assert_no_secret(info.value)
    assert SECRET not in repr(backend) and SECRET not in caplog.text

    async def main() -> BackendError:
        with pytest.raises(BackendError) as info:
            await PostgresBackend.connect(url, password=lambda: SECRET)
        return info.value

    assert_no_secret(asyncio.run(main()))


def sayiir_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sayiir.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://app:{SECRET}@db/x",
        f"POSTGRESQL://app:{SECRET}@db/x",
        f"postgressql://app:{SECRET}@db/x",
        f"postgresql:/app:{SECRET}@db/x",
        f"postgresql://app:{SECRET}%zz@db/x",
        f"postgresql://app@db/x?sslmode=bogus&sslpassword={SECRET}",
    ],
)
def test_cli_errors_never_print_the_password(url: str) -> None:
    for args in (("migrate", url), ("retention", url, "--older-than-days", "30")):
        done = sayiir_cli(*args, "--timeout", "1")
        assert done.returncode == 1, done
        assert SECRET not in done.stdout + done.stderr, done.stderr
        assert "invalid PostgreSQL" in done.stderr
    usage = sayiir_cli("retention", url, url, "--older-than-days", "1")  # one URL too many
    assert usage.returncode == 1 and "unrecognized arguments" in usage.stderr
    assert SECRET not in usage.stdout + usage.stderr, usage.stderr


def test_cli_output_never_prints_the_password(pg_dsn: str, fake_server: FakeAuthServer) -> None:
    refused = f"postgresql://app:{SECRET}@127.0.0.1:{fake_server.port}/sayiir"
    done = sayiir_cli("migrate", refused, "--timeout", "1")
    assert done.returncode == 1 and "password authentication failed" in done.stderr
    assert SECRET in fake_server.passwords and SECRET not in done.stdout + done.stderr
    # The shared server trusts us: the password and sslpassword are sent, and ignored.
    url = f"{with_password(pg_dsn, SECRET)}?sslpassword={SECRET}2"
    for args in (("migrate", url), ("migrate", url, "--dry-run"),
                 ("retention", url, "--older-than-days", "30", "--dry-run")):  # fmt: skip
        done = sayiir_cli(*args)
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr
        assert "sslpassword=***" in done.stdout, done.stdout


def test_unreachable_server_retries_then_says_so(caplog: pytest.LogCaptureFixture) -> None:
    url = f"postgresql://app:{SECRET}@127.0.0.1:1/sayiir"
    caplog.set_level(logging.DEBUG)
    with (
        PostgresBackend(url, retry_timeout_secs=0.5) as backend,
        pytest.raises(BackendError) as info,
    ):
        backend.load("x")
    message = str(info.value)
    assert "127.0.0.1:1/sayiir is unreachable" in message and "Connection refused" in message
    assert "retry_timeout_secs=0.5" in message
    assert_no_secret(info.value)
    assert "retrying" in caplog.text  # each backoff step is logged ...
    assert SECRET not in caplog.text  # ... without the secret


def test_unknown_host_fails_fast(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sayiir")
    url = f"postgresql://app:{SECRET}@no-such-host.invalid/sayiir"
    with PostgresBackend(url) as backend, pytest.raises(BackendError) as info:
        backend.load("x")
    assert "retrying" not in caplog.text  # a name that does not resolve is not an outage
    assert "no-such-host.invalid" in str(info.value)
    assert_no_secret(info.value)


def test_sslmode_require_against_a_server_without_tls_fails_fast(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sayiir")
    url = with_password(pg_dsn, SECRET) + "?sslmode=require"
    with PostgresBackend(url) as backend, pytest.raises(BackendError) as info:
        backend.load("x")
    assert "retrying" not in caplog.text  # a TLS refusal is not retried as an outage
    message = str(info.value)
    assert "SSL" in message and "sslmode" in message
    assert_no_secret(info.value)


def test_sslmode_and_other_libpq_parameters_pass_through(pg_dsn: str) -> None:
    url = pg_dsn + "?sslmode=disable&application_name=sayiir_passthrough&connect_timeout=5"
    with PostgresBackend(url) as backend:
        backend.load("x")
        with backend._runner.pool().connection() as conn:
            name = conn.execute("SHOW application_name").fetchone()
    assert name == ("sayiir_passthrough",)


def test_session_settings_are_applied(pg_dsn: str) -> None:
    options = {"statement_timeout_secs": 1.5, "idle_in_transaction_session_timeout_secs": 30}
    with PostgresBackend(pg_dsn, **options) as backend:  # type: ignore[arg-type]
        backend.load("x")
        with backend._runner.pool().connection() as conn:
            rows = conn.execute(
                "SELECT current_setting('statement_timeout'),"
                " current_setting('idle_in_transaction_session_timeout')"
            ).fetchone()
    assert rows == ("1500ms", "30s")


# -- identifiers -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ['we"ird%1', 'x"; DROP TABLE canary; --'])
def test_injection_strings_are_rejected_and_nothing_runs(pg_dsn: str, bad: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS canary (x int)")
        with pytest.raises(ValueError):
            PostgresBackend(pg_dsn, schema=bad)
        with pytest.raises(ValueError):
            PostgresBackend(pg_dsn, table_prefix=bad)
        assert conn.execute("SELECT to_regclass('canary') IS NOT NULL").fetchone() == (True,)


def test_unusual_valid_names_round_trip(pg_dsn: str) -> None:
    from sayiir.backends.postgres._names import MAX_PREFIX
    from sayiir.core.records import InstanceRecord, Status, StepRecord

    schema = "_" + secrets.token_hex(4) + "_9"
    prefix = ("p" + secrets.token_hex(20))[: MAX_PREFIX - 1] + "_"
    assert len(prefix) == MAX_PREFIX
    with PostgresBackend(pg_dsn, schema=schema, table_prefix=prefix) as backend:
        backend.create_instance(InstanceRecord("i", "wf", "h", Status.RUNNING, b"1"), replace=False)
        backend.save_steps("i", [StepRecord("a", b"2", "t")])
        assert backend.get_checkpoint("i", "a") == b"2"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        names = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s",
            (schema,),
        ).fetchall()
    assert all(name.startswith(prefix) for (name,) in names)
    assert any(name == prefix + "workflow_instances" for (name,) in names)


# -- least privilege ---------------------------------------------------------------------------


@pytest.fixture
def app_role(pg_dsn: str) -> Iterator[str]:
    """A login role with the page's grants: GRANT ALL PRIVILEGES ON DATABASE ... TO role."""
    role = f"sayiir_app_{secrets.token_hex(4)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'irrelevant'").format(sql.Identifier(role))
        )
        conn.execute(
            sql.SQL("GRANT ALL PRIVILEGES ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(role)
            )
        )
    try:
        yield role
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _as(pg_dsn: str, role: str) -> str:
    scheme, rest = pg_dsn.split("://", 1)
    hostpart = rest.split("@", 1)[1] if "@" in rest else rest
    return f"{scheme}://{role}@{hostpart}"


def test_least_privilege_user_in_public_gets_the_named_fix(pg_dsn: str, app_role: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        if conn.info.server_version < 150000:
            pytest.skip("PostgreSQL < 15 lets every user create in schema public")
    with (
        PostgresBackend(_as(pg_dsn, app_role), table_prefix="lp_") as backend,
        pytest.raises(BackendError) as info,
    ):
        backend.get_instance("x")
    message = str(info.value)
    assert 'schema "public"' in message
    assert 'schema="sayiir"' in message
    assert app_role in message


def test_least_privilege_user_with_its_own_schema_works(pg_dsn: str, app_role: str) -> None:
    from sayiir.core.records import InstanceRecord, Status

    schema = f"sayiir_{secrets.token_hex(3)}"
    with PostgresBackend(_as(pg_dsn, app_role), schema=schema) as backend:
        backend.create_instance(InstanceRecord("i", "wf", "h", Status.RUNNING, b"1"), replace=False)
        assert backend.get_instance("i") is not None
    with psycopg.connect(pg_dsn) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
    assert owner == (app_role,)


def test_user_who_may_not_create_the_schema_is_told_what_to_ask(pg_dsn: str) -> None:
    role = f"sayiir_ro_{secrets.token_hex(4)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        with (
            PostgresBackend(_as(pg_dsn, role), schema="sayiir_nope") as backend,
            pytest.raises(BackendError) as info,
        ):
            backend.get_instance("x")
        message = str(info.value)
        assert 'schema "sayiir_nope" does not exist' in message
        assert f"CREATE SCHEMA sayiir_nope AUTHORIZATION {role}" in message
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_logs_of_a_whole_outage_never_show_the_password(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # psycopg and psycopg.pool loggers included
    url = with_password(pg_dsn, SECRET) + "?application_name=sayiir_leakcheck"
    with PostgresBackend(url, retry_timeout_secs=10) as backend:
        backend.load("x")
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'sayiir_leakcheck'"
            )
        backend.load("x")
    assert "retrying" in caplog.text, "the dead connection should have been retried"
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in str(record.args)
