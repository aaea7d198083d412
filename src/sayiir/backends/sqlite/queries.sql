-- Named queries of the SQLite backend, loaded by sayiir.backends._sqlfiles.load_queries.
-- Parameters are named (:name); the Python side never formats SQL text.

-- name: pragma_journal_mode_wal
PRAGMA journal_mode = WAL

-- name: pragma_foreign_keys_on
PRAGMA foreign_keys = ON

-- name: pragma_synchronous_full
PRAGMA synchronous = FULL

-- name: pragma_synchronous_normal
PRAGMA synchronous = NORMAL

-- name: pragma_journal_size_limit
-- Cap the WAL file left behind after a checkpoint (64 MiB), so one burst does not keep a
-- large file forever.
PRAGMA journal_size_limit = 67108864

-- name: begin_immediate
BEGIN IMMEDIATE

-- name: begin_deferred
BEGIN DEFERRED

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- name: migrations_table_exists
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sayiir_schema_migrations'

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS sayiir_schema_migrations (
    version    INTEGER PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at REAL NOT NULL
)

-- name: applied_migrations
SELECT version, name, checksum FROM sayiir_schema_migrations ORDER BY version

-- name: insert_migration
INSERT INTO sayiir_schema_migrations (version, name, checksum, applied_at)
VALUES (:version, :name, :checksum, :applied_at)

-- name: select_instance
SELECT instance_id, workflow_id, definition_hash, status, CAST(input AS BLOB),
       CAST(output AS BLOB), error, reason, cancelled_by, paused_by, wake_at, park_node,
       signal_name, request_kind, request_reason, request_by, created_at, updated_at,
       completed_at, distributed, run_token, lease_until, traceparent
FROM sayiir_workflow_instances
WHERE instance_id = :instance_id

-- name: insert_instance
INSERT INTO sayiir_workflow_instances (
    instance_id, workflow_id, definition_hash, status, input, output, error, reason,
    cancelled_by, paused_by, wake_at, park_node, signal_name, request_kind, request_reason,
    request_by, created_at, updated_at, completed_at, distributed, run_token, lease_until,
    traceparent
) VALUES (
    :instance_id, :workflow_id, :definition_hash, :status, :input, :output, :error, :reason,
    :cancelled_by, :paused_by, :wake_at, :park_node, :signal_name, :request_kind,
    :request_reason, :request_by, :created_at, :updated_at, :completed_at, :distributed,
    :run_token, :lease_until, :traceparent
)
ON CONFLICT (instance_id) DO NOTHING

-- name: delete_instance_checkpoints
-- Used by create_instance(replace=True). Buffered signals are deliberately kept.
DELETE FROM sayiir_checkpoints WHERE instance_id = :instance_id

-- name: delete_instance_executions
DELETE FROM sayiir_task_executions WHERE instance_id = :instance_id

-- name: delete_instance
DELETE FROM sayiir_workflow_instances WHERE instance_id = :instance_id

-- name: select_control
-- The control columns: what _touch, request_control and unpause decide from, and the run
-- token the writes of an executing engine are checked against.
SELECT status, reason, cancelled_by, paused_by, request_kind, request_reason, request_by,
       run_token
FROM sayiir_workflow_instances
WHERE instance_id = :instance_id

-- name: touch_instance
-- A write by the executing engine: the run is running again, unless a cancel or pause was
-- applied to it meanwhile (that one wins and is returned to the engine); the execution's
-- lease is renewed (:lease_until NULL: a write without a token, which holds no lease).
UPDATE sayiir_workflow_instances
SET updated_at = :now,
    status = CASE WHEN status IN ('cancelled', 'paused') THEN status ELSE 'running' END,
    lease_until = CASE
        WHEN :lease_until IS NULL OR status IN ('cancelled', 'paused') OR distributed
        THEN lease_until ELSE :lease_until END
WHERE instance_id = :instance_id

-- name: take_over
-- A resume becomes the run's execution (Storage.take_over): only if the run still has the
-- token the resume read, is active, and no other execution holds a live lease.
UPDATE sayiir_workflow_instances
SET run_token = :new_token, lease_until = :lease_until, status = 'running', updated_at = :now
WHERE instance_id = :instance_id AND run_token IS :token
  AND status IN ('running', 'waiting', 'awaiting_signal')
  AND (lease_until IS NULL OR lease_until <= :now)

-- name: renew_lease
UPDATE sayiir_workflow_instances
SET lease_until = :lease_until
WHERE instance_id = :instance_id AND run_token = :token AND status = 'running'

-- name: finish_instance
-- Flags (:stopped, :cancelled, :paused, :terminal, :clear_request) are computed in Python from
-- sayiir.core.records so the status rules live in one place.
UPDATE sayiir_workflow_instances
SET status = :status,
    output = :output,
    error = :error,
    wake_at = :wake_at,
    park_node = :park_node,
    signal_name = :signal_name,
    updated_at = :now,
    reason = CASE WHEN :stopped THEN :reason ELSE reason END,
    cancelled_by = CASE WHEN :cancelled THEN :by ELSE cancelled_by END,
    paused_by = CASE WHEN :paused THEN :by ELSE paused_by END,
    completed_at = CASE WHEN :terminal THEN :now ELSE completed_at END,
    request_kind = CASE WHEN :clear_request THEN NULL ELSE request_kind END,
    request_reason = CASE WHEN :clear_request THEN NULL ELSE request_reason END,
    request_by = CASE WHEN :clear_request THEN NULL ELSE request_by END,
    lease_until = NULL
