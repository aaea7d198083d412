"""Fixtures of the console contract suites (test_queries_contract, test_console_actions):
``backend`` runs each test on memory, SQLite and PostgreSQL, plain and partitioned (marked
and skipped without a DSN by tests/conftest.py); ``tag`` is a prefix private to the test,
since a module's tests share one PostgreSQL database."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sayiir.backends.memory import InMemoryBackend
from sayiir.backends.postgres import PostgresBackend
from sayiir.backends.sqlite import SqliteBackend

Backend = Any  # Storage + RunQueries
Factory = Callable[[pytest.FixtureRequest, Path], Backend]

QUERY_FACTORIES: dict[str, Factory] = {
    "memory": lambda _request, _tmp: InMemoryBackend(),
    "sqlite": lambda _request, tmp: SqliteBackend(tmp / "queries.db"),
    "postgres": lambda request, _: PostgresBackend(request.getfixturevalue("pg_dsn")),
    "postgres_partitioned": lambda request, _: PostgresBackend(
        request.getfixturevalue("pg_partitioned_dsn"), partition="month"
    ),
}


@pytest.fixture(params=list(QUERY_FACTORIES))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = QUERY_FACTORIES[request.param](request, tmp_path)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def tag() -> str:
    return f"t{uuid.uuid4().hex[:10]}"
