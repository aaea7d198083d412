-- Named queries of the PostgreSQL backend (loaded by sayiir.backends._sqlfiles.load_queries).
--
-- Placeholders in braces are filled once per backend with psycopg.sql: {t_*} are
-- schema-qualified table identifiers, {n_*} bare identifiers, {schema} the schema, and
-- {_fragment} the text of the fragment block of that name (blocks whose name starts with an
-- underscore are fragments, never executed alone). Values are always bound parameters.
--
-- Every storage write is ONE statement (data-modifying CTEs), run in autocommit: it is
-- atomic, costs one round trip, and a retry after a lost connection re-applies it safely
-- (checkpoints and attempts are upserts, signals carry a send_id).
--
-- The status words mirror sayiir.core.records: 'cancelled'/'paused' are the statuses whose
-- request an engine must obey on its next write (applied_request); an instance touched by a
-- write otherwise becomes 'running' (InMemoryBackend._touch).


-- name: _instance_columns
i.instance_id, i.workflow_id, i.definition_hash, i.status, i.input, i.output, i.error,
i.reason, i.cancelled_by, i.paused_by, extract(epoch FROM i.wake_at)::float8, i.park_node,
i.signal_name, i.request_kind, i.request_reason, i.request_by,
extract(epoch FROM i.created_at)::float8, extract(epoch FROM i.updated_at)::float8,
extract(epoch FROM i.completed_at)::float8, i.distributed, i.start_token


-- name: _instance_values
(instance_id, workflow_id, definition_hash, status, input, output, error, reason,
 cancelled_by, paused_by, wake_at, park_node, signal_name, request_kind, request_reason,
 request_by, distributed, start_token, created_at, updated_at, completed_at)
VALUES (%(id)s, %(workflow_id)s, %(definition_hash)s, %(status)s, %(input)s, %(output)s,
        %(error)s, %(reason)s, %(cancelled_by)s, %(paused_by)s,
        to_timestamp(%(wake_at)s::float8), %(park_node)s, %(signal_name)s, %(request_kind)s,
        %(request_reason)s, %(request_by)s, %(distributed)s, %(start_token)s,
        to_timestamp(%(created_at)s::float8), to_timestamp(%(updated_at)s::float8),
        to_timestamp(%(completed_at)s::float8))


-- The write every engine write carries (InMemoryBackend._touch): bump updated_at, make the
-- instance running unless a cancel/pause was applied to it, and return what the engine must
-- obey next. Defines the CTE "inst"; it has no row when the instance does not exist.
-- name: _touch
inst AS (
    UPDATE {t_instances} AS i
    SET updated_at = now(),
        status = CASE WHEN i.status IN ('cancelled', 'paused') THEN i.status ELSE 'running' END
    WHERE i.instance_id = %(id)s
    RETURNING i.status, i.reason, i.cancelled_by, i.paused_by,
              i.request_kind, i.request_reason, i.request_by
)


-- Checkpoints and their task executions from parallel arrays (one element per step).
-- Needs the CTE "inst": nothing is written for an unknown instance.
-- name: _write_steps
steps AS (
    SELECT s.*
    FROM unnest(%(keys)s::text[], %(task_ids)s::text[], %(outputs)s::bytea[],
                %(attempts)s::int4[], %(started)s::float8[], %(finished)s::float8[],
                %(workers)s::text[])
         AS s (key, task_id, output, attempt, started, finished, worker_id)
    WHERE EXISTS (SELECT FROM inst)
), cp AS (
    INSERT INTO {t_checkpoints} AS c (instance_id, key, task_id, output)
    SELECT %(id)s, s.key, s.task_id, s.output FROM steps AS s
    ON CONFLICT (instance_id, key) DO UPDATE
    SET task_id = excluded.task_id, output = excluded.output, created_at = excluded.created_at
), te AS (
    INSERT INTO {t_task_executions} AS t
        (instance_id, task_key, task_id, attempt, status, worker_id, started_at, finished_at,
         duration_ms)
    SELECT %(id)s, s.key, s.task_id, s.attempt, 'completed', s.worker_id,
           to_timestamp(s.started), to_timestamp(s.finished), (s.finished - s.started) * 1000
    FROM steps AS s
    WHERE s.task_id IS NOT NULL
    ON CONFLICT (instance_id, task_key, attempt) DO UPDATE
    SET task_id = excluded.task_id, status = excluded.status, worker_id = excluded.worker_id,
        started_at = excluded.started_at, finished_at = excluded.finished_at,
        duration_ms = excluded.duration_ms, error = NULL, next_retry_at = NULL
)


