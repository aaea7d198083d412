-- 0006_flow_control: cron schedules (sayiir.distributed.schedules, docs/schedules.md)
-- and the keys of idempotent submits (docs/flow-control.md).
--
-- One row per schedule. Every change is a compare-and-set on version (of several firers
-- deciding a tick at once, one wins). The columns a query filters on are columns; the rest
-- of the schedule (its definition and its cursor) is JSON in body, written and read by
-- sayiir.core.schedules. fire_at: Unix seconds when the schedule next needs a firer.
CREATE TABLE sayiir_schedules (
    schedule_id TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    fire_at     REAL NOT NULL,
    body        BLOB NOT NULL,
    updated_at  REAL NOT NULL
);

-- due_schedules and next_schedule_at: the schedules not paused, by the time they fall due.
CREATE INDEX sayiir_schedules_due_idx ON sayiir_schedules (fire_at) WHERE paused = 0;

-- Idempotent submit with a window (WorkflowClient.submit(dedupe_key=..., dedupe_window=...)):
-- the run that holds a key until expires_at (Unix seconds); a later submit takes it over.
CREATE TABLE sayiir_dedupe_keys (
    dedupe_key  TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    expires_at  REAL NOT NULL
);
