"""Test databases: a migrated template per schema version, and fresh copies of it.

Used by the pytest plugin (``sayiir.testing.pytest_plugin``): copying a migrated
template (``CREATE DATABASE ... TEMPLATE``) gives each test an empty, current schema
without running the migrations again. Statements are in ``testdb.sql``.
"""

from __future__ import annotations

import hashlib

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from sayiir.backends._sqlfiles import load_migrations, load_queries
from sayiir.backends.postgres._sql import MIGRATIONS_PACKAGE

__all__ = ["create_copy", "drop_database", "ensure_template"]

_Q = load_queries("sayiir.backends.postgres", "testdb.sql")


def _schema_version() -> str:
    digest = hashlib.sha256()
    for migration in load_migrations(MIGRATIONS_PACKAGE):
        digest.update(migration.checksum.encode())
    return digest.hexdigest()[:16]


def _connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def _run(conn: psycopg.Connection[tuple[object, ...]], name: str, **idents: str) -> None:
    query = sql.SQL(_Q[name]).format(**{k: sql.Identifier(v) for k, v in idents.items()})
    conn.execute(query)


def url_for(dsn: str, dbname: str) -> str:
    """The connection string of database ``dbname`` on the server of ``dsn``."""
    return make_conninfo(dsn, dbname=dbname)


def ensure_template(dsn: str) -> str:
    """The name of the migrated template of the current schema, built if missing.

    Built under an advisory lock (parallel test processes build it once between
    them) as ``<name>_building``, renamed when complete: a build killed halfway
    leaves no template that looks finished.
    """
    from sayiir.backends.postgres._backend import PostgresBackend

    version = _schema_version()
    name = f"sayiir_tpl_{version}"
    key = int(version[:15], 16)
    with _connect(dsn) as conn:
        conn.execute(_Q["lock_templates"], {"key": key})
        try:
            if conn.execute(_Q["database_exists"], {"name": name}).fetchone() is None:
                building = f"{name}_building"
                _run(conn, "drop_database", db=building)
                _run(conn, "create_database", db=building)
                PostgresBackend(url_for(dsn, building)).close()  # migrates on connect
                _run(conn, "rename_database", db=building, template=name)
        finally:
            conn.execute(_Q["unlock_templates"], {"key": key})
    return name


def create_copy(dsn: str, template: str, name: str) -> str:
    """Create database ``name`` as a copy of ``template``; return its connection string."""
    with _connect(dsn) as conn:
        _run(conn, "create_from_template", db=name, template=template)
    return url_for(dsn, name)


def drop_database(dsn: str, name: str) -> None:
    """Drop database ``name`` (closing its connections)."""
    with _connect(dsn) as conn:
        _run(conn, "drop_database", db=name)
