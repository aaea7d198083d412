"""The pytest plugin of ``sayiir.testing`` (loaded through the ``pytest11`` entry point).

Fixtures
    ``sayiir_backend``
        a fresh durable backend per test, parametrised: ``memory``, ``sqlite`` (a file in
        ``tmp_path``) and ``postgres`` when ``SAYIIR_TEST_POSTGRES_DSN`` is set (a new
        database per test, copied from a migrated template built once per schema
        version; safe under pytest-xdist). Closed, and its database dropped, after the test.
    ``virtual_clock``
        the test runs on a ``VirtualClock`` (auto-skip on).
    ``crash_point``
        one ``CrashPoint`` per parameter of the ``sayiir_crash_points`` marker.

Marker
    ``@pytest.mark.sayiir_crash_points(*points, workflow=None, writes=0)`` runs the test
    once per crash point: the strings given (``"after:charge"``, ``"write:3"``), plus,
    with ``workflow=``, every task's ``before``/``during``/``after`` point and
    ``write:1..writes``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import pytest

from sayiir.testing._clock import VirtualClock, virtual_time
from sayiir.testing._crash import CrashPoint, crash_points

__all__ = ["DSN_ENV"]

DSN_ENV = "SAYIIR_TEST_POSTGRES_DSN"
_MARKER = "sayiir_crash_points"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(*points, workflow=None, writes=0): run the test once per crash point "
        "(fixture crash_point)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "crash_point" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(_MARKER)
    if marker is None:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} uses the crash_point fixture without a "
            f"@pytest.mark.{_MARKER}(...) marker naming the points"
        )
    points = _marker_points(marker, metafunc.definition.nodeid)
    metafunc.parametrize("crash_point", points, indirect=True, ids=points)


def _marker_points(marker: pytest.Mark, nodeid: str) -> list[str]:
    """The marker's crash points; a point that is malformed, or that names no task or node of
    ``workflow=``, fails the collection with the reason (such a point would never fire)."""
    points = [str(p) for p in marker.args]
    workflow = marker.kwargs.get("workflow")
    writes = int(marker.kwargs.get("writes", 0))
    if workflow is not None:
        points += crash_points(workflow, writes=writes)
    elif writes:
        points += [f"write:{n}" for n in range(1, writes + 1)]
    known = _node_ids(workflow) if workflow is not None else None
    for point in points:
        try:
            parsed: CrashPoint | None = CrashPoint.parse(point)
        except ValueError as exc:
            parsed, error = None, str(exc)
        if parsed is None:  # outside the except block: no chained traceback in the report
            _bad_marker(nodeid, f"crash point {point!r}: {error}")
        if known is not None and parsed.kind != "write" and parsed.target not in known:
            _bad_marker(
                nodeid,
                f"crash point {point!r} names no task or node of workflow "
                f"{getattr(workflow, 'workflow_id', workflow)!r} (it has: "
                f"{', '.join(sorted(known))}): it would never fire",
            )
    return points


def _node_ids(workflow: Any) -> set[str]:
    """Task ids and node ids of ``workflow`` (an ``after:`` point may name a delay/signal)."""
    ids = set(getattr(workflow, "_task_registry", {}) or {})
    iter_nodes = getattr(workflow, "iter_nodes", None)
    if iter_nodes is not None:
        ids.update(node.id for node in iter_nodes())
    return ids


def _bad_marker(nodeid: str, reason: str) -> NoReturn:
    pytest.fail(f"{nodeid}: @pytest.mark.{_MARKER}(...): {reason}", pytrace=False)


@pytest.fixture
def crash_point(request: pytest.FixtureRequest) -> CrashPoint:
    """The crash point of this parametrisation (not armed: ``with crash_point: ...``)."""
    return CrashPoint.parse(request.param)


@pytest.fixture
def virtual_clock() -> Iterator[VirtualClock]:
    """Run the test on a virtual clock (``sayiir.testing.virtual_time()``)."""
    with virtual_time() as clock:
        yield clock


_BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=_BACKENDS)
def sayiir_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh backend: ``memory``, ``sqlite`` or ``postgres`` (see the module docstring)."""
    kind = request.param
    if kind == "memory":
        from sayiir.backends.memory import InMemoryBackend

        yield InMemoryBackend()
        return
    if kind == "sqlite":
        from sayiir.backends.sqlite import SqliteBackend

        backend: Any = SqliteBackend(tmp_path / "sayiir.db")
        try:
            yield backend
        finally:
            backend.close()
        return
    # Read when the test runs, not when the plugin is imported: a conftest may set it.
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        pytest.skip(f"PostgreSQL: set {DSN_ENV} to run it")
    from sayiir.backends.postgres import PostgresBackend

    with _fresh_database(dsn) as url:
        backend = PostgresBackend(url)
        try:
            yield backend
        finally:
            backend.close()


# -- PostgreSQL: a migrated template, one copy per test ------------------------------------

_template_name: str | None = None  # per process: each xdist worker checks it once


class _FreshDatabase:
    """A new database copied from the migrated template; dropped on exit."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.name = f"sayiir_t_{worker}_{secrets.token_hex(6)}"

    def __enter__(self) -> str:
        from sayiir.backends.postgres._testdb import create_copy, ensure_template

        global _template_name
        if _template_name is None:
            _template_name = ensure_template(self.dsn)
        return create_copy(self.dsn, _template_name, self.name)

    def __exit__(self, *exc: object) -> None:
        from sayiir.backends.postgres._testdb import drop_database

        global _dropper
        if _dropper is None:
            _dropper = ThreadPoolExecutor(1, thread_name_prefix="sayiir-dropdb")
        _dropping.append(_dropper.submit(drop_database, self.dsn, self.name))


# Dropping a database takes a checkpoint's time: done in the background, so the next
# test starts at once; the session waits for every drop at its end.
_dropper: ThreadPoolExecutor | None = None
_dropping: list[Future[None]] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _dropping:
        _dropping.pop().result()


def _fresh_database(dsn: str) -> _FreshDatabase:
    return _FreshDatabase(dsn)
