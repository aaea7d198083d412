"""Logging, OpenTelemetry traces and metrics (docs/observability.md).

``instrument()`` turns on spans and metrics (the ``otel`` extra), ``TaskContextFilter``
puts run, task and attempt ids on log records, ``start_metrics_server`` serves the metrics
to Prometheus. Nothing here imports OpenTelemetry until it is used.
"""

from __future__ import annotations

from sayiir.observability._instrument import instrument, instrumented, uninstrument
from sayiir.observability.logs import TaskContextFilter

__all__ = ["TaskContextFilter", "instrument", "instrumented", "uninstrument"]
