"""What a loop body returns: continue with a new value, or stop with a final one.

The engine only sees JSON, so a ``LoopResult`` travels as its wire dict
``{"_loop": "again" | "done", "value": v}``; the builder wraps loop bodies with
``loop_envelope`` so that returning the object itself is enough.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

__all__ = ["LoopResult", "OnMax", "loop_envelope"]

T = TypeVar("T")

_TAGS = ("again", "done")


class OnMax(StrEnum):
    """What a loop does when its body still says "again" after ``max_iterations`` runs.

    >>> OnMax.EXIT_WITH_LAST == "exit_with_last"
    True
    """

    FAIL = "fail"
    """Fail the workflow: ``Loop 'loop_0' exceeded max iterations (N)``."""

    EXIT_WITH_LAST = "exit_with_last"
    """Leave the loop with the value carried by the last ``again``."""


class LoopResult(Generic[T]):
    """The return value of a loop body.

    >>> def countdown(n: int) -> LoopResult[int]:
    ...     return LoopResult.done(n) if n == 0 else LoopResult.again(n - 1)
    >>> countdown(2)
    LoopResult.again(1)
    >>> countdown(0).to_dict()
    {'_loop': 'done', 'value': 0}
    """

    __slots__ = ("_tag", "_value")

    def __init__(self, tag: str, value: T) -> None:
        if tag not in _TAGS:
            raise ValueError(f"LoopResult tag must be 'again' or 'done', got {tag!r}")
        self._tag = tag
        self._value: T = value

    @classmethod
    def again(cls, value: T) -> LoopResult[T]:
        """Run the body again, on ``value``."""
        return cls("again", value)

    @classmethod
    def done(cls, value: T) -> LoopResult[T]:
        """Leave the loop; ``value`` becomes the loop step's output."""
        return cls("done", value)

    @property
    def is_done(self) -> bool:
        return self._tag == "done"

    @property
    def is_again(self) -> bool:
        return self._tag == "again"

    @property
    def value(self) -> T:
        return self._value

    def to_dict(self) -> dict[str, Any]:
        """The wire form the engine reads: ``{"_loop": tag, "value": value}``."""
        return {"_loop": self._tag, "value": self._value}

    def __repr__(self) -> str:
        return f"LoopResult.{self._tag}({self._value!r})"


def loop_envelope(value: Any) -> Any:
    """Turn a ``LoopResult`` into its wire dict; return anything else unchanged.

    Other values (wire dicts included) pass through so the engine reports a malformed
    envelope itself, with the reference's message, instead of a wrapper error.

    >>> loop_envelope(LoopResult.again(1))
    {'_loop': 'again', 'value': 1}
    """
    if isinstance(value, LoopResult):
        return value.to_dict()
    return value
