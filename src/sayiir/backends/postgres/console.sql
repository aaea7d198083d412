-- The operator console's queries (RunQueries, issue 14), compiled with queries.sql. The run
-- list itself is composed from the filter by sayiir.backends._runlist (optional conditions,
-- each served by an index of migration 0006); these are fixed. Times leave as epoch seconds
-- (float8) like the storage queries', except cursor keys, which are exact microseconds.

-- Once per definition hash and process, before the create_instance of a run.
-- name: insert_definition
INSERT INTO {t_definitions} (definition_hash, workflow_id, structure)
VALUES (%(definition_hash)s, %(workflow_id)s, %(structure)s::jsonb)
ON CONFLICT (definition_hash) DO NOTHING

-- name: select_definitions
SELECT definition_hash, workflow_id, structure::text, date_part('epoch', first_seen)::float8
FROM {t_definitions} ORDER BY first_seen DESC, definition_hash

-- name: select_definition
SELECT definition_hash, workflow_id, structure::text, date_part('epoch', first_seen)::float8
FROM {t_definitions} WHERE definition_hash = %(definition_hash)s

-- name: insert_audit
INSERT INTO {t_audit} (at, actor, action, instance_id, detail)
VALUES (to_timestamp(%(at)s::float8), %(actor)s, %(action)s, %(instance_id)s,
        %(detail)s::jsonb)

-- The audit of one run (audit_log_instance_idx), or of all runs (primary key), newest first.
-- name: select_audit_of
SELECT date_part('epoch', at)::float8, actor, action, instance_id, detail::text
FROM {t_audit} WHERE instance_id = %(instance_id)s ORDER BY id DESC LIMIT %(limit)s

-- name: select_audit
SELECT date_part('epoch', at)::float8, actor, action, instance_id, detail::text
FROM {t_audit} ORDER BY id DESC LIMIT %(limit)s

-- Steps of a run in start order (a task's first attempt, else its checkpoint's time), one
-- page after the cursor (start in microseconds, key). Reads the run's rows through the
-- checkpoints' primary key and the executions' (instance_id, task_key, attempt) key.
-- name: select_step_keys
SELECT key, (date_part('epoch', m) * 1000000)::int8 FROM (
    SELECT key, min(t) AS m FROM (
        SELECT c.key, c.created_at AS t FROM {t_checkpoints} AS c
        WHERE c.instance_id = %(instance_id)s
        UNION ALL
        SELECT e.task_key, e.started_at FROM {t_task_executions} AS e
        WHERE e.instance_id = %(instance_id)s
    ) AS s
    GROUP BY key
) AS k
WHERE %(after_t)s::int8 IS NULL
   OR (m, key) > ('epoch'::timestamptz + %(after_t)s::int8 * interval '1 microsecond',
                  %(after_key)s::text)
ORDER BY m, key
LIMIT %(limit)s

-- name: select_step_checkpoints
SELECT c.key, c.task_id, c.size, CASE WHEN c.size <= %(max_preview)s THEN c.output END,
       date_part('epoch', c.created_at)::float8
FROM {t_checkpoints} AS c
WHERE c.instance_id = %(instance_id)s AND c.key = ANY(%(keys)s::text[])

-- name: select_step_attempts
SELECT e.task_key, e.task_id, e.attempt, e.status, date_part('epoch', e.started_at)::float8,
       date_part('epoch', e.finished_at)::float8, e.error,
       date_part('epoch', e.next_retry_at)::float8, date_part('epoch', e.deadline)::float8,
       e.worker_id
FROM {t_task_executions} AS e
WHERE e.instance_id = %(instance_id)s AND e.task_key = ANY(%(keys)s::text[])

-- name: select_run_signals
SELECT s.signal_name, s.payload, date_part('epoch', s.created_at)::float8,
       date_part('epoch', s.consumed_at)::float8
FROM {t_signals} AS s WHERE s.instance_id = %(instance_id)s ORDER BY s.id

-- name: select_payload
SELECT CASE WHEN %(pick)s = 'input' THEN i.input ELSE i.output END
FROM {t_instances} AS i WHERE i.instance_id = %(instance_id)s

-- Runs created in [since, until) by status and time bucket: an index-only scan of
-- workflow_instances_created_idx (created_at, instance_id) INCLUDE (status).
-- name: status_counts
SELECT floor((date_part('epoch', i.created_at) - %(since)s::float8) / %(bucket)s::float8)::int8,
       i.status, count(*)
FROM {t_instances} AS i
WHERE i.created_at >= to_timestamp(%(since)s::float8)
  AND i.created_at < to_timestamp(%(until)s::float8)
GROUP BY 1, 2

-- The worker queue: ready entries (task_queue_ready_idx), held ones (task_queue_lease_idx).
-- name: queue_stats
SELECT
    (SELECT count(*) FROM {t_task_queue} AS q
     WHERE q.worker_id IS NULL AND q.available_at <= now()),
    (SELECT count(*) FROM {t_task_queue} AS q WHERE q.worker_id IS NOT NULL),
    (SELECT date_part('epoch', now() - min(q.available_at))::float8 FROM {t_task_queue} AS q
     WHERE q.worker_id IS NULL AND q.available_at <= now())

-- Retry a failed run (RunQueries.reopen_failed), atomically: it becomes running again with
-- its checkpoints, and loses the attempts of its unfinished steps (so they get fresh
-- retries); a run submitted for workers gets its "continue" entry back. Returns the status
-- found (NULL: no such run).
-- name: reopen_failed
WITH found AS (
    SELECT i.status FROM {t_instances} AS i WHERE i.instance_id = %(instance_id)s FOR UPDATE
), upd AS (
    UPDATE {t_instances} AS i
    SET status = 'running', error = NULL, completed_at = NULL, lease_until = NULL,
        request_kind = NULL, request_reason = NULL, request_by = NULL, updated_at = now()
    WHERE i.instance_id = %(instance_id)s AND i.status = 'failed'
    RETURNING i.distributed, i.definition_hash
), gone AS (
    DELETE FROM {t_task_executions} AS e
    WHERE e.instance_id = %(instance_id)s AND EXISTS (SELECT FROM upd)
      AND NOT EXISTS (SELECT FROM {t_checkpoints} AS c
                      WHERE c.instance_id = e.instance_id AND c.key = e.task_key)
), start AS (
    INSERT INTO {t_task_queue} (instance_id, task_key, definition_hash)
    SELECT %(instance_id)s, '', u.definition_hash FROM upd AS u WHERE u.distributed
    ON CONFLICT (instance_id, task_key) DO NOTHING
    RETURNING 1
), wake AS (
    SELECT pg_notify({channel}, '') WHERE EXISTS (SELECT FROM start)
)
SELECT (SELECT f.status FROM found AS f), (SELECT count(*) FROM wake)
