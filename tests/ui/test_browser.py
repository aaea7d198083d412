"""The console in a real browser (Debian's Chromium, driven by Playwright).

list -> filter -> open a run -> its graph -> send a signal -> the run moves on, live;
cancel with and without the operator token; a stored XSS payload stays text. Each page is
photographed: into docs/img/console/ when SAYIIR_UI_SCREENSHOTS=1 (how the documentation's
pictures are made), else into the test's temporary directory.

Chromium comes from Debian (`apt-get install chromium`, .ci/run does it); Playwright's own
browser download is not used. Without /usr/bin/chromium the tests are skipped, except under
CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sayiir.ui
from sayiir.executor import resume_workflow
from tests.ui.conftest import TOKEN
from tests.ui.demo import ORDER
from tests.ui.server import serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img" / "console"

pytestmark = pytest.mark.slow

if not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true":
    pytest.skip("no chromium (apt-get install chromium)", allow_module_level=True)

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The durable backends only (the in-memory one is covered by test_app.py)."""
    return str(request.param)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("SAYIIR_UI_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG
    return tmp_path


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    tab.on("dialog", on_dialog)
    tab.dialogs = dialogs
    yield tab
    context.close()


def _snap(page: Any, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def _sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/runs")


def test_list_filter_open_graph_signal_and_the_run_moves_on_live(
    page: Any, backend: Any, runs: dict[str, str], shots: Path
) -> None:
    app = sayiir.ui.app(backend, token=TOKEN, poll_interval=0.1)
    with serve(app) as base:
        _sign_in(page, base)
        page.goto(f"{base}/runs")
        page.wait_for_selector("#live.on")  # the SSE stream is open
        _snap(page, shots, "runs")

        page.click("label.pick:has(input[value=awaiting_signal])")
        page.select_option("select[name=workflow]", "order")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**status=awaiting_signal**")
        assert "workflow=order" in page.url  # the view is in the URL, to share
        statuses = page.locator("tbody .status").all_inner_texts()
        assert statuses and set(statuses) == {"awaiting signal"}
        _snap(page, shots, "runs-filtered")

        run = runs["waiting"]
        page.click(f"a:text-is('{run}')")
        page.wait_for_url(f"**/runs/{run}")
        graph = page.locator("#graph svg")
        assert graph.locator("[data-key=validate]").get_attribute("data-status") == "completed"
        assert graph.locator("[data-key=approved]").get_attribute("data-status") == "waiting"
        assert graph.locator("[data-key=box]").get_attribute("data-status") == "pending"
        _snap(page, shots, "run-waiting")

        page.fill("textarea[name=payload]", '{"by": "alice", "gift": ')
        assert page.locator(".json-error").is_visible()
        assert page.locator("#signal-form button[type=submit]").is_disabled()
        page.fill("textarea[name=payload]", '{"by": "alice", "gift": true}')
        page.click("#signal-form button[type=submit]")
        page.wait_for_selector("#flash:text('sent')")
        page.wait_for_selector("#live.on")
        page.evaluate("window.__notReloaded = true")

        resume_workflow(ORDER, run, backend)  # a worker picks the run up

        page.wait_for_selector("#run-live .status.st-completed")  # pushed, not reloaded
        assert page.evaluate("window.__notReloaded") is True
        graph = page.locator("#graph svg")
        assert graph.locator("[data-key=wrap]").get_attribute("data-status") == "completed"
        assert graph.locator("[data-key=box]").get_attribute("data-status") == "pending"
        assert page.locator("#steps-live tr#step-wrap").count() == 1
        _snap(page, shots, "run-completed")
        page.goto("about:blank")  # closes the event stream before the server stops


def test_cancel_needs_the_token(page: Any, backend: Any, runs: dict[str, str], shots: Path) -> None:
    run = runs["waiting"]
    with serve(sayiir.ui.app(backend, token=None)) as base:
        page.goto(f"{base}/runs/{run}")
        assert page.locator(".badge-ro").inner_text() == "read-only"
        assert page.locator("#action-cancel").count() == 0
        # a hand-made POST from the page (a valid CSRF cookie, no operator) is refused
        status = page.evaluate(
            """async (run) => {
                const body = new URLSearchParams({run, action: "cancel",
                    csrf_token: document.body.dataset.csrf});
                const r = await fetch("/act", {method: "POST", body});
                return r.status;
            }""",
            run,
        )
        assert status == 403
        page.goto("about:blank")
    assert backend.run_detail(run).run.status == "awaiting_signal"

    with serve(sayiir.ui.app(backend, token=TOKEN)) as base:
        page.goto(f"{base}/login")
        _snap(page, shots, "login")
        _sign_in(page, base)
        page.goto(f"{base}/runs/{run}")
        page.click("#action-cancel")
        page.wait_for_selector("#flash.notice-ok:text('cancel')")
        assert page.dialogs == [f"Cancel run {run}?"]
        page.wait_for_selector("#run-live .status.st-cancelled")
        assert "token" in page.locator("#audit").inner_text()
        assert backend.run_detail(run).run.status == "cancelled"
        _snap(page, shots, "run-cancelled")
        page.goto("about:blank")


def test_a_stored_xss_payload_stays_text(
    page: Any, backend: Any, runs: dict[str, str], shots: Path
) -> None:
    with serve(sayiir.ui.app(backend, token=TOKEN)) as base:
        page.goto(f"{base}/runs/{runs['xss']}")
        page.click("#run-live button:text('Load in full')")
        page.wait_for_selector("#input-payload:text('onerror')")
        assert page.title() != "pwned"
        assert page.locator("#input-payload img").count() == 0
        assert "<script>" in page.locator("#input-payload").inner_text()
        assert page.dialogs == []
        page.goto("about:blank")


def test_the_other_pages(page: Any, backend: Any, runs: dict[str, str], shots: Path) -> None:
    with serve(sayiir.ui.app(backend, token=TOKEN)) as base:
        page.goto(f"{base}/runs/{runs['failed']}")
        page.click("#failed-only")
        page.wait_for_url("**failed=1")
        assert page.locator("tr.attempt-error").count() == 3  # 1 try + 2 retries
        _snap(page, shots, "run-failed")
        page.goto(f"{base}/workflows")
        _snap(page, shots, "workflows")
        page.click("tr:has-text('order') a:text('Graph')")
        page.wait_for_selector("#graph svg")
        _snap(page, shots, "workflow-graph")
        page.goto(f"{base}/stats")
        assert page.locator(".tile.st-failed .tile-n").inner_text() == "1"
        _snap(page, shots, "stats")
        _sign_in(page, base)
        page.goto(f"{base}/bulk?status=awaiting_signal&action=cancel")
        _snap(page, shots, "bulk-preview")
        page.goto("about:blank")
