"""Run concurrency limits: how many runs of a workflow, or of one key of it, run at once.

A workflow built with ``Flow(..., max_concurrent_runs=N)`` or ``Flow(...,
concurrency_key=fn, max_concurrent=N)`` has ``RunLimits``. Each submitted run gets one
concurrency key (the workflow's id, or the workflow's id and ``fn(input)``) and its limit; a
worker starts the run only when fewer than the limit of runs with that key hold a slot (a run
holds its slot from its first claim until it finishes). The backends enforce it in the claim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ConcurrencyState", "RunLimits"]


@dataclass(frozen=True, slots=True)
class RunLimits:
    """The run limit of a workflow: ``max_concurrent_runs`` for all its runs, or
    ``max_concurrent`` per value of ``concurrency_key(input)``.

    >>> RunLimits.of(max_concurrent_runs=2).key_for("orders", {"customer_id": 7})
    ('orders', 2)
    >>> per_customer = RunLimits.of(concurrency_key=lambda o: o["customer_id"], max_concurrent=1)
    >>> per_customer.key_for("orders", {"customer_id": 7})
    ('orders:7', 1)
    """

    limit: int
    key: Callable[[Any], Any] | None = None

    @classmethod
    def of(
        cls,
        *,
        max_concurrent_runs: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        max_concurrent: int | None = None,
    ) -> RunLimits | None:
        """Validate the ``Flow`` options; ``None`` when no limit is asked for."""
        if concurrency_key is None and max_concurrent is not None:
            raise ValueError("max_concurrent limits runs per concurrency_key: give one too")
        if concurrency_key is not None:
            if not callable(concurrency_key):
                raise TypeError("concurrency_key must be a function of the run's input")
            if max_concurrent_runs is not None:
                # Two slots per run cannot be taken all-or-nothing in PostgreSQL's one-statement
                # claim (docs/flow-control.md, "Why not a per-key and a workflow-wide limit").
                raise ValueError(
                    "give either max_concurrent_runs (all runs of the workflow) or "
                    "concurrency_key with max_concurrent (per key), not both: the two "
                    "together are not supported (docs/flow-control.md says why); to cap the "
                    "work of a per-key-limited workflow, cap the concurrency of its workers"
                )
            return cls(_count("max_concurrent", 1 if max_concurrent is None else max_concurrent),
                       concurrency_key)  # fmt: skip
        if max_concurrent_runs is None:
            return None
        return cls(_count("max_concurrent_runs", max_concurrent_runs))

    def key_for(self, workflow_id: str, value: Any) -> tuple[str, int]:
        """The concurrency key of a run of ``workflow_id`` with input ``value``, and its limit."""
        if self.key is None:
            return workflow_id, self.limit
        try:
            part = self.key(value)
        except Exception as exc:
            raise ValueError(
                f"concurrency_key of workflow {workflow_id!r} raised on this input: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return f"{workflow_id}:{part}", self.limit


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


@dataclass(frozen=True, slots=True)
class ConcurrencyState:
    """Where a queued run with a concurrency key stands (``WorkflowClient.waiting_reason``):
    its key and limit, the unfinished runs holding a slot of it, and whether it holds one."""

    key: str
    limit: int
    holders: tuple[str, ...]
    holds_slot: bool

    def reason(self) -> str | None:
        """Why the run waits, for operators; ``None`` when the limit does not hold it back.

        >>> ConcurrencyState("orders:7", 1, ("order-1",), False).reason()
        "queued: concurrency key 'orders:7' is at its limit (1 of 1 held by order-1)"
        """
        if self.holds_slot or len(self.holders) < self.limit:
            return None
        shown = ", ".join(self.holders[:3]) + (", ..." if len(self.holders) > 3 else "")
        return (
            f"queued: concurrency key {self.key!r} is at its limit "
            f"({len(self.holders)} of {self.limit} held by {shown})"
        )
