-- 0004: why a queue entry's last claim ended without an outcome (dead-lettering).
--
-- A worker that gives a claim up after an error it could not turn into an outcome
-- (QueueStorage.abandon) stores the cause here; the entry keeps its attempt count, so a
-- run that fails in the engine on every try is dead-lettered after the worker's
-- max_claim_attempts with this cause in its error (docs/workers.md).
ALTER TABLE {t_task_queue} ADD COLUMN last_error text;
