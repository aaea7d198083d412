-- 0005_console: what the operator console reads (issue 14).
--
-- Workflow definitions (sayiir.core.graph.definition_json), stored once per hash when a run
-- starts, so the console draws any run's graph without importing the user's code.
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

-- The run list filtered by workflow and status, in creation order (the console's default).
CREATE INDEX sayiir_workflow_instances_workflow_status_idx
    ON sayiir_workflow_instances (workflow_id, status, created_at);

-- Every signal event of a run, consumed ones included (run detail).
CREATE INDEX sayiir_workflow_signals_instance_idx
    ON sayiir_workflow_signals (instance_id, id);
