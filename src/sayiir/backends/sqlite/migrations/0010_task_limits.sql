-- 0010_task_limits: task limits (@task(max_concurrent=..., rate_limit=...);
-- sayiir.core.task_limits, docs/flow-control.md "Task limits"), as on PostgreSQL (its 0011).
--
-- Every operation on these tables runs in one BEGIN IMMEDIATE transaction (one writer at a
-- time), so reading the slots (or a window) and writing the new one cannot race.
--
-- task_slots: one row per slot held, (task id, slot number < max_concurrent); a slot whose
-- holder is gone (its execution lost the run's lease, or its worker's claim) is free. A
-- slot is deleted when its attempt ends, and with its run.
CREATE TABLE sayiir_task_slots (
    task_id     TEXT NOT NULL,
    slot        INTEGER NOT NULL,
    instance_id TEXT NOT NULL
        REFERENCES sayiir_workflow_instances (instance_id) ON DELETE CASCADE,
    step_key    TEXT NOT NULL,
    owner       TEXT NOT NULL,
    attempt     INTEGER,
    PRIMARY KEY (task_id, slot)
);

-- release_task_slot, and the cascade.
CREATE INDEX sayiir_task_slots_instance_idx ON sayiir_task_slots (instance_id, step_key);

-- rate_windows: the starts of a rate limit's bucket within its last period (a JSON array
-- of epoch seconds, ascending, at most n).
CREATE TABLE sayiir_rate_windows (
    bucket TEXT PRIMARY KEY,
    starts TEXT NOT NULL
);

-- task_waits: the step of a run that waits at a task limit, and for what (waiting_reason).
CREATE TABLE sayiir_task_waits (
    instance_id TEXT NOT NULL
        REFERENCES sayiir_workflow_instances (instance_id) ON DELETE CASCADE,
    step_key    TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    lim         INTEGER NOT NULL,
    per         REAL,
    retry_at    REAL,
    since       REAL NOT NULL,
    PRIMARY KEY (instance_id, step_key)
);
