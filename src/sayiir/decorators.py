"""The ``@task`` decorator: attach an id and options to a function, without wrapping it.

Returning the function itself keeps it directly callable in unit tests; the builder
reads the attributes when the function is added to a ``Flow``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar, overload

from sayiir._callables import io_types, mark
from sayiir.core.durations import parse_duration, to_seconds
from sayiir.core.metadata import RetryPolicy, TaskMetadata
from sayiir.core.task_limits import RateLimit, TaskLimits

__all__ = ["parse_duration", "task"]

F = TypeVar("F", bound=Callable[..., Any])

_MAX_TAGS = 20
_MAX_TAG_LEN = 64


@overload
def task(func: F, /) -> F: ...


@overload
def task(
    func: str | None = None,
    *,
    name: str | None = None,
    timeout: str | float | timedelta | None = None,
    timeout_secs: float | None = None,
    retries: int | RetryPolicy | None = None,
    tags: Sequence[str] | None = None,
    description: str | None = None,
    priority: int | None = None,
    max_concurrent: int | None = None,
    rate_limit: RateLimit | None = None,
) -> Callable[[F], F]: ...


def task(
    func: Callable[..., Any] | str | None = None,
    *,
    name: str | None = None,
    timeout: str | float | timedelta | None = None,
    timeout_secs: float | None = None,
    retries: int | RetryPolicy | None = None,
    tags: Sequence[str] | None = None,
    description: str | None = None,
    priority: int | None = None,
    max_concurrent: int | None = None,
    rate_limit: RateLimit | None = None,
) -> Any:
    """Declare a workflow task: its id (default: the function name) and its options.

    Options are checked here, at decoration time, so mistakes surface at import.

    ``max_concurrent=N``: at most N executions of the task run at once, across every worker
    and process of the backend; ``rate_limit=RateLimit(n, per)``: at most n of its starts in
    any window of ``per`` (docs/flow-control.md, "Task limits").

    >>> @task("charge", timeout="30s", retries=3, tags=["payments"])
    ... def charge_card(order: dict) -> dict:
    ...     return {**order, "charged": True}
    >>> charge_card._task_id, charge_card._metadata.timeout_secs
    ('charge', 30.0)
    """
    if isinstance(func, str):
        name, func = func, None
    elif func is not None and not callable(func):
        raise TypeError(f"@task expects a function or a task name, not {type(func).__name__}")
    resolved_timeout = _timeout(timeout if timeout is not None else timeout_secs)
    policy = _retry_policy(retries)
    _check_priority(priority)
    tag_list = _check_tags(tags)
    limits = TaskLimits.of(max_concurrent, rate_limit)

    def decorate(fn: F) -> F:
        task_id = name or getattr(fn, "__name__", None)
        if not isinstance(task_id, str):
            raise TypeError(f"@task needs name= for {fn!r}, which has no __name__")
        metadata = TaskMetadata(
            display_name=task_id,
            description=description,
            timeout_secs=resolved_timeout,
            retries=policy,
            tags=list(tag_list) if tag_list is not None else None,
            priority=priority,
            limits=limits,
        )
        input_type, output_type = io_types(fn)
        try:
            mark(
                fn,
                _task_id=task_id,
                _metadata=metadata,
                _input_type=input_type,
                _output_type=output_type,
            )
        except AttributeError:
            raise TypeError(
                f"@task cannot set attributes on {fn!r}; decorate a def that calls it instead"
            ) from None
        return fn

    return decorate(func) if func is not None else decorate


def _timeout(value: str | float | timedelta | None) -> float | None:
    return None if value is None else to_seconds(value, "timeout")


def _retry_policy(retries: int | RetryPolicy | None) -> RetryPolicy | None:
    """``n`` means ``RetryPolicy(max_retries=n)`` with the reference's 1 s / x2 backoff."""
    if retries is None or isinstance(retries, RetryPolicy):
        return retries
    if isinstance(retries, int) and not isinstance(retries, bool):
        return RetryPolicy(max_retries=retries, initial_delay_secs=1.0, backoff_multiplier=2.0)
    raise TypeError(f"retries must be an int or a RetryPolicy, not {type(retries).__name__}")


def _check_priority(priority: int | None) -> None:
    if priority is None:
        return
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not 1 <= priority <= 5:
        raise ValueError(f"priority must be between 1 and 5, got {priority}")


def _check_tags(tags: Sequence[str] | None) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str):
        raise TypeError("tags must be a list of strings, not a string")
    tag_list = list(tags)
    if len(tag_list) > _MAX_TAGS:
        raise ValueError(f"too many tags: {len(tag_list)} (max {_MAX_TAGS})")
    for tag in tag_list:
        if not isinstance(tag, str):
            raise TypeError(f"tags must be strings, got {type(tag).__name__}")
        if not tag:
            raise ValueError("tags must not contain empty strings")
        if len(tag) > _MAX_TAG_LEN:
            raise ValueError(f"tag too long: '{tag}' ({len(tag)} chars, max {_MAX_TAG_LEN})")
    return tag_list
