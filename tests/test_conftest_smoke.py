"""The PostgreSQL fixtures in conftest.py work against the real server."""

from __future__ import annotations

import psycopg
import pytest


@pytest.mark.postgres
def test_pg_dsn_is_a_fresh_database_on_the_real_server(pg_dsn: str) -> None:
    assert pg_dsn.startswith("postgresql://")
    with psycopg.connect(pg_dsn, connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.info.dbname.startswith("sayiir_t_test_conftest_smoke_")
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
