"""What an operator may do to a run: the form's request, handed to the shared actions.

The console only parses and checks the request (who, CSRF, which action is enabled); the
action itself and its audit entry are ``sayiir.console.actions``' job, so the CLI and the
console act exactly the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sayiir.console import actions as ops
from sayiir.core.queries import RunFilter

__all__ = ["ACTIONS", "BULK_ACTIONS", "ActionRequest", "bulk", "parse_payload", "perform"]

ACTIONS = ("cancel", "pause", "unpause", "signal", "retry", "fork")
BULK_ACTIONS = ("cancel", "pause", "unpause", "retry")
_WITH_REASON = ("cancel", "pause")


@dataclass(frozen=True)
class ActionRequest:
    """One action on one run, as the form sent it."""

    action: str
    instance_id: str
    actor: str
    reason: str | None = None
    signal_name: str | None = None
    payload: Any = None
    from_step: str | None = None
    new_id: str | None = None


def parse_payload(text: str) -> Any:
    """The signal payload typed in the JSON editor; ``ValueError`` says where it is wrong.

    >>> parse_payload('{"approved": true}')
    {'approved': True}
    >>> parse_payload("")
    """
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"the payload is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def perform(backend: Any, request: ActionRequest) -> ops.ActionResult:
    """Do ``request`` (audited); ``ActionError`` when the run's state refuses it."""
    iid, actor = request.instance_id, request.actor
    if request.action in _WITH_REASON:
        act = ops.cancel if request.action == "cancel" else ops.pause
        return act(backend, iid, actor=actor, reason=request.reason)
    if request.action == "unpause":
        return ops.unpause(backend, iid, actor=actor)
    if request.action == "retry":
        return ops.retry(backend, iid, actor=actor)
    if request.action == "signal":
        if not request.signal_name:
            raise ValueError("a signal needs a name")
        return ops.signal(backend, iid, request.signal_name, request.payload, actor=actor)
    if request.action == "fork":
        if not request.from_step:
            raise ValueError("choose the step to fork from")
        return ops.fork(backend, iid, request.from_step, actor=actor, new_id=request.new_id)
    raise ValueError(f"unknown action {request.action!r}: use one of {', '.join(ACTIONS)}")


def bulk(
    backend: Any, action: str, run_filter: RunFilter, actor: str, reason: str | None
) -> ops.BulkResult:
    """Apply ``action`` to every run ``run_filter`` matches (each audited)."""
    options: dict[str, Any] = {"reason": reason} if action in _WITH_REASON else {}
    return ops.bulk(backend, action, run_filter, actor=actor, **options)