WHERE instance_id = :instance_id

-- name: apply_cancel
-- request_control "apply" for a cancel: nobody executes the run, so it stops now.
UPDATE sayiir_workflow_instances
SET status = 'cancelled', cancelled_by = :by, reason = :reason, completed_at = :now,
    request_kind = NULL, request_reason = NULL, request_by = NULL,
    wake_at = NULL, park_node = NULL, signal_name = NULL, updated_at = :now
WHERE instance_id = :instance_id

-- name: apply_pause
UPDATE sayiir_workflow_instances
SET status = 'paused', paused_by = :by, reason = :reason,
    request_kind = NULL, request_reason = NULL, request_by = NULL,
    wake_at = NULL, park_node = NULL, signal_name = NULL, updated_at = :now
WHERE instance_id = :instance_id

-- name: store_request
-- request_control "request": stored for the executing engine. A pending cancel is never
-- replaced (not by a pause, nor by a second cancel).
UPDATE sayiir_workflow_instances
SET request_kind = :kind, request_reason = :reason, request_by = :by
WHERE instance_id = :instance_id AND request_kind IS NOT 'cancel'

-- name: unpause_instance
UPDATE sayiir_workflow_instances
SET status = 'running', reason = NULL, paused_by = NULL, updated_at = :now
WHERE instance_id = :instance_id

-- name: clear_request
UPDATE sayiir_workflow_instances
SET request_kind = NULL, request_reason = NULL, request_by = NULL
WHERE instance_id = :instance_id

-- name: upsert_checkpoint
INSERT INTO sayiir_checkpoints (instance_id, key, output, size, created_at)
VALUES (:instance_id, :key, :output, :size, :now)
ON CONFLICT (instance_id, key) DO UPDATE
SET output = excluded.output, size = excluded.size, created_at = excluded.created_at

-- name: select_checkpoints
SELECT key, CAST(output AS BLOB) FROM sayiir_checkpoints WHERE instance_id = :instance_id

-- name: select_checkpoint
SELECT CAST(output AS BLOB) FROM sayiir_checkpoints
WHERE instance_id = :instance_id AND key = :key

-- name: upsert_completed_execution
-- A finished task: its attempt row (possibly 'running' until now) becomes 'completed'.
INSERT INTO sayiir_task_executions (
    instance_id, key, task_id, attempt, status, worker_id, started_at, finished_at, duration_ms
) VALUES (
    :instance_id, :key, :task_id, :attempt, 'completed', :worker_id, :started_at, :finished_at,
    :duration_ms
)
ON CONFLICT (instance_id, key, attempt) DO UPDATE
SET task_id = excluded.task_id, status = 'completed', worker_id = excluded.worker_id,
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    duration_ms = excluded.duration_ms, error = NULL, next_retry_at = NULL

-- name: upsert_attempt
INSERT INTO sayiir_task_executions (
    instance_id, key, task_id, attempt, status, worker_id, started_at, finished_at, duration_ms,
    error, next_retry_at, deadline
) VALUES (
    :instance_id, :key, :task_id, :attempt, :status, :worker_id, :started_at, :finished_at,
    :duration_ms, :error, :next_retry_at, :deadline
)
ON CONFLICT (instance_id, key, attempt) DO UPDATE
SET task_id = excluded.task_id, status = excluded.status, worker_id = excluded.worker_id,
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    duration_ms = excluded.duration_ms, error = excluded.error,
    next_retry_at = excluded.next_retry_at, deadline = excluded.deadline

-- name: select_open_attempts
-- Attempts of tasks that have no checkpoint yet, in attempt order (folded by fold_attempt).
SELECT key, task_id, attempt, status, started_at, finished_at, error, next_retry_at, deadline,
       worker_id
FROM sayiir_task_executions AS t
WHERE t.instance_id = :instance_id
  AND t.status IN ('running', 'failed')
  AND NOT EXISTS (
      SELECT 1 FROM sayiir_checkpoints AS c
      WHERE c.instance_id = t.instance_id AND c.key = t.key
  )
ORDER BY t.key, t.attempt

-- name: insert_signal
INSERT INTO sayiir_workflow_signals (instance_id, signal_name, payload, created_at)
VALUES (:instance_id, :signal_name, :payload, :now)

-- name: next_signal
SELECT id, CAST(payload AS BLOB) FROM sayiir_workflow_signals
WHERE instance_id = :instance_id AND signal_name = :signal_name AND consumed_at IS NULL
ORDER BY id
LIMIT 1

-- name: mark_signal_consumed
UPDATE sayiir_workflow_signals SET consumed_at = :now WHERE id = :id
