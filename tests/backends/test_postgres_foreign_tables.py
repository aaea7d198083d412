"""A schema that already holds tables with our names (e.g. the reference sayiir 1.x)."""

from __future__ import annotations

import logging

import psycopg
import pytest

from sayiir import Flow, PostgresBackend, run_durable_workflow
from sayiir.errors import BackendError

pytestmark = pytest.mark.postgres


def test_foreign_tables_are_refused_at_once_with_the_fix(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sayiir")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA legacy")
        conn.execute("CREATE TABLE legacy.sayiir_workflow_signals (id int)")
        conn.execute("CREATE TABLE legacy.sayiir_workflow_snapshots (id int)")
    wf = Flow("f").then(lambda x: x + 1, name="inc").build()
    backend = PostgresBackend(pg_dsn, schema="legacy", retry_timeout_secs=20)
    with pytest.raises(BackendError) as info:
        run_durable_workflow(wf, "one", 1, backend=backend)
    assert "retrying" not in caplog.text  # refused, not retried as an outage
    message = str(info.value)
    assert '"legacy.sayiir_workflow_signals"' in message
    assert "not created by sayiir's migrations" in message
    assert "table_prefix=" in message
    backend.close()
    with psycopg.connect(pg_dsn) as conn:  # nothing was created beside them
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'legacy' ORDER BY 1"
        ).fetchall()
    assert tables == [("sayiir_workflow_signals",), ("sayiir_workflow_snapshots",)]
    # The documented way out: another prefix in the same schema.
    with PostgresBackend(pg_dsn, schema="legacy", table_prefix="wf_") as other:
        assert run_durable_workflow(wf, "one", 1, backend=other).output == 2
