"""``init_tracing`` / ``shutdown_tracing``: console logging, spans, metrics, OTLP export.

Without ``init_tracing()`` sayiir prints nothing (it only emits ``logging``
records, which Python drops by default).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from sayiir.observability._instrument import instrument, uninstrument

__all__ = ["init_tracing", "shutdown_tracing"]

_lock = threading.Lock()
_handler: logging.Handler | None = None
_providers: list[Any] | None = None  # None: init_tracing() has not set OTel up


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
    """Log sayiir's records to stderr; with the ``otel`` extra, emit spans and metrics.

    The level comes from ``SAYIIR_LOG`` (or ``RUST_LOG``), default ``info``. With the
    ``otel`` extra installed, sayiir's spans and metrics are turned on
    (``sayiir.observability.instrument``) and go to the application's OpenTelemetry
    providers. Only when none is set and ``OTEL_EXPORTER_OTLP_ENDPOINT`` is, providers are
    installed that export over OTLP with service name ``OTEL_SERVICE_NAME`` (default
    ``"sayiir-py"``); a provider the application set is never replaced. Idempotent; never
    raises for missing OTel.

    >>> init_tracing()
    """
    global _handler, _providers
    with _lock:
        logger = logging.getLogger("sayiir")
        if _handler is None:
            _handler = logging.StreamHandler(sys.stderr)
            _handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
            )
            logger.addHandler(_handler)
        logger.setLevel(_level())
        if _providers is None:
            _providers = _otel_setup()


def _otel_setup() -> list[Any]:
    """Turn instrumentation on; the providers installed here (to shut down later)."""
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            logging.getLogger("sayiir").warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed; "
                "install sayiir[otel] to export traces"
            )
        return []
    installed: list[Any] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            installed.append(_otlp_tracer_provider())
        if isinstance(metrics.get_meter_provider(), metrics._internal._ProxyMeterProvider):
            installed.append(_otlp_meter_provider())
    instrument()
    return installed


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "sayiir-py")})


def _otlp_tracer_provider() -> Any:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _otlp_meter_provider() -> Any:
    from opentelemetry import metrics
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    provider = MeterProvider(resource=_resource(), metric_readers=[reader])
    metrics.set_meter_provider(provider)
    return provider


def shutdown_tracing() -> None:
    """Turn spans and metrics off, flush and stop the exporters ``init_tracing`` installed
    and remove the console handler; no-op if not initialised.

    >>> shutdown_tracing()
    """
    global _handler, _providers
    with _lock:
        if _providers is not None:
            uninstrument()
            for provider in _providers:
                provider.shutdown()
            _providers = None
        if _handler is not None:
            logging.getLogger("sayiir").removeHandler(_handler)
            _handler = None
