-- 0003: until when the execution that owns a run holds it.
--
-- start_token now names the execution that owns the run: set when the run starts, replaced
-- by each resume that takes the run over (take_over). lease_until (database clock) is renewed
-- by each write of that execution and by its heartbeat while a task runs; a resume takes the
-- run over only once it has passed, so two executions never run one run at once. NULL: no
-- execution holds the run (parked, finished, submitted for workers, rows from before).
-- Adding a nullable column without a default rewrites nothing: instant on a large table.
ALTER TABLE {t_instances} ADD COLUMN lease_until timestamptz;
