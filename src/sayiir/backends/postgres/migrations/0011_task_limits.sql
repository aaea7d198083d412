-- 0011: task limits (@task(max_concurrent=..., rate_limit=...); sayiir.core.task_limits,
-- docs/flow-control.md "Task limits").
--
-- task_slots: one row per slot held, (task id, slot number < max_concurrent). The primary
-- key makes two executions racing for one slot number collide: the later one takes the row
-- only when its holder is gone (its execution lost the run's lease, or its worker's claim),
-- so no more than the limit ever hold one. A slot is deleted when its attempt ends. No
-- foreign key (the hot path pays no check; the partitioned layout could not have one):
-- retention deletes the rows of the runs it drops.
CREATE TABLE {t_task_slots} (
    task_id     text        NOT NULL,
    slot        integer     NOT NULL,
    instance_id text        NOT NULL,
    step_key    text        NOT NULL,
    owner       text        NOT NULL,
    attempt     integer,
    taken_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_task_slots_pkey} PRIMARY KEY (task_id, slot)
);

-- release_task_slot, and retention: a run's slots.
CREATE INDEX {n_task_slots_instance_idx} ON {t_task_slots} (instance_id, step_key);

-- rate_windows: the starts (epoch seconds, ascending) of a rate limit's bucket within its
-- last period, at most n of them; a start is added by one conditional upsert, re-checked
-- on the row's newest version when starts race (no more than n in any window).
CREATE TABLE {t_rate_windows} (
    bucket  text     NOT NULL,
    starts  float8[] NOT NULL,
    CONSTRAINT {n_rate_windows_pkey} PRIMARY KEY (bucket)
);

-- task_waits: the step of a run that waits at a task limit, and for what (waiting_reason);
-- written when a step is refused, deleted when it gets through.
CREATE TABLE {t_task_waits} (
    instance_id text        NOT NULL,
    step_key    text        NOT NULL,
    task_id     text        NOT NULL,
    kind        text        NOT NULL,
    name        text        NOT NULL,
    lim         integer     NOT NULL,
    per         float8,
    retry_at    float8,
    since       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_task_waits_pkey} PRIMARY KEY (instance_id, step_key)
);
