"""``serve_metrics``: sayiir's metrics on a Prometheus endpoint (``sayiir worker --metrics-port``).

Built on ``opentelemetry-exporter-prometheus`` (the SDK's reader that turns OpenTelemetry
metrics into Prometheus' text format) and ``prometheus-client`` (its HTTP server): the same
instruments feed OTLP and Prometheus, and the exposition format is the maintained one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MetricsServer", "serve_metrics"]


class MetricsServer:
    """A running metrics endpoint: ``port`` (the one bound, useful with port 0) and
    ``close()``."""

    def __init__(self, server: Any, provider: Any, gauges: Any) -> None:
        self._server = server
        self._provider = provider
        self.gauges = gauges  # the queue gauges (None without a queue backend)
        self.port: int = server.server_port

    def close(self) -> None:
        """Stop serving and stop this endpoint's metrics (``instrument()`` stays on)."""
        self._server.shutdown()
        self._server.server_close()
        self._provider.shutdown()

    def __repr__(self) -> str:
        return f"MetricsServer(port={self.port})"


def serve_metrics(
    port: int, queue: Any = None, *, addr: str = "0.0.0.0", scrape_interval: float = 5.0
) -> MetricsServer:
    """Serve sayiir's metrics at ``http://<addr>:<port>/metrics`` for Prometheus, from a
    daemon thread, and turn instrumentation on (``instrument``) with these metrics.

    ``queue``: a backend with a worker queue (``PostgresBackend``, ``InMemoryBackend``); its
    ``sayiir_queue_depth`` and ``sayiir_queue_oldest_ready_age_seconds`` gauges cost one
    query (``queue_stats()``, served by the queue's indexes) per scrape at most, and at most
    one per ``scrape_interval`` seconds.
    Needs the ``otel`` extra.

    >>> from sayiir import InMemoryBackend
    >>> server = serve_metrics(0, InMemoryBackend(), addr="127.0.0.1")
    >>> import urllib.request
    >>> body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read()
    >>> b"sayiir_queue_depth" in body
    True
    >>> server.close()
    >>> from sayiir.observability import uninstrument
    >>> uninstrument()
    """
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise ImportError(
            f"serve_metrics needs the otel extra ({exc}); install: pip install 'sayiir[otel]'"
        ) from exc
    from sayiir._version import __version__
    from sayiir.observability._instrument import instrument
    from sayiir.observability._metrics import QueueGauges

    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(scope_info_enabled=False, registry=registry)]
    )
    server, _ = start_http_server(port, addr, registry=registry)
    gauges = None
    stats = getattr(queue, "queue_stats", None)  # RunQueries.queue_stats
    if stats is not None:
        meter = provider.get_meter("sayiir", __version__)
        gauges = QueueGauges(stats, meter, scrape_interval)
    instrument(meter_provider=provider)
    return MetricsServer(server, provider, gauges)
