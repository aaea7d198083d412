"""The read-only pages: runs, one run (steps, timeline, graph), workflows, stats, events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sayiir.core.queries import PUBLIC_STATUSES, SORT_COLUMNS, RunDetail
from sayiir.errors import WorkflowError
from sayiir.ui._app import Console
from sayiir.ui._charts import STATUS_ORDER, gantt, status_chart
from sayiir.ui._forms import ListView
from sayiir.ui._graph import render_svg
from sayiir.ui._live import sse_stream

__all__ = ["routes"]

STEPS_PER_PAGE = 200
PREVIEW_BYTES = 1024
WINDOWS = {"1h": (3600, 120), "24h": (86400, 3600), "7d": (7 * 86400, 6 * 3600)}


def _load_list(backend: Any, view: ListView) -> dict[str, Any]:
    errors = list(view.errors)
    try:
        page = backend.list_runs(view.filter, view.sort, view.cursor, view.limit)
    except ValueError as exc:  # a stale or edited cursor: show the first page and say so
        errors.append(str(exc))
        page = backend.list_runs(view.filter, view.sort, None, view.limit)
    count, capped = backend.count_runs(view.filter, cap=1000)
    workflows = sorted({d.workflow_id for d in backend.list_definitions()})
    return {"page": page, "count": count, "capped": capped, "workflows": workflows,
            "errors": errors}  # fmt: skip


def _definition_svg(backend: Any, detail: RunDetail) -> str:
    info = backend.get_definition(detail.run.definition_hash)
    if info is None:
        return ""
    steps = {s.key: s.status for s in detail.steps}
    return render_svg(info.structure, steps, detail.signal_name)


async def runs_page(request: Request) -> Response:
    console: Console = request.app.state.console
    view = ListView.from_query({k: request.query_params.getlist(k) for k in request.query_params})
    data = await console.call(_load_list, console.backend, view)
    return await console.render(
        request,
        "runs.html",
        nav="runs",
        view=view,
        statuses=PUBLIC_STATUSES,
        columns=SORT_COLUMNS,
        **data,
    )


async def run_page(request: Request) -> Response:
    console: Console = request.app.state.console
    instance_id = request.path_params["instance_id"]
    steps_cursor = request.query_params.get("steps") or None
    failed_only = request.query_params.get("failed") == "1"

    def load() -> tuple[RunDetail | None, str]:
        detail = console.backend.run_detail(
            instance_id,
            steps_cursor=steps_cursor,
            steps_limit=STEPS_PER_PAGE,
            preview_bytes=PREVIEW_BYTES,
        )
        return detail, (_definition_svg(console.backend, detail) if detail else "")

    try:
        detail, svg = await console.call(load)
    except ValueError as exc:
        return await console.render(request, "error.html", 400, nav="runs", message=str(exc))
    if detail is None:
        return await console.render(
            request, "error.html", 404, nav="runs", message=f"no run {instance_id!r}"
        )
    steps = [s for s in detail.steps if s.status == "failed"] if failed_only else detail.steps
    return await console.render(
        request,
        "run.html",
        nav="runs",
        detail=detail,
        run=detail.run,
        steps=steps,
        failed_only=failed_only,
        steps_cursor=steps_cursor,
        graph_svg=svg,
        gantt_svg=gantt(steps),
        message=request.query_params.get("message", ""),
        error=request.query_params.get("error", ""),
    )


async def payload_fragment(request: Request) -> Response:
    """A payload in full, loaded on demand into the run page (htmx)."""
    console: Console = request.app.state.console
    instance_id = request.query_params.get("run", "")
    what = request.query_params.get("what", "")
    key = request.query_params.get("key", "")
    backend = console.backend
    loaders = {
        "input": lambda: backend.run_input(instance_id),
        "output": lambda: backend.run_output(instance_id),
        "step": lambda: backend.step_output(instance_id, key),
    }
    if what not in loaders:
        return Response("what must be input, output or step", status_code=400)
    try:
        value = await console.call(loaders[what])
        text = json.dumps(value, indent=2, ensure_ascii=False, default=repr)
    except (WorkflowError, LookupError, ValueError) as exc:
        text = f"cannot load this payload: {exc}"
    return await console.render(request, "payload.html", text=text)


async def workflows_page(request: Request) -> Response:
    console: Console = request.app.state.console
    definitions = await console.call(console.backend.list_definitions)
    return await console.render(request, "workflows.html", nav="workflows", definitions=definitions)


async def workflow_page(request: Request) -> Response:
    console: Console = request.app.state.console
    info = await console.call(console.backend.get_definition, request.path_params["hash"])
    if info is None:
        return await console.render(
            request, "error.html", 404, nav="workflows", message="no such definition"
        )
    svg = render_svg(info.structure, {})
    return await console.render(request, "workflow.html", nav="workflows", info=info, graph_svg=svg)


async def stats_page(request: Request) -> Response:
    console: Console = request.app.state.console
    window = request.query_params.get("window", "24h")
    if window not in WINDOWS:
        window = "24h"
    span, bucket = WINDOWS[window]
    until = datetime.now(UTC)
    since = until - timedelta(seconds=span)

    def load() -> tuple[Any, Any]:
        return (
            console.backend.status_counts(since, until, bucket),
            console.backend.queue_stats(),
        )

    counts, queue = await console.call(load)
    return await console.render(
        request,
        "stats.html",
        nav="stats",
        window=window,
        windows=list(WINDOWS),
        counts=counts,
        queue=queue,
        order=STATUS_ORDER,
        chart_svg=status_chart(counts.buckets, bucket, since, until),
    )


async def events(request: Request) -> Response:
    """Server-sent events: one ``change`` event per batch of changed runs."""
    console: Console = request.app.state.console
    return StreamingResponse(
        sse_stream(console.feed),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


def routes() -> list[Route]:
    return [
        Route("/runs", runs_page, name="runs"),
        Route("/payload", payload_fragment, name="payload"),
        Route("/runs/{instance_id:path}", run_page, name="run"),
        Route("/workflows", workflows_page, name="workflows"),
        Route("/workflows/{hash}", workflow_page, name="workflow"),
        Route("/stats", stats_page, name="stats"),
        Route("/events", events, name="events"),
    ]