-- Insert unless the id exists; return (inserted, existing row...). When neither shows (a
-- concurrent insert committed after this statement's snapshot) the caller asks again.
-- name: create_instance
WITH ins AS (
    INSERT INTO {t_instances} {_instance_values}
    ON CONFLICT (instance_id) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT FROM ins), {_instance_columns}
FROM (SELECT) AS one
LEFT JOIN {t_instances} AS i ON i.instance_id = %(id)s AND NOT EXISTS (SELECT FROM ins)


-- Run inside a transaction before replace_instance: waits for writers of the old run, so
-- the next statement's snapshot sees all their rows.
-- name: lock_instance
SELECT 1 FROM {t_instances} WHERE instance_id = %(id)s FOR UPDATE


-- Start over under the same id: drop the old run's checkpoints, attempts and consumed
-- signals (buffered ones stay for the new run), then insert or overwrite the row.
-- name: replace_instance
WITH del_cp AS (
    DELETE FROM {t_checkpoints} WHERE instance_id = %(id)s
), del_te AS (
    DELETE FROM {t_task_executions} WHERE instance_id = %(id)s
), del_sig AS (
    DELETE FROM {t_signals} WHERE instance_id = %(id)s AND consumed_at IS NOT NULL
)
INSERT INTO {t_instances} AS i {_instance_values}
ON CONFLICT (instance_id) DO UPDATE
SET workflow_id = excluded.workflow_id, definition_hash = excluded.definition_hash,
    status = excluded.status, input = excluded.input, output = excluded.output,
    error = excluded.error, reason = excluded.reason, cancelled_by = excluded.cancelled_by,
    paused_by = excluded.paused_by, wake_at = excluded.wake_at, park_node = excluded.park_node,
    signal_name = excluded.signal_name, request_kind = excluded.request_kind,
    request_reason = excluded.request_reason, request_by = excluded.request_by,
    distributed = excluded.distributed, start_token = excluded.start_token,
    created_at = excluded.created_at,
    updated_at = excluded.updated_at, completed_at = excluded.completed_at


-- Instance row, checkpoints and the attempts of tasks without a checkpoint, in one read
-- (one snapshot). Attempts come in insertion order for fold_attempt.
-- name: load
SELECT {_instance_columns},
       c.keys, c.outputs,
       a.keys, a.task_ids, a.attempts, a.statuses, a.started, a.finished, a.errors,
       a.next_retry, a.deadlines, a.workers
FROM {t_instances} AS i
CROSS JOIN LATERAL (
    SELECT array_agg(cp.key ORDER BY cp.key) AS keys,
           array_agg(cp.output ORDER BY cp.key) AS outputs
    FROM {t_checkpoints} AS cp
    WHERE cp.instance_id = i.instance_id
) AS c
CROSS JOIN LATERAL (
    SELECT array_agg(t.task_key ORDER BY t.id) AS keys,
           array_agg(t.task_id ORDER BY t.id) AS task_ids,
           array_agg(t.attempt ORDER BY t.id) AS attempts,
           array_agg(t.status ORDER BY t.id) AS statuses,
           array_agg(extract(epoch FROM t.started_at)::float8 ORDER BY t.id) AS started,
           array_agg(extract(epoch FROM t.finished_at)::float8 ORDER BY t.id) AS finished,
           array_agg(t.error ORDER BY t.id) AS errors,
           array_agg(extract(epoch FROM t.next_retry_at)::float8 ORDER BY t.id) AS next_retry,
           array_agg(extract(epoch FROM t.deadline)::float8 ORDER BY t.id) AS deadlines,
           array_agg(t.worker_id ORDER BY t.id) AS workers
    FROM {t_task_executions} AS t
    WHERE t.instance_id = i.instance_id
      AND t.status <> 'completed'
      AND NOT EXISTS (SELECT FROM {t_checkpoints} AS cp
                      WHERE cp.instance_id = t.instance_id AND cp.key = t.task_key)
) AS a
WHERE i.instance_id = %(id)s


-- name: save_steps
WITH {_touch}, {_write_steps}
SELECT * FROM inst


-- name: record_attempt
WITH {_touch}, te AS (
    INSERT INTO {t_task_executions} AS t
        (instance_id, task_key, task_id, attempt, status, worker_id, started_at, finished_at,
         duration_ms, error, next_retry_at, deadline)
    SELECT %(id)s, %(key)s, %(task_id)s, %(attempt)s, %(status)s, %(worker_id)s,
           to_timestamp(%(started)s::float8), to_timestamp(%(finished)s::float8),
           (%(finished)s::float8 - %(started)s::float8) * 1000, %(error)s,
           to_timestamp(%(next_retry_at)s::float8), to_timestamp(%(deadline)s::float8)
    WHERE EXISTS (SELECT FROM inst)
    ON CONFLICT (instance_id, task_key, attempt) DO UPDATE
    SET task_id = excluded.task_id, status = excluded.status, worker_id = excluded.worker_id,
        started_at = excluded.started_at, finished_at = excluded.finished_at,
        duration_ms = excluded.duration_ms, error = excluded.error,
        next_retry_at = excluded.next_retry_at, deadline = excluded.deadline
)
SELECT * FROM inst


-- Pop the oldest buffered event of (instance, name) into checkpoint %(key)s. Returns
-- (instance exists, payload taken, checkpoint already there). %(retry)s is true only when
-- the call is re-sent after a lost connection: then an existing checkpoint means our first
-- attempt committed, and no second event is taken.
-- name: consume_signal
WITH prev AS (
    SELECT c.output FROM {t_checkpoints} AS c
    WHERE %(retry)s AND c.instance_id = %(id)s AND c.key = %(key)s
), sig AS (
    SELECT s.id FROM {t_signals} AS s
    WHERE s.instance_id = %(id)s AND s.signal_name = %(name)s AND s.consumed_at IS NULL
      AND NOT EXISTS (SELECT FROM prev)
      AND EXISTS (SELECT FROM {t_instances} AS i WHERE i.instance_id = %(id)s)
    ORDER BY s.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE {t_signals} AS s SET consumed_at = now()
    FROM sig WHERE s.id = sig.id
    RETURNING s.payload
), inst AS (
    UPDATE {t_instances} AS i
    SET updated_at = now(),
        status = CASE WHEN i.status IN ('cancelled', 'paused') THEN i.status ELSE 'running' END
    WHERE i.instance_id = %(id)s AND EXISTS (SELECT FROM taken)
    RETURNING 1
), cp AS (
    INSERT INTO {t_checkpoints} AS c (instance_id, key, task_id, output)
    SELECT %(id)s, %(key)s, NULL, t.payload FROM taken AS t
    ON CONFLICT (instance_id, key) DO UPDATE
    SET task_id = excluded.task_id, output = excluded.output, created_at = excluded.created_at
)
SELECT EXISTS (SELECT FROM {t_instances} AS i WHERE i.instance_id = %(id)s),
       (SELECT t.payload FROM taken AS t),
       (SELECT p.output FROM prev AS p)


-- The final (terminal or parked) state and the last checkpoints. The flags are computed by
-- the caller from the status, as InMemoryBackend.finish does.
-- name: finish
WITH inst AS (
    UPDATE {t_instances} AS i
    SET status = %(status)s, output = %(output)s, error = %(error)s,
        wake_at = to_timestamp(%(wake_at)s::float8), park_node = %(park_node)s,
        signal_name = %(signal_name)s, updated_at = now(),
        reason = CASE WHEN %(set_reason)s THEN %(reason)s ELSE i.reason END,
        cancelled_by = CASE WHEN %(set_cancelled_by)s THEN %(by)s ELSE i.cancelled_by END,
        paused_by = CASE WHEN %(set_paused_by)s THEN %(by)s ELSE i.paused_by END,
        completed_at = CASE WHEN %(terminal)s THEN now() ELSE i.completed_at END,
        request_kind = CASE WHEN %(clear_request)s THEN NULL ELSE i.request_kind END,
        request_reason = CASE WHEN %(clear_request)s THEN NULL ELSE i.request_reason END,
        request_by = CASE WHEN %(clear_request)s THEN NULL ELSE i.request_by END
    WHERE i.instance_id = %(id)s
    RETURNING 1
), {_write_steps}
SELECT count(*) FROM inst


-- name: get_instance
SELECT {_instance_columns} FROM {t_instances} AS i WHERE i.instance_id = %(id)s


-- name: get_checkpoint
SELECT c.output FROM {t_checkpoints} AS c WHERE c.instance_id = %(id)s AND c.key = %(key)s


-- Cancel/pause per control_decision, which the caller evaluates for every status: the
-- statuses where the request applies now (%(apply)s) and where it is stored for the
-- executing engine (%(request)s). A pending cancel is never replaced (not even by a
-- later cancel, nor downgraded to a pause).
-- Returns the status found (no row: unknown instance).
-- name: request_control
WITH old AS (
    SELECT i.instance_id, i.status, i.request_kind FROM {t_instances} AS i
    WHERE i.instance_id = %(id)s
    FOR UPDATE
), applied AS (
    UPDATE {t_instances} AS i
    SET status = %(applied_status)s, reason = %(reason)s,
        cancelled_by = CASE WHEN %(kind)s = 'cancel' THEN %(by)s ELSE i.cancelled_by END,
        paused_by = CASE WHEN %(kind)s = 'pause' THEN %(by)s ELSE i.paused_by END,
        completed_at = CASE WHEN %(kind)s = 'cancel' THEN now() ELSE i.completed_at END,
        request_kind = NULL, request_reason = NULL, request_by = NULL,
        wake_at = NULL, park_node = NULL, signal_name = NULL, updated_at = now()
    FROM old
    WHERE i.instance_id = old.instance_id AND old.status = ANY (%(apply)s::text[])
), requested AS (
    UPDATE {t_instances} AS i
    SET request_kind = %(kind)s, request_reason = %(reason)s, request_by = %(by)s
    FROM old
    WHERE i.instance_id = old.instance_id AND old.status = ANY (%(request)s::text[])
      AND old.request_kind IS DISTINCT FROM 'cancel'
)
SELECT old.status FROM old


-- A paused instance becomes running; otherwise a pending pause request is withdrawn.
-- Returns (status found, request kind found); no row: unknown instance.
-- name: unpause
WITH old AS (
    SELECT i.instance_id, i.status, i.request_kind FROM {t_instances} AS i
    WHERE i.instance_id = %(id)s
    FOR UPDATE
), resumed AS (
    UPDATE {t_instances} AS i
    SET status = 'running', reason = NULL, paused_by = NULL, updated_at = now()
    FROM old
    WHERE i.instance_id = old.instance_id AND old.status = 'paused'
), withdrawn AS (
    UPDATE {t_instances} AS i
    SET request_kind = NULL, request_reason = NULL, request_by = NULL
    FROM old
    WHERE i.instance_id = old.instance_id AND old.status <> 'paused'
      AND old.request_kind = 'pause'
)
SELECT old.status, old.request_kind FROM old


-- Buffer an event unless the instance has finished; return the status found (NULL: the
-- instance does not exist yet, and the event waits for it). FOR SHARE orders this after a
-- concurrent finish, so an event is never buffered for a run that just ended.
-- name: send_signal
WITH inst AS (
    SELECT i.status FROM {t_instances} AS i WHERE i.instance_id = %(id)s FOR SHARE
), ins AS (
    INSERT INTO {t_signals} (instance_id, signal_name, payload, send_id)
    SELECT %(id)s, %(name)s, %(payload)s, %(send_id)s
    WHERE NOT EXISTS (SELECT FROM inst
                      WHERE inst.status IN ('completed', 'failed', 'cancelled'))
    ON CONFLICT (send_id) DO NOTHING
)
SELECT (SELECT inst.status FROM inst)


-- name: begin
BEGIN

-- name: commit
COMMIT

-- name: server_info
SELECT current_setting('server_version_num')::int, current_user, current_database()

-- name: migrations_table_exists
SELECT EXISTS (
    SELECT FROM pg_catalog.pg_tables WHERE schemaname = %(schema)s AND tablename = %(table)s
)

-- name: applied_migrations
SELECT version, name, checksum FROM {t_migrations} ORDER BY version

-- (schema exists, may create in it, may create schemas in this database)
-- name: privileges
SELECT n.oid IS NOT NULL,
       coalesce(has_schema_privilege(n.oid, 'CREATE'), false),
       has_database_privilege(current_database(), 'CREATE')
FROM (SELECT) AS one
LEFT JOIN pg_catalog.pg_namespace AS n ON n.nspname = %(schema)s

-- Serialises migrators of one schema + prefix; released at commit (or when the session dies).
-- name: migration_lock
SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS {t_migrations} (
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_migrations_pkey} PRIMARY KEY (version)
)

-- name: record_migration
INSERT INTO {t_migrations} (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)
