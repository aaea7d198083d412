-- 0001: the four tables of the PostgreSQL contract (spec/postgres.md §3) and their indexes.
--
-- Names in braces are placeholders for identifiers, filled in with psycopg.sql.Identifier
-- by the migration runner: t_ names are schema-qualified tables, n_ names bare index and
-- constraint names (both carry the configured table prefix). Nothing else is substituted.

-- One row per workflow run. Updated on every checkpoint (updated_at, status), so pages keep
-- free room for HOT updates; no index covers updated_at for the same reason.
CREATE TABLE {t_instances} (
    instance_id      text        NOT NULL,
    workflow_id      text        NOT NULL,
    definition_hash  text        NOT NULL,
    status           text        NOT NULL,
    input            bytea       NOT NULL,
    output           bytea,
    error            text,
    reason           text,
    cancelled_by     text,
    paused_by        text,
    wake_at          timestamptz,
    park_node        text,
    signal_name      text,
    request_kind     text,
    request_reason   text,
    request_by       text,
    distributed      boolean     NOT NULL DEFAULT false,
    start_token      uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    CONSTRAINT {n_instances_pkey} PRIMARY KEY (instance_id),
    CONSTRAINT {n_instances_status_check} CHECK (status IN (
        'running', 'waiting', 'awaiting_signal', 'paused', 'completed', 'failed', 'cancelled')),
    CONSTRAINT {n_instances_request_check} CHECK (request_kind IN ('cancel', 'pause'))
) WITH (fillfactor = 80);

CREATE INDEX {n_instances_workflow_idx} ON {t_instances} (workflow_id);
CREATE INDEX {n_instances_status_idx} ON {t_instances} (status);
CREATE INDEX {n_instances_created_idx} ON {t_instances} (created_at);
CREATE INDEX {n_instances_completed_idx} ON {t_instances} (completed_at)
    WHERE completed_at IS NOT NULL;
CREATE INDEX {n_instances_wake_idx} ON {t_instances} (wake_at)
    WHERE status IN ('waiting', 'awaiting_signal');

-- One row per task attempt; a retried write of the same attempt updates its row.
CREATE TABLE {t_task_executions} (
    id             bigserial   NOT NULL,
    instance_id    text        NOT NULL,
    task_key       text        NOT NULL,
    task_id        text        NOT NULL,
    attempt        integer     NOT NULL,
    status         text        NOT NULL,
    worker_id      text,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    duration_ms    double precision,
    error          text,
    next_retry_at  timestamptz,
    deadline       timestamptz,
    CONSTRAINT {n_task_executions_pkey} PRIMARY KEY (id),
    CONSTRAINT {n_task_executions_attempt_key} UNIQUE (instance_id, task_key, attempt),
    CONSTRAINT {n_task_executions_instance_fkey} FOREIGN KEY (instance_id)
        REFERENCES {t_instances} (instance_id) ON DELETE CASCADE,
    CONSTRAINT {n_task_executions_status_check} CHECK (status IN ('running', 'completed', 'failed'))
);

CREATE INDEX {n_task_executions_task_idx} ON {t_task_executions} (task_id, started_at);
-- Rows arrive in time order: a BRIN index serves time-window queries at almost no write cost.
CREATE INDEX {n_task_executions_finished_idx} ON {t_task_executions} USING brin (finished_at);

-- Task outputs (and engine markers such as timers), one per (instance, key).
CREATE TABLE {t_checkpoints} (
    instance_id  text        NOT NULL,
    key          text        NOT NULL,
    task_id      text,
    output       bytea       NOT NULL,
    size         integer     NOT NULL GENERATED ALWAYS AS (octet_length(output)) STORED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_checkpoints_pkey} PRIMARY KEY (instance_id, key),
    CONSTRAINT {n_checkpoints_instance_fkey} FOREIGN KEY (instance_id)
        REFERENCES {t_instances} (instance_id) ON DELETE CASCADE
);

-- Signal events, FIFO per (instance, name). No foreign key: an event may arrive before
-- its instance exists. send_id makes a retried send_signal store the event once.
CREATE TABLE {t_signals} (
    id           bigserial   NOT NULL,
    instance_id  text        NOT NULL,
    signal_name  text        NOT NULL,
    payload      bytea       NOT NULL,
    send_id      uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    consumed_at  timestamptz,
    CONSTRAINT {n_signals_pkey} PRIMARY KEY (id),
    CONSTRAINT {n_signals_send_key} UNIQUE (send_id)
);

CREATE INDEX {n_signals_pending_idx} ON {t_signals} (instance_id, signal_name, id)
    WHERE consumed_at IS NULL;
CREATE INDEX {n_signals_instance_idx} ON {t_signals} (instance_id);
