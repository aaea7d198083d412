"""Fixtures of the console tests: a populated backend of each kind, a served console."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.demo import populate

TOKEN = "operator-token-for-tests"


@pytest.fixture(params=["memory", "sqlite"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(backend_kind: str, tmp_path: Path) -> Iterator[Any]:
    if backend_kind == "memory":
        from sayiir import InMemoryBackend

        yield InMemoryBackend()
        return
    from sayiir.backends.sqlite import SqliteBackend

    with SqliteBackend(str(tmp_path / "runs.db")) as sqlite:
        yield sqlite


@pytest.fixture
def runs(backend: Any) -> dict[str, str]:
    """The demo runs, stored in ``backend``; their ids by role."""
    return populate(backend)
