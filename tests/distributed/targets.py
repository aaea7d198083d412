"""The backends the process tests run against, as worker processes see them (a URL) and as
the test sees them (a backend): PostgreSQL with tables of the test's own, or a SQLite file.

Reads go through the backend's query layer (``RunQueries``), so a test is written once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sayiir import PostgresBackend, SqliteBackend
from sayiir.core.queries import RunFilter, RunSort


@dataclass
class Target:
    """One backend: the worker CLI's arguments for it, and a backend object of this process."""

    kind: str
    args: list[str]  # --url ... [--table-prefix ...]
    backend: Any

    def count(self, prefix: str, status: str | None = None) -> int:
        """Runs whose id starts with ``prefix`` (with ``status``, if given)."""
        where = RunFilter(status=(status,) if status else (), instance_prefix=prefix)
        n, _ = self.backend.count_runs(where, cap=1_000_000)
        return int(n)

    def runs(self, prefix: str) -> list[tuple[str, str, float]]:
        """(instance id, status, created_at epoch) of the runs whose id starts with
        ``prefix``, by id."""
        out: list[tuple[str, str, float]] = []
        cursor = None
        sort = RunSort("instance_id", descending=False)
        while True:
            page = self.backend.list_runs(
                RunFilter(instance_prefix=prefix), sort, cursor, limit=500
            )
            out += [(r.instance_id, r.status, r.created_at.timestamp()) for r in page.runs]
            cursor = page.next_cursor
            if cursor is None:
                return out


def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The body of a ``params=["postgres", "sqlite"]`` fixture."""
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        prefix = f"p{uuid.uuid4().hex[:10]}_"  # tables of its own: no other test's workers
        backend: Any = PostgresBackend(dsn, table_prefix=prefix)
        args = ["--url", dsn, "--table-prefix", prefix]
    else:
        path = tmp_path / "runs.db"
        backend = SqliteBackend(path)
        args = ["--url", f"sqlite://{path}"]
    try:
        yield Target(request.param, args, backend)
    finally:
        backend.close()
