"""Logging and optional OpenTelemetry tracing."""
