"""Shared fixtures: PostgreSQL databases and SQLite paths.

PostgreSQL tests opt in through the ``SAYIIR_TEST_POSTGRES_DSN`` environment variable, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``. CI (``.ci/run``) always sets it, so every
PostgreSQL test runs there; on a laptop without it, ``postgres``-marked tests are skipped.

Use in a test module::

    @pytest.mark.postgres
    def test_something(pg_dsn: str) -> None:
        backend = PostgresBackend(pg_dsn)  # a fresh database, private to this module

Any test that uses ``pg_database`` or ``pg_dsn`` is marked ``postgres`` automatically.

A test that must restart PostgreSQL, or needs TLS or password authentication, uses
``pg_cluster`` instead: a throwaway cluster of the module's own (``tests/pgcluster.py``),
which needs no ``SAYIIR_TEST_POSTGRES_DSN`` and never touches the shared server. It is
skipped only where ``pg_createcluster`` is not installed.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from tests.pgcluster import PrivateCluster, cluster_tools_missing, private_cluster

DSN_ENV = "SAYIIR_TEST_POSTGRES_DSN"
_PG_FIXTURES = frozenset({"pg_database", "pg_dsn", "pg_partitioned_database", "pg_partitioned_dsn"})
_CLUSTER_FIXTURE = "pg_cluster"
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1


def admin_dsn() -> str | None:
    """The DSN from the environment (the server's maintenance database), or ``None``."""
    return os.environ.get(DSN_ENV) or None


def pg_url(dbname: str) -> str:
    """A ``postgresql://`` URL for database ``dbname`` on the test server.

    The server is the one of ``SAYIIR_TEST_POSTGRES_DSN``, which may be a URL or a ``key=value``
    DSN; the result is always a URL.
    """
    from psycopg.conninfo import conninfo_to_dict

    dsn = admin_dsn()
    if dsn is None:
        raise RuntimeError(f"{DSN_ENV} is not set")
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    params.pop("dbname", None)
    user = params.pop("user", "")
    password = params.pop("password", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    netloc = ""
    if user:
        netloc = quote(user, safe="")
        if password:
            netloc += ":" + quote(password, safe="")
        netloc += "@"
    if host and not host.startswith("/"):
        netloc += f"[{host}]" if ":" in host else host
    elif host:  # a Unix socket directory goes in the query string
        params["host"] = host
    if port:
        netloc += f":{port}"
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{query}"


def _database_name(module_name: str) -> str:
    tail = module_name.rsplit(".", 1)[-1].lower()
    tail = re.sub(r"[^a-z0-9_]+", "_", tail).strip("_") or "module"
    # The xdist worker (gw0, gw1, ...) in the name: parallel workers never share a database.
    suffix = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}{secrets.token_hex(4)}"
    prefix = "sayiir_t_"
    room = _MAX_IDENTIFIER - len(prefix) - len(suffix) - 1
    return f"{prefix}{tail[:room]}_{suffix}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use a PostgreSQL fixture; skip ``postgres`` tests when no DSN is set."""
    skip = pytest.mark.skip(reason=f"PostgreSQL test: set {DSN_ENV} to run it")
    have_dsn = admin_dsn() is not None
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        shared = bool(_PG_FIXTURES.intersection(fixtures))
        if shared or _CLUSTER_FIXTURE in fixtures:
            item.add_marker(pytest.mark.postgres)
        own_cluster_only = _CLUSTER_FIXTURE in fixtures and not shared
        if not have_dsn and not own_cluster_only and item.get_closest_marker("postgres"):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def pg_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """Create a fresh, uniquely named database for this test module; yield its URL; drop it."""
    dsn = admin_dsn()
    if dsn is None:
        pytest.skip(f"PostgreSQL test: set {DSN_ENV} to run it")

    with fresh_database(_database_name(request.module.__name__)) as url:
        yield url


@contextmanager
def fresh_database(name: str) -> Iterator[str]:
    """Create an empty database ``name`` on the test server; yield its URL; drop it."""
    import psycopg
    from psycopg import sql

    dsn = admin_dsn()
    if dsn is None:
        raise RuntimeError(f"{DSN_ENV} is not set")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_url(name)
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def pg_dsn(pg_database: str) -> str:
    """The URL of this module's fresh PostgreSQL database (shared by the module's tests)."""
    return pg_database


@pytest.fixture(scope="module")
def pg_partitioned_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A second fresh database of this module, for the partitioned layout: the first
    ``PostgresBackend(url, partition="month")`` creates its tables partitioned."""
    if admin_dsn() is None:
        pytest.skip(f"PostgreSQL test: set {DSN_ENV} to run it")
    with fresh_database(_database_name(request.module.__name__ + "_part")) as url:
        yield url


@pytest.fixture
def pg_partitioned_dsn(pg_partitioned_database: str) -> str:
    """The URL of this module's partitioned database (shared by the module's tests)."""
    return pg_partitioned_database


@pytest.fixture(scope="module")
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[PrivateCluster]:
    """A PostgreSQL cluster of this module's own (TLS on, scram for roles other than
    ``postgres``), on a free port, dropped after the module: restart it at will."""
    missing = cluster_tools_missing()
    if missing is not None:
        pytest.skip(missing)
    label = re.sub(r"[^a-z0-9]+", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    with private_cluster(label.removeprefix("test_")) as cluster:
        yield cluster


@pytest.fixture
def tmp_sqlite_path(tmp_path: Path) -> Path:
    """A path for a fresh SQLite database file (the file does not exist yet)."""
    return tmp_path / "sayiir.db"
