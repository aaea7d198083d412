"""The write side: sign in and out, actions on one run, bulk actions with a preview.

Every POST passes the same gate (``_gate``): an operator (token cookie or header, or the
host's auth hook), a valid CSRF token, a same-origin request, and an action not disabled.
Anything else is refused with 403 and changes nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode, urlparse

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from sayiir.errors import WorkflowError
from sayiir.ui._actions import BULK_ACTIONS, ActionRequest, bulk, parse_payload, perform
from sayiir.ui._app import Console
from sayiir.ui._forms import ListView
from sayiir.ui._security import CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER, OPERATOR_COOKIE

__all__ = ["routes"]

PREVIEW_ROWS = 20
COUNT_CAP = 10_000  # the preview counts the matching runs up to this many


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _run_url(request: Request, instance_id: str, **params: str) -> str:
    query = f"?{urlencode(params)}" if params else ""
    return f"{_base(request)}/runs/{quote(instance_id, safe='')}{query}"


def _same_origin(request: Request) -> bool:
    """A browser's POST says where it comes from; it must be this console's host."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # not a browser (curl, a script with the bearer token)
    return urlparse(origin).netloc == request.headers.get("host", "")


async def _gate(
    request: Request, console: Console, form: FormData, action: str | None
) -> tuple[str | None, Response | None]:
    """The operator's name, or the refusal to send instead."""
    submitted = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, ""))
    cookie = request.cookies.get(CSRF_COOKIE, "")
    scripted = console.guard.auth is None and console.guard.bearer(request)
    forged = not console.guard.check_csrf(cookie, submitted) or not _same_origin(request)
    if forged and not scripted:
        return None, await _refuse(request, console, "the form expired or came from another site: "
                                   "reload the page and try again")  # fmt: skip
    if action is None:
        return "", None
    operator = await console.guard.operator(request)
    if operator is None:
        why = (
            "this console is read-only: sign in with the operator token"
            if console.guard.writable
            else "this console is read-only: start it with SAYIIR_UI_TOKEN set to enable actions"
        )
        return None, await _refuse(request, console, why)
    if not console.enabled(action):
        return None, await _refuse(request, console, f"the {action} action is disabled here")
    return operator, None


async def _refuse(request: Request, console: Console, message: str) -> Response:
    return await console.render(request, "error.html", 403, nav="runs", message=message)


async def act(request: Request) -> Response:
    console: Console = request.app.state.console
    form = await request.form()
    action = str(form.get("action", ""))
    instance_id = str(form.get("run", ""))
    operator, refusal = await _gate(request, console, form, action)
    if refusal is not None:
        return refusal
    assert operator is not None
    try:
        payload = parse_payload(str(form.get("payload", ""))) if action == "signal" else None
        req = ActionRequest(
            action=action,
            instance_id=instance_id,
            actor=operator,
            reason=str(form.get("reason", "")).strip() or None,
            signal_name=str(form.get("signal", "")).strip() or None,
            payload=payload,
            from_step=str(form.get("from_step", "")).strip() or None,
            new_id=str(form.get("new_id", "")).strip() or None,
        )
        result = await console.call(perform, console.backend, req)
    except (WorkflowError, ValueError, LookupError) as exc:
        return RedirectResponse(_run_url(request, instance_id, error=str(exc)), 303)
    console.feed.note(instance_id)
    if result.new_instance_id:  # a fork: show the new run
        message = f"forked from {instance_id}: {result.message}"
        return RedirectResponse(_run_url(request, result.new_instance_id, message=message), 303)
    return RedirectResponse(_run_url(request, instance_id, message=result.message), 303)


async def sign_in(request: Request) -> Response:
    console: Console = request.app.state.console
    if request.method == "GET":
        return await console.render(request, "login.html", nav="", error="")
    form = await request.form()
    _, refusal = await _gate(request, console, form, None)
    if refusal is not None:
        return refusal
    if not console.guard.can_sign_in:
        return await _refuse(request, console, "this console has no operator token to sign in with")
    if not console.guard.token_matches(str(form.get("token", ""))):
        return await console.render(
            request, "login.html", 401, nav="", error="that is not the operator token"
        )
    response = RedirectResponse(f"{_base(request)}/runs", 303)
    response.set_cookie(
        OPERATOR_COOKIE,
        console.guard.cookie_value(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=_base(request) or "/",
    )
    return response


async def sign_out(request: Request) -> Response:
    console: Console = request.app.state.console
    form = await request.form()
    _, refusal = await _gate(request, console, form, None)
    if refusal is not None:
        return refusal
    response = RedirectResponse(f"{_base(request)}/runs", 303)
    response.delete_cookie(OPERATOR_COOKIE, path=_base(request) or "/")
    return response


def _preview(backend: Any, view: ListView) -> tuple[list[Any], int, bool]:
    page = backend.list_runs(view.filter, view.sort, None, PREVIEW_ROWS)
    count, capped = backend.count_runs(view.filter, cap=COUNT_CAP)
    return page.runs, count, capped


async def bulk_page(request: Request) -> Response:
    """GET: what a bulk action would touch (a preview); POST: do it."""
    console: Console = request.app.state.console
    source = request.query_params if request.method == "GET" else await request.form()
    view = ListView.from_query({k: [str(v) for v in source.getlist(k)] for k in source})
    action = str(source.get("action", ""))
    if action not in BULK_ACTIONS or not console.enabled(action):
        return await console.render(
            request, "error.html", 400, nav="runs",
            message=f"{action!r} is not a bulk action available here "
            f"(bulk actions: {', '.join(a for a in BULK_ACTIONS if console.enabled(a))})",
        )  # fmt: skip
    context: dict[str, Any] = {"view": view, "action": action, "count_cap": COUNT_CAP}
    if request.method == "GET":
        runs, count, capped = await console.call(_preview, console.backend, view)
        return await console.render(
            request, "bulk.html", nav="runs", runs=runs, count=count, capped=capped,
            result=None, **context,
        )  # fmt: skip
    assert isinstance(source, FormData)
    operator, refusal = await _gate(request, console, source, action)
    if refusal is not None:
        return refusal
    assert operator is not None
    reason = str(source.get("reason", "")).strip() or None
    outcome = await console.call(bulk, console.backend, action, view.filter, operator, reason)
    result = {"done": len(outcome.done), "failed": sorted(outcome.refused.items())}
    console.feed.note(None)
    return await console.render(
        request, "bulk.html", nav="runs", runs=[], count=0, capped=False, result=result,
        **context,
    )  # fmt: skip


def routes() -> list[Route]:
    return [
        Route("/act", act, methods=["POST"], name="act"),
        Route("/bulk", bulk_page, methods=["GET", "POST"], name="bulk"),
        Route("/login", sign_in, methods=["GET", "POST"], name="login"),
        Route("/logout", sign_out, methods=["POST"], name="logout"),
    ]
