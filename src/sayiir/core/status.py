"""``WorkflowStatus``: what a durable run, a resume or a client status call returns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["WorkflowStatus", "format_wake_at"]


def format_wake_at(ts: float | None) -> str | None:
    """RFC 3339 UTC with nanosecond digits, as the reference prints it."""
    if ts is None:
        return None
    # ``isoformat`` ends in ``.ffffff+00:00``; strftime made this 3x slower (every parked run).
    iso = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="microseconds")
    return iso[:-6] + "000+00:00"


def _opt(value: str | None) -> str:
    return "None" if value is None else f'Some("{value}")'


class WorkflowStatus:
    """Outcome of a durable run.

    >>> from sayiir import Flow, run_durable_workflow
    >>> wf = Flow("double").then(lambda x: x * 2, name="double").build()
    >>> status = run_durable_workflow(wf, "order-1", 42)
    >>> status.is_completed(), status.output
    (True, 84)
    """

    __slots__ = (
        "cancelled_by",
        "delay_id",
        "error",
        "output",
        "paused_by",
        "reason",
        "signal_id",
        "signal_name",
        "status",
        "wake_at",
    )

    def __init__(
        self,
        status: str,
        *,
        output: Any = None,
        error: str | None = None,
        reason: str | None = None,
        cancelled_by: str | None = None,
        paused_by: str | None = None,
        wake_at: str | None = None,
        delay_id: str | None = None,
        signal_id: str | None = None,
        signal_name: str | None = None,
    ) -> None:
        self.status = status
        self.output = output
        self.error = error
        self.reason = reason
        self.cancelled_by = cancelled_by
        self.paused_by = paused_by
        self.wake_at = wake_at
        self.delay_id = delay_id
        self.signal_id = signal_id
        self.signal_name = signal_name

    def is_completed(self) -> bool:
        return self.status == "completed"

    def is_failed(self) -> bool:
        return self.status == "failed"

    def is_cancelled(self) -> bool:
        return self.status == "cancelled"

    def is_paused(self) -> bool:
        return self.status == "paused"

    def is_waiting(self) -> bool:
        return self.status == "waiting"

    def is_awaiting_signal(self) -> bool:
        return self.status == "awaiting_signal"

    def is_in_progress(self) -> bool:
        return self.status == "in_progress"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkflowStatus):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self) -> str:
        s = self.status
        if s == "completed":
            return "WorkflowStatus::Completed"
        if s == "failed":
            return f"WorkflowStatus::Failed({self.error or 'unknown'})"
        if s == "cancelled":
            return (
                f"WorkflowStatus::Cancelled(reason={_opt(self.reason)}, "
                f"by={_opt(self.cancelled_by)})"
            )
        if s == "paused":
            return f"WorkflowStatus::Paused(reason={_opt(self.reason)}, by={_opt(self.paused_by)})"
        if s == "waiting":
            return (
                f"WorkflowStatus::Waiting(delay_id={_opt(self.delay_id)}, "
                f"wake_at={_opt(self.wake_at)})"
            )
        if s == "awaiting_signal":
            return (
                f"WorkflowStatus::AwaitingSignal(signal_name={_opt(self.signal_name)}, "
                f"signal_id={_opt(self.signal_id)}, wake_at={_opt(self.wake_at)})"
            )
        return f"WorkflowStatus::{s}"
