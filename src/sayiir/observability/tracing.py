"""``init_tracing`` / ``shutdown_tracing``: console logging and optional OTLP export.

Without ``init_tracing()`` sayiir prints nothing (it only emits ``logging``
records, which Python drops by default).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

__all__ = ["init_tracing", "shutdown_tracing"]

_lock = threading.Lock()
_handler: logging.Handler | None = None
_provider: Any = None


def _reset_after_fork() -> None:
    """A forked child gets a fresh lock: another thread of the parent may have held it."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _level() -> int:
    raw = os.environ.get("SAYIIR_LOG") or os.environ.get("RUST_LOG") or "info"
    first = raw.split(",")[0].split("=")[-1].strip().upper()
    return {"TRACE": logging.DEBUG, "WARN": logging.WARNING}.get(
        first, getattr(logging, first, logging.INFO)
    )


def init_tracing() -> None:
    """Log sayiir's records to stderr; export spans over OTLP when configured.

    The level comes from ``SAYIIR_LOG`` (or ``RUST_LOG``), default ``info``.
    With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set and the ``otel`` extra installed,
    an OTLP exporter is installed with service name ``OTEL_SERVICE_NAME``
    (default ``"sayiir-py"``). Idempotent; never raises for missing OTel.

    >>> init_tracing()
    """
    global _handler, _provider
    with _lock:
        logger = logging.getLogger("sayiir")
        if _handler is None:
            _handler = logging.StreamHandler(sys.stderr)
            _handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
            )
            logger.addHandler(_handler)
        logger.setLevel(_level())
        if _provider is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            _provider = _otel_provider()


def _otel_provider() -> Any:
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logging.getLogger("sayiir").warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed; "
            "install sayiir[otel] to export traces"
        )
        return None
    service = os.environ.get("OTEL_SERVICE_NAME", "sayiir-py")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing() -> None:
    """Flush and stop the exporter and remove the console handler; no-op if not initialised.

    >>> shutdown_tracing()
    """
    global _handler, _provider
    with _lock:
        if _provider is not None:
            _provider.shutdown()
            _provider = None
        if _handler is not None:
            logging.getLogger("sayiir").removeHandler(_handler)
            _handler = None
