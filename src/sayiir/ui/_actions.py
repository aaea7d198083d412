"""What an operator may do to a run, in one place for single runs and bulk actions.

The console only parses and checks the request (who, CSRF, which action is enabled); the
action itself and its audit entry are the shared actions module's job, so the CLI and the
console act the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sayiir.core.queries import AuditEntry, RunFilter, RunSort

__all__ = [
    "ACTIONS",
    "AVAILABLE",
    "BULK_ACTIONS",
    "ActionRequest",
    "matching_runs",
    "parse_payload",
    "perform",
]

ACTIONS = ("cancel", "pause", "unpause", "signal", "retry", "fork")
# What this version performs (retry and fork come with the shared actions module).
AVAILABLE = frozenset({"cancel", "pause", "unpause", "signal"})
BULK_ACTIONS = ("cancel", "pause", "unpause", "retry")
BULK_MAX = 10_000  # one bulk action touches at most this many runs (the preview says so)


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


def perform(backend: Any, request: ActionRequest) -> str:
    """Do ``request`` and record it in the audit; return a one-line result for the page."""
    from sayiir.engine.engines import DurableEngine

    engine = DurableEngine(backend)
    iid = request.instance_id
    detail: dict[str, Any] = {}
    if request.action == "cancel":
        engine.cancel(iid, request.reason, request.actor)
        message = "cancel requested"
    elif request.action == "pause":
        engine.pause(iid, request.reason, request.actor)
        message = "pause requested"
    elif request.action == "unpause":
        engine.unpause(iid)
        message = "unpaused"
    elif request.action == "signal":
        if not request.signal_name:
            raise ValueError("a signal needs a name")
        engine.send_signal(iid, request.signal_name, request.payload)
        detail = {"signal": request.signal_name}
        message = f"signal {request.signal_name!r} sent"
    else:
        raise ValueError(f"{request.action} is not available in this version of the console")
    if request.reason:
        detail["reason"] = request.reason
    record = getattr(backend, "record_audit", None)
    if callable(record):
        record(AuditEntry(datetime.now(UTC), request.actor, request.action, iid, detail))
    return message


def matching_runs(backend: Any, run_filter: RunFilter, limit: int = BULK_MAX) -> Iterator[str]:
    """The ids of the runs ``run_filter`` matches, page by page (keyset), at most ``limit``."""
    cursor: str | None = None
    seen = 0
    while seen < limit:
        page = backend.list_runs(
            run_filter, RunSort("created_at", True), cursor, min(500, limit - seen)
        )
        for run in page.runs:
            yield run.instance_id
        seen += len(page.runs)
        cursor = page.next_cursor
        if cursor is None:
            return
