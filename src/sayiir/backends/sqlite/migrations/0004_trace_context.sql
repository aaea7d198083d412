-- 0004_trace_context: the trace context of the caller that started a run.
--
-- With tracing on (the otel extra), a new run stores its caller's W3C traceparent; every
-- execution of the run (a resume in another process) continues that trace
-- (docs/observability.md). NULL: tracing was off, or a row from before.
ALTER TABLE sayiir_workflow_instances ADD COLUMN traceparent TEXT;
