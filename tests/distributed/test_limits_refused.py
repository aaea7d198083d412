"""A run limit is enforced or refused, never silently ignored (SQLite workers have no limits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sayiir import Flow, InMemoryBackend, WorkflowClient
from sayiir.backends.sqlite import SqliteBackend
from sayiir.errors import InstanceNotFoundError, WorkflowError


def _limited() -> object:
    return (
        Flow("limited", concurrency_key=lambda order: order["customer"], max_concurrent=1)
        .then(lambda order: order, name="pass_on")
        .build()
    )


def test_submit_with_a_limit_on_sqlite_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with SqliteBackend(tmp_path / "runs.db") as backend:
        client = WorkflowClient(backend)
        with pytest.raises(WorkflowError, match="does not enforce"):
            client.submit(_limited(), "order-1", {"customer": "c1"})
        with pytest.raises(InstanceNotFoundError):
            client.status("order-1")


def test_submit_with_a_limit_in_memory_is_accepted() -> None:
    client = WorkflowClient(InMemoryBackend())
    client.submit(_limited(), "order-1", {"customer": "c1"})
    assert client.status("order-1").status == "in_progress"
