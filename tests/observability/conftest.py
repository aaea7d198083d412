"""The ``otel`` fixture: sayiir instrumented with the SDK's in-memory span and metric
exporters for one test (instrumentation is process-wide: it is turned off afterwards)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sayiir.observability import instrument, uninstrument
from tests.observability.otelflows import Otel


@pytest.fixture
def otel() -> Iterator[Otel]:
    state = Otel()
    instrument(state.tracer_provider, state.meter_provider)
    try:
        yield state
    finally:
        uninstrument()
        state.tracer_provider.shutdown()
        state.meter_provider.shutdown()
