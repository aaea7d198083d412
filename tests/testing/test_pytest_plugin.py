"""The pytest plugin of sayiir.testing, run the way a user runs it: pytest on a small test
file (``pytester``), with the plugin loaded through its ``pytest11`` entry point."""

from __future__ import annotations

import pytest

from sayiir.testing.pytest_plugin import DSN_ENV

WORKFLOW = """
import pytest
from sayiir import Flow, task

@task
def charge(order):
    return order

@task
def ship(receipt):
    return receipt

order = Flow("order").then(charge).then(ship).build()
"""


def test_an_unknown_crash_point_kind_fails_collection_naming_the_test_and_point(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        WORKFLOW
        + """
@pytest.mark.sayiir_crash_points("explode:charge")
def test_crash(crash_point):
    pass
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "test_*.py::test_crash: @pytest.mark.sayiir_crash_points(...): crash point "
            "'explode:charge': unknown crash point kind 'explode': use before, during, after "
            "or write"
        ]
    )
    # the reason alone, not a traceback through the plugin's internals
    assert "Traceback" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()


def test_a_crash_point_naming_no_task_of_the_workflow_fails_collection(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        WORKFLOW
        + """
@pytest.mark.sayiir_crash_points("after:chrage", workflow=order)
def test_crash(crash_point):
    pass
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*test_crash: @pytest.mark.sayiir_crash_points(...): crash point 'after:chrage' "
            "names no task or node of workflow 'order' (it has: charge, ship): it would never fire"
        ]
    )


def test_sayiir_backend_without_a_dsn_runs_memory_and_sqlite_and_skips_postgres(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)
    pytester.makepyfile(
        """
from sayiir import Flow, run_durable_workflow

EXPECTED = {"memory": "InMemoryBackend", "sqlite": "SqliteBackend"}

def test_backend(sayiir_backend, request):
    kind = request.node.callspec.params["sayiir_backend"]
    assert type(sayiir_backend).__name__ == EXPECTED[kind]
    flow = Flow("w").then(lambda x: x + 1).build()
    assert run_durable_workflow(flow, "r-1", 1, backend=sayiir_backend).output == 2
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*::test_backend?memory? PASSED*",
            "*::test_backend?sqlite? PASSED*",
            "*::test_backend?postgres? SKIPPED*",
            f"SKIPPED*PostgreSQL: set {DSN_ENV} to run it",
        ]
    )


def test_the_marker_with_a_workflow_expands_to_every_crash_point_of_its_tasks(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        WORKFLOW
        + """
SEEN = []

@pytest.mark.sayiir_crash_points("write:5", workflow=order, writes=2)
def test_crash(crash_point):
    SEEN.append(crash_point.name)
    assert not crash_point.fired

def test_all_seen():
    assert SEEN == [
        "write:5",
        "before:charge", "during:charge", "after:charge",
        "before:ship", "during:ship", "after:ship",
        "write:1", "write:2",
    ]
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", "-v")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(
        [
            "*::test_crash?write:5? PASSED*",
            "*::test_crash?before:charge? PASSED*",
            "*::test_crash?during:charge? PASSED*",
            "*::test_crash?after:charge? PASSED*",
            "*::test_crash?before:ship? PASSED*",
            "*::test_crash?during:ship? PASSED*",
            "*::test_crash?after:ship? PASSED*",
            "*::test_crash?write:1? PASSED*",
            "*::test_crash?write:2? PASSED*",
        ]
    )
