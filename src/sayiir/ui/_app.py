"""The console's ASGI application: routes, templates, the guard and the change feed."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from sayiir.ui._actions import ACTIONS
from sayiir.ui._charts import fmt_secs
from sayiir.ui._live import ChangeFeed
from sayiir.ui._security import CSRF_COOKIE, CSRF_FIELD, AuthHook, Guard

__all__ = ["Console", "create_app"]

HERE = Path(__file__).parent
ASSET_VERSION = "2"  # in the static URLs: bump when a static file changes (cache busting)


def _fmt_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return fmt_secs((end - start).total_seconds())


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    secs = (datetime.now(UTC) - value).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{secs / size:.0f} {unit} ago"
    return f"{max(secs, 0):.0f} s ago"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped unless a template says |safe (our SVGs)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = _fmt_time
    env.filters["ago"] = _ago
    env.globals["duration"] = _fmt_duration
    return env


@dataclass
class Console:
    """Everything a request handler needs: the backend, the guard, templates, the feed."""

    backend: Any
    guard: Guard
    title: str
    disabled: frozenset[str]
    feed: ChangeFeed
    templates: Jinja2Templates
    poll_interval: float
    extra: dict[str, Any] = field(default_factory=dict)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking backend call in a worker thread."""
        return await run_in_threadpool(fn, *args, **kwargs)

    def enabled(self, action: str) -> bool:
        return action not in self.disabled

    async def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> Response:
        operator = await self.guard.operator(request)
        csrf = request.cookies.get(CSRF_COOKIE, "")
        fresh = not self.guard.valid_csrf(csrf)
        if fresh:
            csrf = self.guard.new_csrf()
        context.update(
            console=self,
            base=request.scope.get("root_path", ""),
            operator=operator,
            csrf_token=csrf,
            csrf_field=CSRF_FIELD,
            nav=context.get("nav", ""),
            asset_version=ASSET_VERSION,
            now=datetime.now(UTC),
        )
        response = self.templates.TemplateResponse(request, template, context, status_code)
        if fresh:
            response.set_cookie(
                CSRF_COOKIE, csrf, httponly=True, samesite="strict", path=_cookie_path(request)
            )
        response.headers["cache-control"] = "no-store"
        return response


def _cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")) or "/"


class _SecurityHeaders:
    """Headers every response carries: no framing, no sniffing, scripts only from us."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                        b"script-src 'self'; frame-ancestors 'none'; form-action 'self'",
                    ),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    backend: Any,
    *,
    token: str | None = None,
    auth: AuthHook | None = None,
    disable: Iterable[str] = (),
    title: str = "sayiir",
    poll_interval: float = 1.0,
    batch_secs: float = 0.25,
    secret: bytes | None = None,
) -> Starlette:
    """Build the console for ``backend`` (see ``sayiir.ui.app`` for the parameters)."""
    from sayiir.ui import _operate, _pages

    disabled = frozenset(disable)
    unknown = sorted(disabled - set(ACTIONS))
    if unknown:
        raise ValueError(f"unknown action {unknown[0]!r} to disable: use some of {ACTIONS}")
    if token is not None and len(token) < 12:
        raise ValueError(
            "the operator token is too short (fewer than 12 characters): generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`"
        )
    guard = Guard(token=token, auth=auth, secret=secret or secrets.token_bytes(32))
    console = Console(
        backend=backend,
        guard=guard,
        title=title,
        disabled=disabled,
        feed=ChangeFeed(
            backend, poll_interval=poll_interval, batch_secs=batch_secs, run_sync=run_in_threadpool
        ),
        templates=Jinja2Templates(env=_environment()),
        poll_interval=poll_interval,
    )
    routes = [
        Route("/", lambda request: RedirectResponse(_url(request, "/runs")), name="home"),
        *_pages.routes(),
        *_operate.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders)])
    app.state.console = console
    return app


def _url(request: Request, path: str) -> str:
    return f"{request.scope.get('root_path', '')}{path}"


def env_token() -> str | None:
    """The operator token from ``SAYIIR_UI_TOKEN`` (``None`` when unset or empty)."""
    return os.environ.get("SAYIIR_UI_TOKEN") or None
