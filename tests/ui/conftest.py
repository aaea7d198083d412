"""Fixtures of the console tests: a populated backend of each kind, a served console."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.demo import populate

TOKEN = "operator-token-for-tests"
_PREFIXES = itertools.count()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    if backend_kind == "memory":
        from sayiir import InMemoryBackend

        yield InMemoryBackend()
    elif backend_kind == "sqlite":
        from sayiir.backends.sqlite import SqliteBackend

        with SqliteBackend(str(tmp_path / "runs.db")) as sqlite:
            yield sqlite
    else:
        from sayiir.backends.postgres import PostgresBackend

        dsn = request.getfixturevalue("pg_dsn")  # one database per module
        prefix = f"t{next(_PREFIXES)}_"  # and tables of its own for each test
        with PostgresBackend(dsn, table_prefix=prefix) as postgres:
            yield postgres


@pytest.fixture
def runs(backend: Any) -> dict[str, str]:
    """The demo runs, stored in ``backend``; their ids by role."""
    return populate(backend)
