"""The console over real HTTP (uvicorn on 127.0.0.1): pages, guarded actions, escaping."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

import sayiir.ui
from sayiir.core.queries import RunFilter
from tests.ui.conftest import TOKEN
from tests.ui.demo import XSS
from tests.ui.server import Client, serve


@pytest.fixture
def client(backend: Any, runs: dict[str, str]) -> Iterator[Client]:
    with serve(sayiir.ui.app(backend, token=TOKEN)) as base:
        yield Client(base)


def _csrf(page: str) -> str:
    match = re.search(r'data-csrf="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


def _sign_in(client: Client) -> None:
    page = client.get("/login")
    reply = client.post("/login", {"token": TOKEN, "csrf_token": _csrf(page.text)})
    assert reply.status == 303, reply.text


def _act(client: Client, run: str, action: str, **fields: str) -> Any:
    page = client.get(f"/runs/{run}")
    data = {"csrf_token": _csrf(page.text), "run": run, "action": action, **fields}
    return client.post("/act", data)


def _status(backend: Any, run: str) -> str:
    detail = backend.run_detail(run)
    assert detail is not None
    return str(detail.run.status)


def test_the_runs_page_lists_filters_sorts_and_pages(client: Client, runs: dict[str, str]) -> None:
    page = client.get("/runs")
    assert page.status == 200
    assert runs["waiting"] in page.text and "report-000" in page.text
    failed = client.get("/runs?status=failed")
    assert runs["failed"] in failed.text and runs["waiting"] not in failed.text
    assert "1 run match" in failed.text
    by_id = client.get("/runs?sort=instance_id&dir=asc&limit=5")
    ids = re.findall(r'<tr data-run="([^"]+)"', by_id.text)
    assert ids == sorted(ids) and len(ids) == 5
    cursor = re.search(r'id="next-page" href="[^"?]*\?([^"]+)"', by_id.text)
    assert cursor
    second = client.get("/runs?" + cursor.group(1).replace("&amp;", "&"))
    more = re.findall(r'<tr data-run="([^"]+)"', second.text)
    assert more and min(more) > max(ids)  # keyset: the next rows, none repeated


def test_run_detail_shows_steps_graph_errors_and_escaped_payloads(
    client: Client, runs: dict[str, str]
) -> None:
    page = client.get(f"/runs/{runs['failed']}")
    assert page.status == 200
    assert "order o-99 has no items" in page.text  # the error of each attempt
    assert 'data-key="validate" data-status="failed"' in page.text  # the graph's node
    waiting = client.get(f"/runs/{runs['waiting']}")
    assert 'data-status="waiting"' in waiting.text  # the signal wait it is parked on
    assert client.get("/runs/no-such-run").status == 404
    xss = client.get(f"/runs/{runs['xss']}")
    assert XSS not in xss.text and "<script>document.title" not in xss.text
    assert "&lt;script&gt;document.title" in xss.text
    full = client.get(f"/payload?run={runs['xss']}&what=input")
    assert "<script>" not in full.text and "&lt;script&gt;" in full.text


def test_read_only_until_signed_in(client: Client, backend: Any, runs: dict[str, str]) -> None:
    run = runs["waiting"]
    page = client.get(f"/runs/{run}")
    assert "Sign in" in page.text and 'id="action-cancel"' not in page.text
    refused = _act(client, run, "cancel")
    assert refused.status == 403 and "read-only" in refused.text
    assert _status(backend, run) == "awaiting_signal"
    wrong = client.post("/login", {"token": "not-it", "csrf_token": _csrf(page.text)})
    assert wrong.status == 401
    _sign_in(client)
    assert 'id="action-cancel"' in client.get(f"/runs/{run}").text
    done = _act(client, run, "cancel", reason="duplicate order")
    assert done.status == 303
    assert _status(backend, run) == "cancelled"
    audit = backend.list_audit(run)
    assert [(a.actor, a.action) for a in audit] == [("token", "cancel")]
    assert "duplicate order" in client.get(f"/runs/{run}").text  # shown in the audit


def test_every_action_needs_a_valid_csrf_token_and_the_same_origin(
    client: Client, backend: Any, runs: dict[str, str]
) -> None:
    _sign_in(client)
    run = runs["waiting"]
    base = {"run": run, "action": "cancel"}
    assert client.post("/act", base).status == 403
    assert client.post("/act", {**base, "csrf_token": "forged.0000"}).status == 403
    csrf = _csrf(client.get(f"/runs/{run}").text)
    evil = client.post("/act", {**base, "csrf_token": csrf}, {"Origin": "http://evil.example"})
    assert evil.status == 403
    assert _status(backend, run) == "awaiting_signal"
    assert client.post("/act", {**base, "csrf_token": csrf}).status == 303
    assert _status(backend, run) == "cancelled"


def test_a_script_acts_with_the_bearer_token(
    client: Client, backend: Any, runs: dict[str, str]
) -> None:
    run = runs["waiting"]
    data = {"run": run, "action": "pause"}
    assert client.post("/act", data, {"Authorization": "Bearer wrong-token"}).status == 403
    assert client.post("/act", data, {"Authorization": f"Bearer {TOKEN}"}).status == 303
    assert _status(backend, run) == "paused"


def test_signal_payloads_are_checked_json(
    client: Client, backend: Any, runs: dict[str, str]
) -> None:
    _sign_in(client)
    run = runs["waiting"]
    bad = _act(client, run, "signal", signal="approved", payload="{not json")
    assert bad.status == 303 and "not+valid+JSON" in bad.headers["location"]
    assert not backend.run_detail(run).signals
    good = _act(client, run, "signal", signal="approved", payload='{"by": "bob"}')
    assert good.status == 303
    signals = backend.run_detail(run).signals
    assert [(s.name, s.state) for s in signals] == [("approved", "pending")]


def test_disabled_actions_and_the_auth_hook(backend: Any, runs: dict[str, str]) -> None:
    def auth(request: Any) -> str | None:
        user: str | None = request.headers.get("x-user")
        return user

    app = sayiir.ui.app(backend, token=None, auth=auth, disable=["cancel"])
    with serve(app) as base:
        client = Client(base)
        run = runs["waiting"]
        page = client.get(f"/runs/{run}", {"X-User": "alice"})
        assert "operator: <b>alice</b>" in page.text and 'id="action-cancel"' not in page.text
        data = {"run": run, "action": "pause", "csrf_token": _csrf(page.text)}
        assert client.post("/act", data).status == 403  # no user: read-only
        assert client.post("/act", {**data, "action": "cancel"}, {"X-User": "alice"}).status == 403
        assert client.post("/act", data, {"X-User": "alice"}).status == 303
    assert _status(backend, run) == "paused"
    assert [(a.actor, a.action) for a in backend.list_audit(run)] == [("alice", "pause")]


def test_bulk_action_previews_then_acts(client: Client, backend: Any, runs: dict[str, str]) -> None:
    _sign_in(client)
    query = "status=awaiting_signal&workflow=order&action=pause"
    preview = client.get(f"/bulk?{query}")
    waiting = backend.count_runs(RunFilter(status=("awaiting_signal",), workflow_id="order"))[0]
    assert waiting > 1
    assert f'id="bulk-count">{waiting}<' in preview.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', preview.text))
    done = client.post("/bulk", fields)
    assert done.status == 200 and f"{waiting} runs done" in done.text
    assert backend.count_runs(RunFilter(status=("paused",), workflow_id="order"))[0] == waiting + 1


def test_pages_carry_security_headers_and_cookies_are_strict(client: Client) -> None:
    page = client.get("/runs")
    assert page.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_the_other_pages_render(client: Client, runs: dict[str, str]) -> None:
    workflows = client.get("/workflows")
    assert "nightly-report" in workflows.text
    definition = re.search(r'href="/workflows/([0-9a-f]+)"', workflows.text)
    assert definition
    assert "<svg" in client.get(f"/workflows/{definition.group(1)}").text
    stats = client.get("/stats?window=1h")
    assert "status-chart" in stats.text
    static = client.get("/static/htmx-2.0.11.min.js")
    assert static.status == 200 and "htmx" in static.text


def test_mounted_in_a_host_application_under_a_prefix(backend: Any, runs: dict[str, str]) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    host = Starlette(
        routes=[
            Route("/", lambda request: PlainTextResponse("the host app")),
            Mount("/ops/sayiir", app=sayiir.ui.app(backend, token=TOKEN)),
        ]
    )
    with serve(host) as base:
        client = Client(base)
        assert client.get("/").text == "the host app"
        page = client.get("/ops/sayiir/runs")
        assert page.status == 200 and runs["waiting"] in page.text
        links = re.findall(r'(?:href|src|action|data-events)="(/[^"]*)"', page.text)
        assert links and all(link.startswith("/ops/sayiir/") for link in links), links
        assert client.get("/ops/sayiir/static/console.js").status == 200
        assert "Path=/ops/sayiir" in page.headers["set-cookie"]
        login = client.post("/ops/sayiir/login", {"token": TOKEN, "csrf_token": _csrf(page.text)})
        assert login.status == 303 and login.headers["location"] == "/ops/sayiir/runs"
        run = runs["waiting"]
        detail = client.get(f"/ops/sayiir/runs/{run}")
        data = {"run": run, "action": "pause", "csrf_token": _csrf(detail.text)}
        done = client.post("/ops/sayiir/act", data)
        assert done.status == 303 and done.headers["location"].startswith("/ops/sayiir/runs/")
    assert _status(backend, run) == "paused"


def test_retry_and_fork_from_the_run_page(
    client: Client, backend: Any, runs: dict[str, str]
) -> None:
    _sign_in(client)
    failed = runs["failed"]
    page = client.get(f"/runs/{failed}")
    assert 'id="action-retry"' in page.text and 'id="action-cancel"' not in page.text
    retried = _act(client, failed, "retry")
    assert retried.status == 303 and "error=" not in retried.headers["location"]
    assert _status(backend, failed) == "in_progress"
    source = runs["completed"]
    forked = _act(client, source, "fork", from_step="merge", new_id="order-000-again")
    assert forked.status == 303
    assert forked.headers["location"].startswith("/runs/order-000-again?message=forked")
    detail = backend.run_detail("order-000-again")
    assert detail is not None
    assert {s.key for s in detail.steps} == {"validate", "charge", "reserve"}  # before merge
    actions = [(a.actor, a.action) for a in backend.list_audit(source)]
    assert ("token", "fork") in actions
    refused = _act(client, source, "fork", from_step="no-such-step")
    assert "error=" in refused.headers["location"]
