"""Task options: the retry policy and the metadata attached by ``@task``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sayiir.core.task_limits import TaskLimits

__all__ = ["RetryPolicy", "TaskMetadata"]


class RetryPolicy:
    """How often a failed task is retried and how long to wait in between.

    A task with ``RetryPolicy(max_retries=N)`` runs at most N + 1 times; the wait
    before retry k is ``initial_delay_secs * backoff_multiplier ** (k - 1)``.

    >>> RetryPolicy(max_retries=3, initial_delay_secs=0.5).delay_for(2)
    1.0
    """

    __slots__ = ("backoff_multiplier", "initial_delay_secs", "max_retries")

    def __init__(
        self,
        max_retries: int = 2,
        initial_delay_secs: float = 1.0,
        backoff_multiplier: float = 2.0,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise TypeError(f"max_retries must be an int, not {type(max_retries).__name__}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be non-negative, got {max_retries}")
        if initial_delay_secs < 0 or backoff_multiplier < 0:
            raise ValueError("initial_delay_secs and backoff_multiplier must be non-negative")
        self.max_retries = max_retries
        self.initial_delay_secs = float(initial_delay_secs)
        self.backoff_multiplier = float(backoff_multiplier)

    def delay_for(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return self.initial_delay_secs * self.backoff_multiplier ** (retry - 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPolicy):
            return NotImplemented
        return (self.max_retries, self.initial_delay_secs, self.backoff_multiplier) == (
            other.max_retries,
            other.initial_delay_secs,
            other.backoff_multiplier,
        )

    def __hash__(self) -> int:
        return hash((self.max_retries, self.initial_delay_secs, self.backoff_multiplier))

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(max_retries={self.max_retries}, "
            f"initial_delay_secs={self.initial_delay_secs}, "
            f"backoff_multiplier={self.backoff_multiplier})"
        )


class TaskMetadata:
    """Options of one task, as set by ``@task`` or built by hand.

    >>> TaskMetadata(timeout_secs=30.0, tags=["io"]).tags
    ['io']
    """

    __slots__ = (
        "description",
        "display_name",
        "limits",
        "priority",
        "retries",
        "tags",
        "timeout_secs",
        "version",
    )

    def __init__(
        self,
        display_name: str | None = None,
        description: str | None = None,
        timeout_secs: float | None = None,
        retries: RetryPolicy | None = None,
        tags: list[str] | None = None,
        version: str | None = None,
        priority: int | None = None,
        limits: TaskLimits | None = None,
    ) -> None:
        self.display_name = display_name
        self.description = description
        self.timeout_secs = timeout_secs
        self.retries = retries
        self.tags = tags
        self.version = version
        self.priority = priority
        # ``@task(max_concurrent=..., rate_limit=...)`` (``sayiir.core.task_limits``).
        self.limits = limits

    def copy(self) -> TaskMetadata:
        """An independent copy (the runtime context must not share mutable lists)."""
        return TaskMetadata(
            self.display_name,
            self.description,
            self.timeout_secs,
            self.retries,
            list(self.tags) if self.tags is not None else None,
            self.version,
            self.priority,
            self.limits,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskMetadata):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{s}={getattr(self, s)!r}" for s in TaskMetadata.__slots__ if getattr(self, s)
        )
        return f"TaskMetadata({fields})"
