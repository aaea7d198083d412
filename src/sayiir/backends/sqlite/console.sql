-- The operator console's queries (RunQueries, issue 14). The run list itself is composed
-- from the filter by sayiir.backends._runlist (optional conditions); these are fixed.

-- name: insert_definition
INSERT OR IGNORE INTO sayiir_workflow_definitions
    (definition_hash, workflow_id, structure, first_seen)
VALUES (:definition_hash, :workflow_id, :structure, :first_seen)

-- name: select_definitions
SELECT definition_hash, workflow_id, structure, first_seen
FROM sayiir_workflow_definitions ORDER BY first_seen DESC, definition_hash

-- name: select_definition
SELECT definition_hash, workflow_id, structure, first_seen
FROM sayiir_workflow_definitions WHERE definition_hash = :definition_hash

-- name: insert_audit
INSERT INTO sayiir_audit_log (at, actor, action, instance_id, detail)
VALUES (:at, :actor, :action, :instance_id, :detail)

-- name: select_audit_of
SELECT at, actor, action, instance_id, detail FROM sayiir_audit_log
WHERE instance_id = :instance_id ORDER BY id DESC LIMIT :limit

-- name: select_audit
SELECT at, actor, action, instance_id, detail FROM sayiir_audit_log
ORDER BY id DESC LIMIT :limit

-- Steps of a run in start order (a task's first attempt, else its checkpoint's time), one
-- page after the cursor (start, key); served by the checkpoints' primary key and the
-- attempts' unique (instance_id, key, attempt) index.
-- name: select_step_keys
SELECT key, min(t) AS started FROM (
    SELECT key, created_at AS t FROM sayiir_checkpoints WHERE instance_id = :instance_id
    UNION ALL
    SELECT key, started_at FROM sayiir_task_executions WHERE instance_id = :instance_id
)
GROUP BY key
HAVING :after_t IS NULL OR (min(t), key) > (:after_t, :after_key)
ORDER BY started, key
LIMIT :limit

-- name: select_step_checkpoints
SELECT c.key, NULL AS task_id, c.size,
       CASE WHEN c.size <= :max_preview THEN CAST(c.output AS BLOB) END, c.created_at
FROM sayiir_checkpoints AS c, json_each(:keys) AS k
WHERE c.instance_id = :instance_id AND c.key = k.value

-- name: select_step_attempts
SELECT e.key, e.task_id, e.attempt, e.status, e.started_at, e.finished_at, e.error,
       e.next_retry_at, e.deadline, e.worker_id
FROM sayiir_task_executions AS e, json_each(:keys) AS k
WHERE e.instance_id = :instance_id AND e.key = k.value

-- name: select_run_signals
SELECT signal_name, CAST(payload AS BLOB), created_at, consumed_at
FROM sayiir_workflow_signals WHERE instance_id = :instance_id ORDER BY id

-- name: select_payload
SELECT CASE :pick WHEN 'input' THEN CAST(input AS BLOB) ELSE CAST(output AS BLOB) END
FROM sayiir_workflow_instances WHERE instance_id = :instance_id

-- Runs created in [since, until) by status and time bucket: the (created_at) index serves
-- the range.
-- name: status_counts
SELECT CAST((created_at - :since) / :bucket AS INTEGER) AS b, status, count(*)
FROM sayiir_workflow_instances
WHERE created_at >= :since AND created_at < :until
GROUP BY b, status

-- Retry a failed run (RunQueries.reopen_failed): running again with its checkpoints; the
-- attempts of its unfinished steps go, so they get fresh retries. One transaction.
-- name: select_status
SELECT status FROM sayiir_workflow_instances WHERE instance_id = :instance_id

-- name: reopen_failed
UPDATE sayiir_workflow_instances
SET status = 'running', error = NULL, completed_at = NULL, lease_until = NULL,
    request_kind = NULL, request_reason = NULL, request_by = NULL, updated_at = :now
WHERE instance_id = :instance_id AND status = 'failed'

-- name: delete_unfinished_attempts
DELETE FROM sayiir_task_executions
WHERE instance_id = :instance_id
  AND key NOT IN (SELECT key FROM sayiir_checkpoints WHERE instance_id = :instance_id)
