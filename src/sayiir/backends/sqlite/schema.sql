-- The full current schema of the SQLite backend, for reading and for review.
--
-- The backend never runs this file: it applies migrations/NNNN_*.sql in order. A test
-- (tests/backends/test_sqlite_backend.py) checks that applying every migration gives exactly
-- this schema, so update this file in the same commit as a new migration.

-- Applied migrations, one row each, written in the same transaction as the migration.
CREATE TABLE IF NOT EXISTS sayiir_schema_migrations (
    version    INTEGER PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at REAL NOT NULL
);

-- One row per workflow run. BLOB payloads are codec-encoded bytes; times are Unix seconds.
-- request_* hold a cancel/pause asked for while an engine executes the run; distributed (0/1)
-- marks a run submitted for workers; run_token is the token of the execution that owns the
-- run (0002_run_token: writes of a replaced run are refused; 0003_execution_lease: a resume
-- takes the run over with a new token) and lease_until when its hold on the run expires;
-- traceparent (0004_trace_context) is the W3C trace context of the caller that started it.
CREATE TABLE sayiir_workflow_instances (
    instance_id     TEXT PRIMARY KEY NOT NULL,
    workflow_id     TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    status          TEXT NOT NULL,
    input           BLOB NOT NULL,
    output          BLOB,
    error           TEXT,
    reason          TEXT,
    cancelled_by    TEXT,
    paused_by       TEXT,
    wake_at         REAL,
    park_node       TEXT,
    signal_name     TEXT,
    request_kind    TEXT,
    request_reason  TEXT,
    request_by      TEXT,
    distributed     INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    completed_at    REAL,
    run_token       TEXT,
    lease_until     REAL,
    traceparent     TEXT
);

CREATE INDEX sayiir_workflow_instances_status_idx
    ON sayiir_workflow_instances (status, created_at);

CREATE INDEX sayiir_workflow_instances_created_at_idx
    ON sayiir_workflow_instances (created_at);

CREATE INDEX sayiir_workflow_instances_workflow_id_idx
    ON sayiir_workflow_instances (workflow_id, created_at);

-- Task outputs (and engine markers) that let a run continue where it stopped.
CREATE TABLE sayiir_checkpoints (
    instance_id TEXT NOT NULL
        REFERENCES sayiir_workflow_instances (instance_id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    output      BLOB NOT NULL,
    size        INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (instance_id, key)
);

-- One row per task attempt: 'running' (started, with a deadline), 'failed' or 'completed'.
-- The unique index also serves every lookup by (instance_id, key).
CREATE TABLE sayiir_task_executions (
    id            INTEGER PRIMARY KEY,
    instance_id   TEXT NOT NULL
        REFERENCES sayiir_workflow_instances (instance_id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    status        TEXT NOT NULL,
    worker_id     TEXT,
    started_at    REAL NOT NULL,
    finished_at   REAL,
    duration_ms   REAL,
    error         TEXT,
    next_retry_at REAL,
    deadline      REAL
);

CREATE UNIQUE INDEX sayiir_task_executions_attempt_idx
    ON sayiir_task_executions (instance_id, key, attempt);

-- Signals buffered for a run, FIFO per (instance_id, signal_name) by id. No foreign key: a
-- signal may arrive before its instance exists. Consumed rows are kept (consumed_at set).
CREATE TABLE sayiir_workflow_signals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    signal_name TEXT NOT NULL,
    payload     BLOB NOT NULL,
    created_at  REAL NOT NULL,
    consumed_at REAL
);

CREATE INDEX sayiir_workflow_signals_pending_idx
    ON sayiir_workflow_signals (instance_id, signal_name, id)
    WHERE consumed_at IS NULL;

CREATE INDEX sayiir_workflow_instances_workflow_status_idx
    ON sayiir_workflow_instances (workflow_id, status, created_at);

CREATE INDEX sayiir_workflow_signals_instance_idx
    ON sayiir_workflow_signals (instance_id, id);

-- Workflow definitions (sayiir.core.graph.definition_json), stored once per hash when a run
-- starts, so the console draws any run's graph without importing the user's code (0005).
CREATE TABLE sayiir_workflow_definitions (
    definition_hash TEXT PRIMARY KEY NOT NULL,
    workflow_id     TEXT NOT NULL,
    structure       TEXT NOT NULL,
    first_seen      REAL NOT NULL
);

-- Operator actions (cancel, pause, retry, fork, signal...): who did what to which run, when.
CREATE TABLE sayiir_audit_log (
    id          INTEGER PRIMARY KEY,
    at          REAL NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    instance_id TEXT,
    detail      TEXT NOT NULL
);

CREATE INDEX sayiir_audit_log_instance_idx ON sayiir_audit_log (instance_id, id);

-- The worker queue (0007_worker_queue): one row per runnable point of a run submitted for
-- workers (a task, or "continue" with task_key = ''), unclaimed or claimed by a worker until
-- lease_expires_at; attempt fences every write made under a claim (see the migration).
-- concurrency_key and concurrency_limit (0009_run_limits): a limited run's start entry.
CREATE TABLE sayiir_task_queue (
    id               INTEGER PRIMARY KEY,
    instance_id      TEXT NOT NULL
        REFERENCES sayiir_workflow_instances (instance_id) ON DELETE CASCADE,
    task_key         TEXT NOT NULL,
    task_id          TEXT,
    definition_hash  TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 3,
    tags             TEXT NOT NULL DEFAULT '[]',
    available_at     REAL NOT NULL,
    worker_id        TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    last_error       TEXT,
    concurrency_key  TEXT,
    concurrency_limit INTEGER,
    CHECK ((worker_id IS NULL) = (lease_expires_at IS NULL))
);

CREATE UNIQUE INDEX sayiir_task_queue_key_idx ON sayiir_task_queue (instance_id, task_key);

CREATE INDEX sayiir_task_queue_ready_idx
    ON sayiir_task_queue (priority * 300.0 + available_at, id)
    WHERE worker_id IS NULL;

CREATE INDEX sayiir_task_queue_lease_idx
    ON sayiir_task_queue (lease_expires_at)
    WHERE worker_id IS NOT NULL;

-- Cron schedules (migration 0006): a compare-and-set row per schedule, JSON body.
CREATE TABLE sayiir_schedules (
    schedule_id TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    paused      INTEGER NOT NULL DEFAULT 0,
    fire_at     REAL NOT NULL,
    body        BLOB NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE INDEX sayiir_schedules_due_idx ON sayiir_schedules (fire_at) WHERE paused = 0;

-- Idempotent submit with a window (migration 0006).
CREATE TABLE sayiir_dedupe_keys (
    dedupe_key  TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    expires_at  REAL NOT NULL
);

CREATE INDEX sayiir_dedupe_keys_expires_idx ON sayiir_dedupe_keys (expires_at);

-- Run concurrency limits (0009_run_limits): the runs holding a slot of each key.
CREATE TABLE sayiir_concurrency_slots (
    concurrency_key TEXT NOT NULL,
    instance_id     TEXT NOT NULL
        REFERENCES sayiir_workflow_instances (instance_id) ON DELETE CASCADE,
    PRIMARY KEY (concurrency_key, instance_id)
);

CREATE INDEX sayiir_concurrency_slots_instance_idx ON sayiir_concurrency_slots (instance_id);

-- Task limits (migration 0010_task_limits): the slots held, rate windows, waiting steps.
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
