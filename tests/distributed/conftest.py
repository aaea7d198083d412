"""Fixtures shared by the worker tests: a fresh queue on each backend, and workers that are
shut down and joined when the test ends."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sayiir import InMemoryBackend, PostgresBackend, SqliteBackend, Worker, WorkerHandle
from sayiir.backends.protocol import QueueStorage


@pytest.fixture(params=["memory", "postgres", "sqlite"])
def backend(request: pytest.FixtureRequest) -> Iterator[QueueStorage]:
    """A fresh queue: in memory, PostgreSQL tables with a prefix of their own, or a file."""
    b: QueueStorage
    if request.param == "memory":
        b = InMemoryBackend()
    elif request.param == "sqlite":
        b = SqliteBackend(request.getfixturevalue("tmp_path") / "queue.db")
    else:
        dsn = request.getfixturevalue("pg_dsn")
        b = PostgresBackend(dsn, table_prefix=f"w{uuid.uuid4().hex[:10]}_")
    yield b
    b.close()


@pytest.fixture
def workers() -> Iterator[Callable[..., WorkerHandle]]:
    """Start workers (``start(backend, workflows, worker_id, **opts)``); all are shut down,
    then joined, when the test ends."""
    handles: list[WorkerHandle] = []

    def start(backend: Any, workflows: list[Any], worker_id: str, **opts: Any) -> WorkerHandle:
        opts.setdefault("poll_interval", 0.2)
        handle = Worker(worker_id, backend, **opts).start(workflows)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.shutdown()
    for handle in handles:
        handle.join(10)
