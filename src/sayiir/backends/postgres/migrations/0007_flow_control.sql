-- 0007: cron schedules (sayiir.distributed.schedules, docs/schedules.md).
--
-- One row per schedule. Every change is a compare-and-set on version (of several workers or
-- schedulers deciding a tick at once, one wins). The columns a query filters on are columns;
-- the rest of the schedule (its definition and its cursor) is JSON in body, written and read
-- by sayiir.core.schedules. fire_at: when the schedule next needs a firer.
CREATE TABLE {t_schedules} (
    schedule_id text        NOT NULL,
    version     bigint      NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    fire_at     timestamptz NOT NULL,
    body        bytea       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_schedules_pkey} PRIMARY KEY (schedule_id)
);

-- due_schedules and next_schedule_at: the schedules not paused, by the time they fall due.
CREATE INDEX {n_schedules_due_idx} ON {t_schedules} (fire_at) WHERE NOT paused;

-- Run concurrency limits (sayiir.core.limits, docs/flow-control.md). A submitted run with a
-- limit has its concurrency key and limit on its start entry; a worker claims that entry only
-- when it can take a slot of the key: a row (key, slot number < limit). The primary key makes
-- two claimers racing for one slot number collide, so no more than the limit ever hold one.
-- A slot is held until its run finishes (then any claimer takes it over: no release write).
ALTER TABLE {t_task_queue} ADD COLUMN concurrency_key text, ADD COLUMN concurrency_limit integer;

CREATE TABLE {t_concurrency_slots} (
    concurrency_key text    NOT NULL,
    slot            integer NOT NULL,
    instance_id     text    NOT NULL,
    CONSTRAINT {n_concurrency_slots_pkey} PRIMARY KEY (concurrency_key, slot),
    CONSTRAINT {n_concurrency_slots_instance_fkey} FOREIGN KEY (instance_id)
        REFERENCES {t_instances} (instance_id) ON DELETE CASCADE
);

-- "Does this run hold a slot already" (a wake-up of an admitted run), and the cascade.
CREATE INDEX {n_concurrency_slots_instance_idx} ON {t_concurrency_slots} (instance_id);

-- Idempotent submit with a window (WorkflowClient.submit(dedupe_key=..., dedupe_window=...)):
-- the run that holds a key until expires_at. A submit with a held key returns that run; once
-- the window has passed, the next submit with the key takes it over (an upsert).
CREATE TABLE {t_dedupe_keys} (
    dedupe_key  text        NOT NULL,
    instance_id text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    CONSTRAINT {n_dedupe_keys_pkey} PRIMARY KEY (dedupe_key)
);
