"""Every ```python block of README.md and docs/*.md runs as written.

One test per Markdown file: its blocks run in order in one fresh Python process, with a
temporary working directory, so a later block may use the names of an earlier one (see
tests/docs/markdown_blocks.py for the convention and tests/docs/run_blocks.py for the runner).
A block marked ``<!-- docs-test: skip (reason) -->`` is skipped; a skip without a reason fails.

PostgreSQL blocks read their URL from ``SAYIIR_DATABASE_URL`` (the variable ``sayiir worker``
reads). With ``SAYIIR_TEST_POSTGRES_DSN`` set, the file runs against a fresh, empty database
exported there; without it, its PostgreSQL blocks are skipped, the others still run, and the
test reports the skip.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DSN_ENV, admin_dsn, fresh_database
from tests.docs.markdown_blocks import Block, MarkdownBlockError, python_blocks

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("run_blocks.py")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
URL_ENV = "SAYIIR_DATABASE_URL"
CHILD_TIMEOUT = 300  # seconds: generous, the examples take a few seconds on an idle machine


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _run(blocks: list[Block], cwd: Path, env: dict[str, str]) -> None:
    result = cwd / ".docs-test-result.json"
    payload = [{"path": str(b.path), "line": b.line, "code": b.code} for b in blocks]
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(result)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    outcome = json.loads(result.read_text()) if result.exists() else None
    if proc.returncode == 0 and outcome is not None and outcome["block"] is None:
        return
    if outcome is not None and outcome["block"] is not None:
        failed = blocks[outcome["block"]]
        head = f"{_shown(failed.path)}: the ```python block at line {failed.line} failed"
        detail = outcome["traceback"]
    else:
        head = f"the blocks of {_shown(blocks[0].path)} exited with {proc.returncode}"
        detail = ""
    output = (proc.stdout + proc.stderr).strip()
    pytest.fail(
        f"{head}\n{detail}" + (f"\n--- output ---\n{output[-3000:]}" if output else ""),
        pytrace=False,
    )


@pytest.mark.timeout(CHILD_TIMEOUT + 60)
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(doc: Path, tmp_path: Path) -> None:
    try:
        blocks = python_blocks(doc)
    except MarkdownBlockError as exc:
        pytest.fail(str(exc), pytrace=False)
    runnable = [b for b in blocks if b.skip_reason is None]
    have_server = admin_dsn() is not None
    postgres = [b for b in runnable if b.uses_postgres]
    if not have_server:
        runnable = [b for b in runnable if not b.uses_postgres]
    if runnable:
        env = {k: v for k, v in os.environ.items() if k != URL_ENV}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p
        )
        if have_server and postgres:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with fresh_database(f"sayiir_docs_{worker}_{secrets.token_hex(4)}") as url:
                _run(runnable, tmp_path, {**env, URL_ENV: url})
        else:
            _run(runnable, tmp_path, env)
    if postgres and not have_server:
        lines = ", ".join(str(b.line) for b in postgres)
        pytest.skip(
            f"{doc.name}: {len(runnable)} block(s) ran; the PostgreSQL block(s) at line(s) {lines} "
            f"did not: set {DSN_ENV} to run them"
        )


# -- the convention itself -------------------------------------------------------------------


def _doc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    return path


def test_blocks_share_names_in_order_and_skipped_or_shell_blocks_do_not_run(tmp_path: Path) -> None:
    doc = _doc(
        tmp_path,
        "```python\nx = 2\n```\n\n```sh\nexit 1\n```\n"
        "<!-- docs-test: skip (needs a mail server) -->\n```python\nraise SystemExit(3)\n```\n"
        "- a list item:\n\n  ```python\n  import pathlib\n  assert x == 2\n"
        "  pathlib.Path('out').write_text('ok')\n  ```\n",
    )
    blocks = python_blocks(doc)
    assert [(b.line, b.skip_reason) for b in blocks] == [
        (1, None),
        (9, "needs a mail server"),
        (14, None),
    ]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    _run([b for b in blocks if b.skip_reason is None], cwd, dict(os.environ))
    assert (cwd / "out").read_text() == "ok"  # ran in the given working directory


def test_a_failing_block_is_reported_with_its_file_line_and_error(tmp_path: Path) -> None:
    doc = _doc(
        tmp_path, "intro\n\n```python\nx = 1\n```\n\n```python\ny = x\nz = undefined_name\n```\n"
    )
    with pytest.raises(pytest.fail.Exception) as failed:
        _run(python_blocks(doc), tmp_path, dict(os.environ))
    message = str(failed.value)
    assert "the ```python block at line 7 failed" in message
    assert f'File "{doc}", line 9' in message
    assert "NameError: name 'undefined_name' is not defined" in message


def test_top_level_await_runs_on_one_loop_for_the_whole_file(tmp_path: Path) -> None:
    doc = _doc(
        tmp_path,
        "```python\nimport asyncio\nloop = asyncio.get_running_loop()\n"
        "await asyncio.sleep(0)\n```\n"
        "```python\nawait asyncio.sleep(0)\nassert asyncio.get_running_loop() is loop\n```\n",
    )
    _run(python_blocks(doc), tmp_path, dict(os.environ))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("<!-- docs-test: skip -->\n```python\npass\n```\n", "skip without a reason"),
        ("<!-- docs-test: skip () -->\n```python\npass\n```\n", "skip without a reason"),
        (
            "<!-- docs-test: skip (why) -->\n\n```python\npass\n```\n",
            "right before the opening fence",
        ),
        ("<!-- docs-test: skip (why) -->\n```sh\nls\n```\n", "not ```python"),
        ("<!-- docs-test: run -->\n```python\npass\n```\n", "unknown docs-test marker"),
        ("```python\npass\n", "never closed"),
    ],
)
def test_a_marker_that_breaks_the_convention_is_an_error(
    tmp_path: Path, text: str, error: str
) -> None:
    with pytest.raises(MarkdownBlockError, match=error):
        python_blocks(_doc(tmp_path, text))
