-- 0009_run_limits: run concurrency limits (sayiir.core.limits, docs/flow-control.md), as on
-- PostgreSQL (its 0007); and the purge of expired dedupe keys.
--
-- A submitted run with a limit has its concurrency key and limit on its start entry; a
-- worker claims that entry only when it takes a slot of the key: a row (key, instance). The
-- claim runs in one BEGIN IMMEDIATE transaction (one claimer at a time), so counting the
-- unfinished holders and inserting the new one cannot race. A slot is held until its run
-- finishes (a finished holder no longer counts: no release write); the rows of finished
-- runs are deleted with the run (ON DELETE CASCADE) or when a claim takes the key again.
ALTER TABLE sayiir_task_queue ADD COLUMN concurrency_key TEXT;
ALTER TABLE sayiir_task_queue ADD COLUMN concurrency_limit INTEGER;

CREATE TABLE sayiir_concurrency_slots (
    concurrency_key TEXT NOT NULL,
    instance_id     TEXT NOT NULL
        REFERENCES sayiir_workflow_instances (instance_id) ON DELETE CASCADE,
    PRIMARY KEY (concurrency_key, instance_id)
);

-- "Does this run hold a slot already" (a wake-up of an admitted run), and the cascade.
CREATE INDEX sayiir_concurrency_slots_instance_idx ON sayiir_concurrency_slots (instance_id);

-- The purge of dedupe keys whose window has passed (sayiir retention, and opportunistically
-- by submits with a key): walks the expired keys only.
CREATE INDEX sayiir_dedupe_keys_expires_idx ON sayiir_dedupe_keys (expires_at);
