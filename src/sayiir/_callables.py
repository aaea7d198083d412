"""What the builder needs to know about user callables, and the wrappers it registers.

A registry entry is the callable the engine invokes with one positional argument.
Two wrappers may sit around the user's function (pydantic innermost, loop outermost);
both keep the ``@task`` attributes and stay sync or async like the function they wrap,
so the engine can decide how to call an entry by looking at the entry alone.
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from sayiir.loop_result import loop_envelope

__all__ = ["io_types", "origin", "same_callable", "wrap_loop", "wrap_pydantic"]

TaskFn = Callable[..., Any]
_TASK_ATTRS = ("_task_id", "_metadata", "_input_type", "_output_type")


def mark(fn: object, **attrs: object) -> None:
    """Set sayiir's attributes on a task function (``AttributeError`` when it takes none)."""
    for name, value in attrs.items():
        setattr(fn, name, value)


def io_types(fn: TaskFn) -> tuple[Any, Any]:
    """The annotation of the first parameter and of the return value (``None`` if absent).

    Unresolvable hints count as absent: a typo in an annotation must not break a workflow.
    """
    if isinstance(fn, functools.partial):
        target: Any = fn.func
    elif inspect.isroutine(fn) or inspect.isclass(fn):
        target = fn
    else:  # a callable object: its annotations are on __call__
        target = type(fn).__call__
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    return (hints.get(params[0]) if params else None), hints.get("return")


def origin(fn: TaskFn) -> TaskFn:
    """The user's callable behind our wrappers (the callable itself if unwrapped)."""
    found: TaskFn = getattr(fn, "_sayiir_original", fn)
    return found


def same_callable(a: TaskFn, b: TaskFn) -> bool:
    """Whether two registry entries run the same user code (bound methods compare by value)."""
    a, b = origin(a), origin(b)
    return a is b or (inspect.ismethod(a) and a == b)


async def _finish(pending: Awaitable[Any], after: Callable[[Any], Any]) -> Any:
    return after(await pending)


def _wrap(fn: TaskFn, before: Callable[[Any], Any] | None, after: Callable[[Any], Any]) -> TaskFn:
    """``after(fn(before(x)))``; async iff ``fn`` is (awaitable results are handled too)."""
    if inspect.iscoroutinefunction(fn):

        async def async_wrapper(data: Any) -> Any:
            return after(await fn(before(data) if before is not None else data))

        wrapper: TaskFn = async_wrapper
    else:

        def sync_wrapper(data: Any) -> Any:
            result = fn(before(data) if before is not None else data)
            if inspect.isawaitable(result):  # e.g. an object whose __call__ is async
                return _finish(result, after)
            return after(result)

        wrapper = sync_wrapper
    functools.update_wrapper(wrapper, fn)
    for attr in _TASK_ATTRS:
        value = getattr(fn, attr, None)
        if value is not None:
            setattr(wrapper, attr, value)
    mark(wrapper, _sayiir_original=origin(fn))
    return wrapper


def _model_base() -> Any:
    """pydantic v2's ``BaseModel`` if pydantic is already imported, else ``None``.

    A model annotation implies pydantic was imported, so we never import it
    ourselves: building a workflow stays fast for programs that do not use it.
    """
    module = sys.modules.get("pydantic")
    base = getattr(module, "BaseModel", None)
    if isinstance(base, type) and hasattr(base, "model_validate"):
        return base
    return None


def _is_model(hint: Any, base: type) -> bool:
    return isinstance(hint, type) and issubclass(hint, base)


def wrap_pydantic(fn: TaskFn) -> TaskFn:
    """Validate a model input and dump a model output; ``fn`` itself when no models are involved.

    >>> from pydantic import BaseModel
    >>> class Order(BaseModel):
    ...     id: int
    >>> def total(order: Order) -> Order:
    ...     return order
    >>> wrap_pydantic(total)({"id": "1"})  # validates, calls, dumps
    {'id': 1}
    """
    base = _model_base()
    if base is None:
        return fn
    if hasattr(fn, "_input_type") or hasattr(fn, "_output_type"):  # set by @task
        in_type, out_type = getattr(fn, "_input_type", None), getattr(fn, "_output_type", None)
    else:
        in_type, out_type = io_types(fn)
    validate, dump = _is_model(in_type, base), _is_model(out_type, base)
    if not (validate or dump):
        return fn

    def after(result: Any) -> Any:
        return result.model_dump() if dump and isinstance(result, base) else result

    before = getattr(in_type, "model_validate", None) if validate else None
    return _wrap(fn, before, after)


def wrap_loop(fn: TaskFn) -> TaskFn:
    """Make a loop body return the wire dict when it returns a ``LoopResult``.

    >>> from sayiir.loop_result import LoopResult
    >>> wrap_loop(lambda x: LoopResult.done(x))(3)
    {'_loop': 'done', 'value': 3}
    """
    if getattr(fn, "_sayiir_loop", False):
        return fn
    wrapper = _wrap(fn, None, loop_envelope)
    mark(wrapper, _sayiir_loop=True)
    return wrapper
