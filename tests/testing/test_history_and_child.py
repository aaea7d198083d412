"""History export (API and CLI) and replay against new code; the child-process helper
that SIGKILLs a real run at a named point."""

from __future__ import annotations

import importlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from sayiir import Flow, SqliteBackend, resume_workflow, run_durable_workflow, send_signal, task
from sayiir.cli.app import main as cli
from sayiir.errors import InstanceNotFoundError
from sayiir.testing import export_history, replay, run_in_child, virtual_time

sys.path.insert(0, str(Path(__file__).parent))
childflows: Any = importlib.import_module("childflows")  # the child imports it by this name


@task
def price(order: dict[str, Any]) -> float:
    return float(order["total"]) * 1.2


@task
def receipt(confirmation: dict[str, Any]) -> str:
    return f"confirmed by {confirmation['by']}"


@task(name="price")
def price_v2(order: dict[str, Any]) -> float:
    return float(order["total"]) * 1.25  # the tax rate changed


@task
def audit(total: float) -> float:
    return total


def _v1() -> Any:
    return (
        Flow("billing")
        .then(price)
        .delay("settle", "1h")
        .wait_for_signal("confirm")
        .then(receipt)
        .build()
    )


def _recorded_run(backend: Any) -> dict[str, Any]:
    wf = _v1()
    with virtual_time():
        run_durable_workflow(wf, "bill-1", {"total": 10}, backend=backend)
        send_signal("bill-1", "confirm", {"by": "bob"}, backend)
        # The delay passes at once (auto_skip) and the signal is there.
        assert resume_workflow(wf, "bill-1", backend).output == "confirmed by bob"
    return export_history(backend, "bill-1")


def test_export_is_json_and_replays_identically(sayiir_backend: Any) -> None:
    history = _recorded_run(sayiir_backend)
    history = json.loads(json.dumps(history))  # what a file round trip gives
    assert history["status"] == "completed"
    assert [c["key"] for c in history["checkpoints"]] == ["confirm", "price", "receipt", "settle"]
    report = replay(history, _v1())
    assert report.ok, str(report)
    assert report.steps_compared == 2


def test_replay_reports_the_first_step_whose_output_drifted(sayiir_backend: Any) -> None:
    history = _recorded_run(sayiir_backend)
    new = (
        Flow("billing")
        .then(price_v2)
        .delay("settle", "1h")
        .wait_for_signal("confirm")
        .then(receipt)
        .build()
    )
    report = replay(history, new)
    assert report.drift is not None
    assert (report.drift.key, report.drift.reason) == ("price", "output")
    assert (report.drift.recorded, report.drift.replayed) == (12.0, 12.5)
    assert not report.definition_changed  # same structure: old runs would resume silently
    assert "step 'price' drifted: recorded output 12.0, new code gives 12.5" in str(report)


def test_replay_reports_a_changed_definition(sayiir_backend: Any) -> None:
    history = _recorded_run(sayiir_backend)
    new = (
        Flow("billing")
        .then(price)
        .then(audit)
        .delay("settle", "1h")
        .wait_for_signal("confirm")
        .then(receipt)
        .build()
    )
    report = replay(history, new)
    assert report.definition_changed and not report.ok
    assert report.drift is not None
    assert (report.drift.key, report.drift.reason) == ("audit", "new")


def test_export_of_an_unknown_run() -> None:
    with pytest.raises(InstanceNotFoundError):
        export_history(SqliteBackend(":memory:"), "nope")


def test_history_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.db"
    with SqliteBackend(db) as backend:
        expected = _recorded_run(backend)
    assert cli(["history", f"sqlite://{db}", "bill-1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(expected))
    assert replay(printed, _v1()).ok
    out = tmp_path / "h.json"
    assert cli(["history", str(db), "bill-1", "-o", str(out)]) == 0
    assert replay(out, _v1()).ok
    assert cli(["history", str(db), "nope"]) == 1
    assert "nope" in capsys.readouterr().err
    assert cli(["history", str(tmp_path / "missing.db"), "bill-1"]) == 1
    assert "no SQLite database" in capsys.readouterr().err


def test_replay_refuses_what_is_not_a_history(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a sayiir history"):
        replay({"status": "completed"}, _v1())


@pytest.mark.parametrize(
    ("point", "ran_in_child", "checkpoints"),
    [
        ("before:charge", [], []),
        ("during:charge", ["charge"], []),
        ("after:charge", ["charge"], ["charge"]),
        ("before:ship", ["charge"], ["charge"]),
        ("write:2", ["charge"], []),
    ],
)
def test_a_real_sigkill_at_a_named_point(
    tmp_path: Path, point: str, ran_in_child: list[str], checkpoints: list[str]
) -> None:
    db = tmp_path / "runs.db"
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    order = {"total": 5, "ledger": str(ledger)}
    out = run_in_child("childflows:order", "o-1", order, f"sqlite://{db}", point)
    assert out.killed and out.returncode == -signal.SIGKILL, out.stderr
    assert ledger.read_text().split() == ran_in_child
    with SqliteBackend(db) as backend:
        state = backend.load("o-1")
        assert state is not None and list(state.checkpoints) == checkpoints
        if state.record.lease_until is not None:  # killed while executing: its lease runs out
            assert state.record.token is not None
            backend.renew_lease("o-1", state.record.token, release=True)
        status = resume_workflow(childflows.order, "o-1", backend)
    assert status.output == "shipped 5"
    # A finished task never runs again; the others run once more.
    again = ledger.read_text().split()[len(ran_in_child) :]
    assert again == [t for t in ("charge", "ship") if t not in checkpoints]


def test_a_child_that_never_reaches_the_point_finishes(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    order = {"total": 5, "ledger": str(tmp_path / "ledger.txt")}
    out = run_in_child("childflows:order", "o-2", order, f"sqlite://{db}", "before:refund")
    assert (out.killed, out.status, out.returncode) == (False, "completed", 0)
