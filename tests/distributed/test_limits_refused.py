"""A run limit is enforced or refused, never silently ignored: every backend of sayiir
enforces it (PostgreSQL, SQLite, in memory); a storage that does not (a third-party one, no
``ConcurrencyStorage``) is refused at submit and at schedule creation, writing nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sayiir import Flow, InMemoryBackend, Schedule, WorkflowClient
from sayiir.backends.sqlite import SqliteBackend
from sayiir.errors import InstanceNotFoundError, WorkflowError


def _limited() -> Any:
    return (
        Flow("limited", concurrency_key=lambda order: order["customer"], max_concurrent=1)
        .then(lambda order: order, name="pass_on")
        .build()
    )


class _NoLimits:
    """A storage that does not enforce run limits: InMemoryBackend without its
    ``ConcurrencyStorage`` side (as a third-party storage would be)."""

    def __init__(self) -> None:
        self._inner = InMemoryBackend()

    def __getattr__(self, name: str) -> Any:
        if name == "concurrency_state":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_storage_that_does_not_enforce_limits_is_refused_and_nothing_is_written() -> None:
    storage = _NoLimits()
    client = WorkflowClient(storage)
    with pytest.raises(WorkflowError, match="does not enforce"):
        client.submit(_limited(), "order-1", {"customer": "c1"}, dedupe_key="d1")
    with pytest.raises(InstanceNotFoundError):
        client.status("order-1")
    with pytest.raises(WorkflowError, match="does not enforce"):
        client.schedule(Schedule(_limited(), cron="* * * * *", input={"customer": "c1"}))
    assert client.schedules() == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_submit_with_a_limit_is_accepted_and_held_back(kind: str, tmp_path: Path) -> None:
    backend: Any = InMemoryBackend() if kind == "memory" else SqliteBackend(tmp_path / "r.db")
    try:
        client = WorkflowClient(backend)
        wf = _limited()
        client.submit(wf, "order-1", {"customer": "c1"})
        client.submit(wf, "order-2", {"customer": "c1"})
        client.submit(wf, "order-3", {"customer": "c2"})
        claims = backend.claim("w", [wf.definition_hash], [], 10, 60.0)
        assert sorted(c.instance_id for c in claims) == ["order-1", "order-3"]
        assert client.waiting_reason("order-2") == (
            "queued: concurrency key 'limited:c1' is at its limit (1 of 1 held by order-1)"
        )
    finally:
        backend.close()
