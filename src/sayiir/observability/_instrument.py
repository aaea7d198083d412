"""``instrument()`` / ``uninstrument()``: turn sayiir's spans and metrics on and off.

OpenTelemetry is imported here only when ``instrument()`` is called, so ``import sayiir``
never loads it and a process that does not instrument pays nothing (the engine checks one
global, ``sayiir.engine._observe.OBSERVER``).
"""

from __future__ import annotations

from typing import Any

from sayiir.engine import _observe

__all__ = ["instrument", "instrumented", "uninstrument"]

# The observer of the last instrument() call, by its providers: calling instrument() again
# with the same providers (init_tracing after shutdown_tracing) reuses it rather than creating
# its instruments again (a meter keeps every instrument it ever created). No lock anywhere:
# instrument() and uninstrument() each assign one global, and a process forked while another
# thread runs them has no lock left held.
_last: tuple[Any, Any, Any] | None = None


def instrument(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Emit spans and metrics for every run and task attempt of this process.

    Spans go to ``tracer_provider`` and metrics to ``meter_provider``; by default to the
    global providers of the OpenTelemetry API (your application's, once it sets them: the
    providers are looked up lazily, so calling this first is fine). Calling it again
    replaces the previous instrumentation. Needs the ``otel`` extra
    (``pip install 'sayiir[otel]'``); raises ``ImportError`` without it.

    >>> from sayiir.observability import instrument, uninstrument
    >>> instrument()
    >>> uninstrument()
    """
    try:
        from sayiir.observability._otel import OtelObserver
    except ImportError as exc:
        raise ImportError(
            f"sayiir.observability.instrument needs OpenTelemetry ({exc}); "
            "install it with: pip install 'sayiir[otel]'"
        ) from exc
    global _last
    last = _last
    if last is not None and last[0] is tracer_provider and last[1] is meter_provider:
        observer = last[2]
    else:
        observer = OtelObserver(tracer_provider, meter_provider)
        _last = (tracer_provider, meter_provider, observer)
    _observe.OBSERVER = observer


def uninstrument() -> None:
    """Stop emitting spans and metrics (what ``instrument()`` turned on); idempotent."""
    _observe.OBSERVER = None


def instrumented() -> bool:
    """Whether ``instrument()`` is in effect."""
    return _observe.OBSERVER is not None
