"""``sayiir runs|workflows|stats`` on SQLite: the JSON output contract (docs/console.md) is
pinned field by field, and so are the exit codes; tables work with and without rich."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sayiir import Flow, SqliteBackend, run_durable_workflow
from sayiir.cli import _render
from sayiir.cli.app import main

SUMMARY = {
    "instance_id", "workflow_id", "definition_hash", "status", "created_at", "updated_at",
    "error", "parent_instance_id",
}  # fmt: skip
STEP = {
    "key", "task_id", "kind", "status", "started_at", "ended_at", "attempts", "output_preview",
    "output_bytes",
}  # fmt: skip
ATTEMPT = {"attempt", "started_at", "ended_at", "outcome", "error", "traceback"}
DETAIL = {
    "run", "input_preview", "output_preview", "steps", "steps_next_cursor", "signals",
    "children", "audit", "reason", "wake_at", "signal_name",
}  # fmt: skip
RESULT = {"instance_id", "action", "message", "new_instance_id"}
BULK = {"action", "dry_run", "matched", "done", "refused"}


def _boom(_: int) -> int:
    raise ValueError("no good")


@pytest.fixture
def url(tmp_path: Path) -> str:
    path = tmp_path / "runs.db"
    with SqliteBackend(path) as b:
        wait = (
            Flow("orders")
            .then(lambda x: x + 1, name="a")
            .wait_for_signal("go", name="wait")
            .then(lambda x: x, name="ship")
            .build()
        )
        for i in range(3):
            run_durable_workflow(wait, f"o-{i}", i, backend=b)
        run_durable_workflow(Flow("fails").then(_boom, name="boom").build(), "f-1", 1, backend=b)
    return f"sqlite:///{path}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def test_runs_list_json_contract(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = as_json(capsys, "runs", "list", "--url", url, "--limit", "2")
    assert set(doc) == {"runs", "next_cursor", "count", "count_capped"}
    assert (doc["count"], doc["count_capped"]) == (4, False)
    assert [r["instance_id"] for r in doc["runs"]] == ["f-1", "o-2"]  # newest first
    assert all(set(r) == SUMMARY for r in doc["runs"])
    assert doc["runs"][0]["status"] == "failed" and "no good" in doc["runs"][0]["error"]
    assert doc["runs"][0]["created_at"].endswith("+00:00")
    page2 = as_json(capsys, "runs", "list", "--url", url, "--limit", "2", "--cursor",
                    doc["next_cursor"])  # fmt: skip
    assert [r["instance_id"] for r in page2["runs"]] == ["o-1", "o-0"]
    assert page2["next_cursor"] is None
    failed = as_json(capsys, "runs", "list", "--url", url, "--status", "failed")
    assert [r["instance_id"] for r in failed["runs"]] == ["f-1"]
    code, out, _ = run(capsys, "runs", "list", "--url", url, "-o", "jsonl", "--workflow", "orders")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["instance_id"] for r in lines] == ["o-2", "o-1", "o-0"]


def test_runs_show_json_contract(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = as_json(capsys, "runs", "show", "--url", url, "f-1")
    assert set(doc) == DETAIL and set(doc["run"]) == SUMMARY
    (step,) = doc["steps"]
    assert set(step) == STEP and set(step["attempts"][0]) == ATTEMPT
    assert (step["key"], step["status"], step["attempts"][0]["outcome"]) == (
        "boom", "failed", "failed",
    )  # fmt: skip
    o = as_json(capsys, "runs", "show", "--url", url, "o-0")
    assert o["run"]["status"] == "awaiting_signal" and o["signal_name"] == "go"
    assert [s["key"] for s in o["steps"]] == ["a"]
    assert o["input_preview"] == "0"


def test_actions_and_bulk_json_contract(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = as_json(capsys, "runs", "signal", "--url", url, "o-0", "go", "--data", '{"n": 1}')
    assert set(doc) == RESULT and doc["message"] == "signal 'go' sent"
    preview = as_json(capsys, "runs", "cancel", "--url", url, "--workflow", "orders", "--dry-run")
    assert set(preview) == BULK and preview["matched"] == ["o-0", "o-1", "o-2"]
    assert preview["done"] == [] and preview["dry_run"] is True
    done = as_json(capsys, "runs", "cancel", "--url", url, "--workflow", "orders", "--yes",
                   "--actor", "ci")  # fmt: skip
    assert [r["message"] for r in done["done"]] == ["cancelled"] * 3
    audit = as_json(capsys, "runs", "show", "--url", url, "o-1")["audit"]
    assert [(a["actor"], a["action"]) for a in audit] == [("ci", "cancel")]
    assert set(audit[0]) == {"at", "actor", "action", "instance_id", "detail"}


def test_workflows_and_stats_json_contract(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = as_json(capsys, "workflows", "--url", url)
    assert set(doc) == {"definitions"}
    assert sorted(d["workflow_id"] for d in doc["definitions"]) == ["fails", "orders"]
    assert all(
        set(d) == {"definition_hash", "workflow_id", "structure", "first_seen"}
        for d in doc["definitions"]
    )
    one = as_json(capsys, "workflows", "--url", url, doc["definitions"][0]["definition_hash"])
    assert one["structure"]["root"]["kind"] == "sequence"
    stats = as_json(capsys, "stats", "--url", url, "--since", "1h", "--bucket", "5m")
    assert set(stats) == {"window_start", "window_end", "totals", "buckets", "queue"}
    assert stats["totals"] == {"awaiting_signal": 3, "failed": 1}
    assert stats["queue"] is None  # SQLite has no worker queue
    assert all(set(b) == {"start", "status", "count"} for b in stats["buckets"])


def test_exit_codes(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "runs", "show", "--url", url, "nope")[0] == 3
    code, _, err = run(capsys, "runs", "retry", "--url", url, "o-0")
    assert code == 4 and "not failed" in err
    code, _, err = run(capsys, "runs", "cancel", "--url", url, "--workflow", "orders")
    assert code == 1 and "--dry-run" in err and "--yes" in err
    assert run(capsys, "runs", "cancel", "--url", url)[0] == 1  # neither id nor filter
    assert run(capsys, "runs", "pause", "--url", url, "--status", "failed", "--yes")[0] == 5
    assert run(capsys, "runs", "watch", "--url", url, "f-1")[0] == 6
    assert run(capsys, "runs", "list", "--url", "sqlite:///no/such.db")[0] == 1
    code, _, err = run(capsys, "runs", "list")
    assert code == 1 and "SAYIIR_URL" in err


def test_tables_with_and_without_rich(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "runs", "show", "--url", url, "f-1")
    assert code == 0 and "no good" in out and "boom" in out
    monkeypatch.setattr(_render, "_rich", lambda: None)
    code, out, _ = run(capsys, "runs", "list", "--url", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "4 run(s)" and lines[1].split() == [
        "ID", "WORKFLOW", "STATUS", "CREATED", "UPDATED", "ERROR",
    ]  # fmt: skip
    assert lines[3].startswith("f-1 ")


def test_completion_script_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "completion", "bash")
    assert code == 0 and "complete -F _sayiir_complete sayiir" in out
    assert "runs) words='--help list show watch cancel" in out
    assert "--from-step" in out
