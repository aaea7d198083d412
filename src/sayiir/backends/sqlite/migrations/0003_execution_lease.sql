-- 0003_execution_lease: until when the execution that owns a run holds it.
--
-- run_token now names the execution that owns the run: set when the run starts, replaced by
-- each resume that takes the run over (take_over). lease_until (Unix seconds, local clock) is
-- renewed by each write of that execution and by its heartbeat while a task runs; a resume
-- takes the run over only once it has passed, so two executions never run one run at once.
-- NULL: no execution holds the run (parked, finished, submitted for workers, older rows).
ALTER TABLE sayiir_workflow_instances ADD COLUMN lease_until REAL;
