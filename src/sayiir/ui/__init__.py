"""The operator web console: runs, their steps and graph, live, with guarded actions.

Needs the ``ui`` extra (``pip install 'sayiir[ui]'``). Serve it on its own::

    SAYIIR_UI_TOKEN=... sayiir ui --url postgresql://db/sayiir      # http://127.0.0.1:8765

or mount it in your own ASGI application (FastAPI, Starlette), behind your own auth::

    from fastapi import FastAPI
    import sayiir.ui

    api = FastAPI()
    api.mount("/sayiir", sayiir.ui.app(backend, auth=lambda request: request.state.user))

It is read-only unless an operator token (``token=`` or ``SAYIIR_UI_TOKEN``) or an ``auth``
hook is configured; every action is CSRF-checked and recorded in the run's audit.

>>> from sayiir import InMemoryBackend
>>> console = app(InMemoryBackend(), token=None)
>>> type(console).__name__
'Starlette'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sayiir.ui._app import create_app, env_token
from sayiir.ui._security import AuthHook

__all__ = ["app", "serve"]

_FROM_ENV: Any = object()


def app(
    backend: Any,
    *,
    token: str | None = _FROM_ENV,
    auth: AuthHook | None = None,
    disable: Iterable[str] = (),
    title: str = "sayiir",
    poll_interval: float = 1.0,
) -> Any:
    """The console for ``backend`` as an ASGI application (a ``starlette.Starlette``).

    ``token``: the operator token that enables actions (default: ``$SAYIIR_UI_TOKEN``;
    ``None``: read-only unless ``auth`` is given). ``auth(request)``: the host application's
    check, returning the operator's name (recorded in the audit) or ``None`` for read-only; it
    may be async, and replaces the token sign-in. ``disable``: actions never allowed here
    (any of ``cancel``, ``pause``, ``unpause``, ``signal``, ``retry``, ``fork``).
    ``poll_interval``: seconds between change polls on backends that cannot push changes
    (SQLite, memory).
    """
    if token is _FROM_ENV:
        token = env_token()
    return create_app(
        backend,
        token=token,
        auth=auth,
        disable=disable,
        title=title,
        poll_interval=poll_interval,
    )


def serve(
    backend: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = _FROM_ENV,
    disable: Iterable[str] = (),
    log_level: str = "info",
) -> None:
    """Serve the console with uvicorn until interrupted (what ``sayiir ui`` runs).

    Binds 127.0.0.1 unless told otherwise: put a TLS proxy in front before exposing it.
    """
    import uvicorn

    console = app(backend, token=token, disable=disable)
    uvicorn.run(console, host=host, port=port, log_level=log_level, access_log=False)
