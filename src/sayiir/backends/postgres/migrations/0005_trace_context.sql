-- 0005: the trace context of the caller that started a run (docs/observability.md).
--
-- With tracing on (the otel extra), a new run stores its caller's W3C traceparent; every
-- execution of the run (a resume in another process, a worker's turn, a fork branch on
-- another worker) continues that trace. NULL: tracing was off, or a row from before.
-- Adding a nullable column without a default rewrites nothing: instant on a large table.
ALTER TABLE {t_instances} ADD COLUMN traceparent text;
