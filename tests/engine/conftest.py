"""Fixtures of the engine conformance suite: the same tests run on every backend.

``backend``
    A durable backend, parametrized over ``memory`` (``InMemoryBackend``), ``sqlite``
    (``SqliteBackend(tmp_path / "s.db")``) and ``postgres`` (``PostgresBackend`` on the
    module's fresh database, see ``tests/conftest.py``; skipped without
    ``SAYIIR_TEST_POSTGRES_DSN``). Closed after the test.
``path``
    The in-memory path (``"plain"``: ``run_workflow`` without an instance id) plus every
    durable backend, behind one ``Runner`` so one test checks a construct everywhere.
``iid``
    A fresh instance id (the PostgreSQL database is shared by the tests of a module).
``ledger``
    A thread-safe side-effect log: tasks append their name, tests assert exactly which
    tasks ran (and how often).

Run locally with PostgreSQL::

    SAYIIR_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/pytest tests/engine
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sayiir import InMemoryBackend, TaskError, WorkflowStatus, run_durable_workflow, run_workflow
from sayiir.errors import DeserializationError

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]
PATHS = ["plain", *BACKENDS]


def make_backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, codec: Any = None
) -> Any:
    """A new, connected backend of ``kind`` (with ``codec``, else the default JSON one).

    A backend that fails to import is an error, not a skip: a broken import must not
    silently skip the whole engine suite on that backend.
    """
    backend = _new_backend(kind, request, tmp_path, codec)
    if kind != "memory":
        # Connect (and migrate) now, so that timing assertions in tests measure the engine.
        backend.get_instance("warm-up")
    return backend


def _new_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path, codec: Any) -> Any:
    if kind == "memory":
        return InMemoryBackend(codec=codec)
    if kind == "sqlite":
        from sayiir.backends.sqlite import SqliteBackend

        return SqliteBackend(tmp_path / "s.db", codec=codec)
    if kind == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        from sayiir.backends.postgres import PostgresBackend

        return PostgresBackend(dsn, codec=codec)
    raise AssertionError(kind)


def close_backend(backend: Any) -> None:
    close = getattr(backend, "close", None)
    if close is not None:
        close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    b = make_backend(request.param, request, tmp_path)
    try:
        yield b
    finally:
        close_backend(b)


@pytest.fixture
def backend_kind(request: pytest.FixtureRequest) -> str:
    """``"memory"``, ``"sqlite"`` or ``"postgres"`` for a test using ``backend``."""
    kind: str = request.node.callspec.params["backend"]
    return kind


@pytest.fixture
def iid() -> str:
    """A unique instance id for this test."""
    return f"inst-{secrets.token_hex(6)}"


class Ledger:
    """Which tasks ran, in order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[str] = []

    def add(self, name: str) -> None:
        with self._lock:
            self.entries.append(name)

    def count(self, name: str) -> int:
        with self._lock:
            return self.entries.count(name)

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def __repr__(self) -> str:
        return f"Ledger({self.entries!r})"


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


class Crash(BaseException):
    """Raised by a task (with the ``crash_cls`` fixture) to emulate the process dying in it.

    Whatever a task raises is a task failure, ``BaseException`` included (as in the
    reference). ``crash_cls`` makes this one class pass the engine's call boundary instead,
    so the execution stops right there and writes nothing more: the stored state is what a
    process killed during that task leaves (the instance stays ``running`` at its last
    checkpoint), and a later resume must continue from there. Real process deaths are in
    ``test_crash.py``; this keeps the many resume scenarios in-process and on every backend.
    """


@pytest.fixture
def crash_cls(monkeypatch: pytest.MonkeyPatch) -> type[Crash]:
    from sayiir.engine import _drive, _interpreter, _invoke

    real_sync, real_async = _invoke.call_sync, _invoke.call_async

    def call_sync(*args: Any) -> Any:
        result = real_sync(*args)
        if isinstance(result.error, Crash):
            raise result.error
        return result

    async def call_async(*args: Any) -> Any:
        result = await real_async(*args)
        if isinstance(result.error, Crash):
            raise result.error
        return result

    monkeypatch.setattr(_interpreter, "call_sync", call_sync)
    monkeypatch.setattr(_drive, "call_sync", call_sync)
    monkeypatch.setattr(_drive, "call_async", call_async)
    return Crash


def wake_at_timestamp(text: str) -> float:
    """A status ``wake_at`` (RFC 3339 UTC with nanoseconds) as a Unix timestamp.

    Checks the exact format too: ``2026-11-25T08:04:39.684865690+00:00``.
    """
    head, _, frac_tz = text.partition(".")
    assert frac_tz.endswith("+00:00"), text
    frac = frac_tz[: -len("+00:00")]
    assert frac.isdigit() and len(frac) == 9, text
    base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return base.timestamp() + int(frac) / 1e9


@pytest.fixture
def parse_wake_at() -> Callable[[str], float]:
    return wake_at_timestamp


def same_instant(a: str | None, b: str | None) -> bool:
    """Two ``wake_at`` strings for the same instant, up to 1 µs of storage rounding.

    Exact equality is checked once, in ``test_wake_at_is_stable_across_reads``; other tests
    use this so that they test their own subject.
    """
    if a is None or b is None:
        return a is b
    return abs(wake_at_timestamp(a) - wake_at_timestamp(b)) <= 1.5e-6


@pytest.fixture
def same_wake_at() -> Callable[[str | None, str | None], bool]:
    return same_instant


@dataclass
class Outcome:
    """What a run ended with, on either path: ``ok`` and ``value``, or ``error`` text."""

    ok: bool
    value: Any = None
    error: str | None = None
    status: WorkflowStatus | None = None
    exception: BaseException | None = None


class Runner:
    """Run a workflow on one path (``plain`` or a durable backend) and normalise the result."""

    def __init__(self, kind: str, backend: Any) -> None:
        self.kind = kind
        self.backend = backend
        self.durable = backend is not None

    def run(self, wf: Any, value: Any, instance_id: str | None = None) -> Outcome:
        if not self.durable:
            try:
                return Outcome(True, run_workflow(wf, value))
            except (TaskError, DeserializationError) as exc:
                return Outcome(False, error=str(exc).split("\n\n", 1)[0], exception=exc)
        iid = instance_id or f"inst-{secrets.token_hex(6)}"
        status = run_durable_workflow(wf, iid, value, backend=self.backend)
        if status.status == "completed":
            return Outcome(True, status.output, status=status)
        assert status.status == "failed", f"unexpected status {status!r}"
        return Outcome(False, error=status.error, status=status)

    def __repr__(self) -> str:
        return f"Runner({self.kind})"


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runner]:
    kind = request.param
    b = None if kind == "plain" else make_backend(kind, request, tmp_path)
    try:
        yield Runner(kind, b)
    finally:
        if b is not None:
            close_backend(b)
