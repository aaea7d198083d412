"""A throwaway PostgreSQL cluster of a test's own, for tests that restart or reconfigure it.

The shared test server (``SAYIIR_TEST_POSTGRES_DSN``) serves every test at once, so no test
may stop it, restart it or change its authentication. A test that needs to do so gets a
cluster of its own from ``private_cluster()`` (or the ``pg_cluster`` fixture of
``tests/conftest.py``): ``pg_createcluster`` on a free port, dropped at the end.

The cluster is made for the tests that use it today and the ones to come:

* TLS on, with a self-signed certificate made here with ``openssl`` (``sslmode=require``
  works; ``verify-ca`` works with ``cluster.ca_file``);
* ``postgres`` connects without a password (Unix socket and 127.0.0.1: trust), every other
  role over TCP with a password (``scram-sha-256``): tests of password changes make a role;
* ``restart()``/``stop()``/``start()`` really restart the server and wait for it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["PrivateCluster", "cluster_tools_missing", "private_cluster"]

_HBA = """\
# written by tests/pgcluster.py
local   all   all                     trust
host    all   postgres  127.0.0.1/32  trust
host    all   all       127.0.0.1/32  scram-sha-256
"""

_SETTINGS = """
# written by tests/pgcluster.py: small, TLS on. fsync is off (the machine never crashes
# under a test) but commits stay synchronous: an immediate stop must lose nothing committed.
listen_addresses = '127.0.0.1'
max_connections = 60
shared_buffers = 16MB
fsync = off
ssl = on
ssl_cert_file = '{cert}'
ssl_key_file = '{key}'
password_encryption = 'scram-sha-256'
log_min_messages = warning
"""


def cluster_tools_missing() -> str | None:
    """Why a private cluster cannot be made here, or ``None`` when it can."""
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "openssl"):
        if shutil.which(tool) is None:
            return f"needs a private PostgreSQL cluster: {tool} is not installed"
    return None


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}: {done.stderr or done.stdout}"
        )
    return done.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _version() -> str:
    versions = sorted(
        os.listdir("/usr/lib/postgresql"), key=lambda v: [int(p) for p in v.split(".")]
    )
    return versions[-1]


class PrivateCluster:
    """A running cluster: its port, URLs to it, and restart/stop/start."""

    def __init__(self, version: str, name: str, port: int, ca_file: Path) -> None:
        self.version = version
        self.name = name
        self.port = port
        self.ca_file = ca_file  # the self-signed server certificate: sslrootcert for verify-ca

    def __repr__(self) -> str:
        return f"PrivateCluster({self.version}/{self.name} on 127.0.0.1:{self.port})"

    def url(
        self,
        dbname: str = "postgres",
        *,
        user: str = "postgres",
        password: str | None = None,
        **params: str,
    ) -> str:
        """A TCP URL to this cluster (``sslmode`` etc. as keyword arguments)."""
        userinfo = quote(user, safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        query = f"?{urlencode(params)}" if params else ""
        return f"postgresql://{userinfo}@127.0.0.1:{self.port}/{quote(dbname, safe='')}{query}"

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """Superuser over the Unix socket (no TLS, no password): for setup and checks."""
        return f"host=/var/run/postgresql port={self.port} user=postgres dbname={dbname}"

    def execute(self, statement: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser, in autocommit; return its rows (if any)."""
        import psycopg

        with psycopg.connect(self.admin_conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None) -> str:
        """A new database (``name`` or a random one); returns its name."""
        from psycopg import sql

        name = name or f"t_{secrets.token_hex(4)}"
        import psycopg

        with psycopg.connect(self.admin_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def _ctl(self, action: str, *extra: str) -> None:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action, *extra)

    def is_ready(self) -> bool:
        command = ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(command, timeout=30).returncode == 0

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until it accepts connections."""
        self._ctl("start")
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self!r} did not accept connections within {timeout:g}s")
            time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server. ``fast`` ends each session with a FATAL message (a clean
        restart); ``immediate`` ends them without a word and recovers at the next start,
        as after a crash or a killed container."""
        self._ctl("stop", "-m", mode)

    def restart(self, down_secs: float = 0.0, mode: str = "fast") -> None:
        """Stop, stay down ``down_secs``, start again and wait until it is ready."""
        self.stop(mode)
        time.sleep(down_secs)
        self.start()

    def drop(self) -> None:
        with contextlib.suppress(RuntimeError):
            _run("pg_dropcluster", "--stop", self.version, self.name)
        with contextlib.suppress(OSError):
            os.unlink(f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log")


def _make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost, readable by the postgres user only."""
    cert, key = directory / "server.crt", directory / "server.key"
    _run(
        "openssl", "req", "-new", "-x509", "-nodes", "-days", "2", "-newkey", "rsa:2048",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    for path in (cert, key):
        shutil.chown(path, "postgres", "postgres")
    key.chmod(0o600)
    return cert, key


def _create(version: str, label: str) -> PrivateCluster:
    name = f"sayiir_{label[:20]}_{os.getpid()}_{secrets.token_hex(3)}"
    data = Path("/var/lib/postgresql") / version / name
    conf = Path("/etc/postgresql") / version / name
    cluster = PrivateCluster(version, name, _free_port(), data / "server.crt")
    try:
        _run("pg_createcluster", version, name, "-p", str(cluster.port), "--",
             "--auth-local=trust")  # fmt: skip
        cert, key = _make_certificate(data)
        with (conf / "postgresql.conf").open("a") as settings:
            settings.write(_SETTINGS.format(cert=cert, key=key))
        (conf / "pg_hba.conf").write_text(_HBA)
        cluster.start()
    except BaseException:
        cluster.drop()
        raise
    return cluster


@contextlib.contextmanager
def private_cluster(label: str = "t") -> Iterator[PrivateCluster]:
    """Create, configure and start a cluster on a free port; drop it on exit."""
    version = _version()
    for attempt in range(3):
        try:
            cluster = _create(version, label)
            break
        except RuntimeError:
            if attempt == 2:
                raise
            # most likely the free port was taken meanwhile: another name, another port
    try:
        yield cluster
    finally:
        cluster.drop()
