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
--
-- Worker queue ({t_task_queue}, see InMemoryBackend for the reference semantics): every
-- statement that makes an entry claimable now also runs pg_notify({channel}, '') (no
-- payload, ever); notifications are sent at commit, so a worker never wakes up before the
-- entry is visible. Row locks are always taken instance row first, then queue rows.


-- name: _instance_columns
i.instance_id, i.workflow_id, i.definition_hash, i.status, i.input, i.output, i.error,
i.reason, i.cancelled_by, i.paused_by, extract(epoch FROM i.wake_at)::float8, i.park_node,
i.signal_name, i.request_kind, i.request_reason, i.request_by,
extract(epoch FROM i.created_at)::float8, extract(epoch FROM i.updated_at)::float8,
extract(epoch FROM i.completed_at)::float8, i.distributed, i.start_token,
extract(epoch FROM i.lease_until)::float8, i.traceparent


-- name: _instance_values
{_instance_cols}
VALUES {_instance_row}


-- name: _instance_cols
(instance_id, workflow_id, definition_hash, status, input, output, error, reason,
 cancelled_by, paused_by, wake_at, park_node, signal_name, request_kind, request_reason,
 request_by, distributed, start_token, created_at, updated_at, completed_at, lease_until,
 traceparent)


-- name: _instance_row
       (%(id)s, %(workflow_id)s, %(definition_hash)s, %(status)s, %(input)s, %(output)s,
        %(error)s, %(reason)s, %(cancelled_by)s, %(paused_by)s,
        to_timestamp(%(wake_at)s::float8), %(park_node)s, %(signal_name)s, %(request_kind)s,
        %(request_reason)s, %(request_by)s, %(distributed)s, %(start_token)s,
        to_timestamp(%(created_at)s::float8), to_timestamp(%(updated_at)s::float8),
        to_timestamp(%(completed_at)s::float8),
        now() + make_interval(secs => %(start_lease)s::float8), %(traceparent)s)


-- The layout switches (partition.sql has their partitioned forms, named _x__part). In this,
-- the plain layout, task executions and checkpoints have no column of their own for the
-- run's creation time (_run_col, _run_val: nothing), the primary key of the instances makes
-- a second run with one id a conflict (_new_run_conflict), and the foreign keys to the
-- instances delete a run's other rows with it (_drop_run_rows: only the task limits' rows,
-- which have no foreign key).
-- name: _run_col


-- name: _run_val


-- name: _new_run_conflict
ON CONFLICT (instance_id) DO NOTHING


-- name: _drop_run_rows
, del_tslot AS (
    DELETE FROM {t_task_slots} AS s USING old WHERE s.instance_id = old.instance_id
), del_twait AS (
    DELETE FROM {t_task_waits} AS w USING old WHERE w.instance_id = old.instance_id
)


-- replace_instance's write of the run's row: insert it, or overwrite the old run's. Defines
-- the CTE "up" (a row when written).
-- name: _replace_run
up AS (
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
        updated_at = excluded.updated_at, completed_at = excluded.completed_at,
        lease_until = excluded.lease_until, traceparent = excluded.traceparent
    RETURNING 1
)


-- The run a write of an executing engine may change: the one that carries its token
-- (%(token)s; NULL, or a row from before tokens, skips the check). A write from an execution
-- that was taken over, or from a run that terminate_existing replaced, matches no row,
-- changes nothing, and the caller tells it so.
-- name: _ours
i.instance_id = %(id)s
AND (%(token)s::uuid IS NULL OR i.start_token IS NULL OR i.start_token = %(token)s::uuid)


-- The lease after a write of the executing engine: renewed (%(lease)s seconds, database
-- clock), except by a write without a token, on a paused run, or on a run of workers.
-- name: _renewed_lease
CASE WHEN %(token)s::uuid IS NULL OR i.status = 'paused' OR i.distributed THEN i.lease_until
     ELSE now() + make_interval(secs => %(lease)s::float8) END


-- The write every engine write carries (InMemoryBackend._touch): bump updated_at, make the
-- instance running unless a pause was applied to it, renew the lease, and return what the
-- engine must obey next. Defines the CTE "inst"; it has no row when the instance does not
-- exist, is another execution's (_ours), or is finished or cancelled (a final state is
-- final: write_decision); the caller then finds out which.
-- name: _touch
inst AS (
    UPDATE {t_instances} AS i
    SET updated_at = now(),
        status = CASE WHEN i.status = 'paused' THEN i.status ELSE 'running' END,
        lease_until = {_renewed_lease}
    WHERE {_ours} AND i.status NOT IN ('completed', 'failed', 'cancelled')
    RETURNING i.status, i.reason, i.cancelled_by, i.paused_by,
              i.request_kind, i.request_reason, i.request_by
)


-- The steps a write carries, as rows (key, task_id, output, attempt, started, finished,
-- worker_id). Every query that uses {_steps} is compiled once per source below (see
-- _sql.VARIANTS): parallel arrays for several steps, plain parameters for the common
-- single step (binding seven one-element arrays cost more client CPU than the statement's
-- server time), and no parameters at all for none.
-- name: _steps_many
SELECT * FROM unnest(%(keys)s::text[], %(task_ids)s::text[], %(outputs)s::bytea[],
                     %(attempts)s::int4[], %(started)s::float8[], %(finished)s::float8[],
                     %(workers)s::text[])


-- name: _steps_one
SELECT %(s_key)s::text, %(s_task_id)s::text, %(s_output)s::bytea, %(s_attempt)s::int4,
       %(s_started)s::float8, %(s_finished)s::float8, %(s_worker)s::text


-- name: _steps_none
SELECT NULL::text, NULL::text, NULL::bytea, NULL::int4, NULL::float8, NULL::float8,
       NULL::text
LIMIT 0


-- The task slots a write's steps give back (StepRecord.frees_slot): a task with
-- max_concurrent frees its slot in the write of its checkpoint (a step that is checkpointed
-- never runs again), not in a statement of its own. A switch of _sql.VARIANTS: a write
-- that frees none has no such CTE. The slots' (instance_id, step_key) index.
-- name: _free_slots
, freed AS (
    DELETE FROM {t_task_slots} AS f
    USING steps AS s
    WHERE f.instance_id = %(id)s AND f.step_key = s.key
)


-- name: _free_none
/* no task slot freed */


-- Checkpoints and their task executions, one per step, and the slots they free (_free_slots).
-- Needs the CTE "inst": nothing is written for an unknown instance.
-- name: _write_steps
steps AS (
    SELECT s.*
    FROM ({_steps}) AS s (key, task_id, output, attempt, started, finished, worker_id)
    WHERE EXISTS (SELECT FROM inst)
), cp AS (
    INSERT INTO {t_checkpoints} AS c (instance_id, key, task_id, output{_run_col})
    SELECT %(id)s, s.key, s.task_id, s.output{_run_val} FROM steps AS s
    ON CONFLICT (instance_id, key{_run_col}) DO UPDATE
    SET task_id = excluded.task_id, output = excluded.output, created_at = excluded.created_at
), te AS (
    INSERT INTO {t_task_executions} AS t
        (instance_id, task_key, task_id, attempt, status, worker_id, started_at, finished_at,
         duration_ms{_run_col})
    SELECT %(id)s, s.key, s.task_id, s.attempt, 'completed', s.worker_id,
           to_timestamp(s.started), to_timestamp(s.finished), (s.finished - s.started) * 1000
           {_run_val}
    FROM steps AS s
    WHERE s.task_id IS NOT NULL
    ON CONFLICT (instance_id, task_key, attempt{_run_col}) DO UPDATE
    SET task_id = excluded.task_id, status = excluded.status, worker_id = excluded.worker_id,
        started_at = excluded.started_at, finished_at = excluded.finished_at,
        duration_ms = excluded.duration_ms, error = NULL, next_retry_at = NULL
)
{_free}


-- Insert unless the id exists; return (inserted, existing row..., notified). When neither
-- shows (a concurrent insert committed after this statement's snapshot) the caller asks
-- again. A run submitted for workers (distributed) starts with its "continue" entry.
-- name: create_instance
WITH ins AS (
    INSERT INTO {t_instances} {_instance_values}
    {_new_run_conflict}
    RETURNING 1
), start AS (
    INSERT INTO {t_task_queue}
        (instance_id, task_key, definition_hash, priority, concurrency_key, concurrency_limit)
    SELECT %(id)s, '', %(definition_hash)s, %(priority)s, %(concurrency_key)s,
           %(concurrency_limit)s
    FROM ins WHERE %(distributed)s
    RETURNING 1
), wake AS (
    SELECT pg_notify({channel}, '') WHERE EXISTS (SELECT FROM start)
)
SELECT EXISTS (SELECT FROM ins), {_instance_columns}, (SELECT count(*) FROM wake)
FROM (SELECT) AS one
LEFT JOIN {t_instances} AS i ON i.instance_id = %(id)s AND NOT EXISTS (SELECT FROM ins)


-- Run inside a transaction before replace_instance: waits for writers of the old run, so
-- the next statement's snapshot sees all their rows.
-- name: lock_instance
SELECT 1 FROM {t_instances} WHERE instance_id = %(id)s FOR UPDATE


-- Start over under the same id: drop the old run's checkpoints, attempts, consumed signals
-- (buffered ones stay for the new run) and queue entries, then insert or overwrite the row.
-- A distributed run gets a fresh "continue" entry: an old one is reset in place (a row
-- cannot be deleted and inserted by one statement), which also fences off its holder.
-- name: replace_instance
WITH del_cp AS (
    DELETE FROM {t_checkpoints} WHERE instance_id = %(id)s
), del_te AS (
    DELETE FROM {t_task_executions} WHERE instance_id = %(id)s
), del_sig AS (
    DELETE FROM {t_signals} WHERE instance_id = %(id)s AND consumed_at IS NOT NULL
), del_q AS (
    DELETE FROM {t_task_queue}
    WHERE instance_id = %(id)s AND (task_key <> '' OR NOT %(distributed)s)
), start AS (
    INSERT INTO {t_task_queue} AS q
        (instance_id, task_key, definition_hash, priority, concurrency_key, concurrency_limit)
    SELECT %(id)s, '', %(definition_hash)s, %(priority)s, %(concurrency_key)s,
           %(concurrency_limit)s
    WHERE %(distributed)s
    ON CONFLICT (instance_id, task_key) DO UPDATE
    SET task_id = NULL, definition_hash = excluded.definition_hash, priority = excluded.priority,
        concurrency_key = excluded.concurrency_key,
        concurrency_limit = excluded.concurrency_limit,
        tags = ARRAY[]::text[], available_at = now(), worker_id = NULL, attempt = 0, lease_expires_at = NULL,
        claim_token = NULL, created_at = now()
    RETURNING 1
), wake AS (
    SELECT pg_notify({channel}, '') WHERE EXISTS (SELECT FROM start)
), {_replace_run}
SELECT (SELECT count(*) FROM wake), (SELECT count(*) FROM up)


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


-- A resume becomes the run's execution (Storage.take_over): only if the run still has the
-- token the resume read, is active, and no other execution holds a live lease (database
-- clock). Returns the record as stored now; no row: not taken over.
-- name: take_over
UPDATE {t_instances} AS i
SET start_token = %(new_token)s, lease_until = now() + make_interval(secs => %(lease)s::float8),
    status = 'running', updated_at = now()
WHERE i.instance_id = %(id)s AND i.start_token IS NOT DISTINCT FROM %(token)s::uuid
  AND i.status IN ('running', 'waiting', 'awaiting_signal')
  AND (i.lease_until IS NULL OR i.lease_until <= now())
RETURNING {_instance_columns}


-- The heartbeat of an execution whose task runs long (a lease of 0 seconds releases it).
-- name: renew_lease
UPDATE {t_instances} AS i
SET lease_until = now() + make_interval(secs => %(lease)s::float8)
WHERE i.instance_id = %(id)s AND i.start_token = %(token)s::uuid AND i.status = 'running'
RETURNING 1


-- name: save_steps
WITH {_touch}, {_write_steps}
SELECT * FROM inst


-- name: record_attempt
WITH {_touch}, te AS (
    INSERT INTO {t_task_executions} AS t
        (instance_id, task_key, task_id, attempt, status, worker_id, started_at, finished_at,
         duration_ms, error, next_retry_at, deadline{_run_col})
    SELECT %(id)s, %(key)s, %(task_id)s, %(attempt)s, %(status)s, %(worker_id)s,
           to_timestamp(%(started)s::float8), to_timestamp(%(finished)s::float8),
           (%(finished)s::float8 - %(started)s::float8) * 1000, %(error)s,
           to_timestamp(%(next_retry_at)s::float8), to_timestamp(%(deadline)s::float8)
           {_run_val}
    WHERE EXISTS (SELECT FROM inst)
    ON CONFLICT (instance_id, task_key, attempt{_run_col}) DO UPDATE
    SET task_id = excluded.task_id, status = excluded.status, worker_id = excluded.worker_id,
        started_at = excluded.started_at, finished_at = excluded.finished_at,
        duration_ms = excluded.duration_ms, error = excluded.error,
        next_retry_at = excluded.next_retry_at, deadline = excluded.deadline
)
SELECT * FROM inst


-- Pop the oldest buffered event of (instance, name) into checkpoint %(key)s. Returns
-- (the run is ours, payload taken, checkpoint already there). Idempotent per key: when the
-- checkpoint exists (a repeated call, or a call re-sent after a lost connection whose first
-- attempt committed), it is returned and no second event is taken. The run's row is locked
-- first, so a terminate_existing replacing it waits, or is waited for and then seen (the
-- lock re-checks _ours): an event is never taken by a replaced run.
-- name: consume_signal
WITH lock AS MATERIALIZED (
    SELECT 1 FROM {t_instances} AS i
    WHERE {_ours} AND i.status NOT IN ('completed', 'failed', 'cancelled')
    FOR NO KEY UPDATE
), prev AS (
    SELECT c.output FROM {t_checkpoints} AS c
    WHERE c.instance_id = %(id)s AND c.key = %(key)s AND EXISTS (SELECT FROM lock)
), sig AS (
    SELECT s.id FROM {t_signals} AS s
    WHERE s.instance_id = %(id)s AND s.signal_name = %(name)s AND s.consumed_at IS NULL
      AND NOT EXISTS (SELECT FROM prev)
      AND EXISTS (SELECT FROM lock)
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
        status = CASE WHEN i.status = 'paused' THEN i.status ELSE 'running' END,
        lease_until = {_renewed_lease}
    WHERE i.instance_id = %(id)s AND EXISTS (SELECT FROM taken)
    RETURNING 1
), cp AS (
    INSERT INTO {t_checkpoints} AS c (instance_id, key, task_id, output{_run_col})
    SELECT %(id)s, %(key)s, NULL, t.payload{_run_val} FROM taken AS t
    ON CONFLICT (instance_id, key{_run_col}) DO UPDATE
    SET task_id = excluded.task_id, output = excluded.output, created_at = excluded.created_at
)
SELECT EXISTS (SELECT FROM lock),
       (SELECT t.payload FROM taken AS t),
       (SELECT p.output FROM prev AS p)


-- The SET list of a final (terminal or parked) state; the flags are computed by the caller
-- from the status, as InMemoryBackend._finish does.
-- name: _finish_set
status = %(status)s, output = %(output)s, error = %(error)s,
wake_at = to_timestamp(%(wake_at)s::float8), park_node = %(park_node)s,
signal_name = %(signal_name)s, updated_at = now(),
reason = CASE WHEN %(set_reason)s THEN %(reason)s ELSE i.reason END,
cancelled_by = CASE WHEN %(set_cancelled_by)s THEN %(by)s ELSE i.cancelled_by END,
paused_by = CASE WHEN %(set_paused_by)s THEN %(by)s ELSE i.paused_by END,
completed_at = CASE WHEN %(terminal)s THEN now() ELSE i.completed_at END,
request_kind = CASE WHEN %(clear_request)s THEN NULL ELSE i.request_kind END,
request_reason = CASE WHEN %(clear_request)s THEN NULL ELSE i.request_reason END,
request_by = CASE WHEN %(clear_request)s THEN NULL ELSE i.request_by END


-- The run may take a final state (write_decision): it is active, or paused and the final
-- state is a pause or a cancel. A finished or cancelled run never changes.
-- name: _finishable
(i.status IN ('running', 'waiting', 'awaiting_signal')
 OR (i.status = 'paused' AND %(status)s::text IN ('paused', 'cancelled')))


-- The final (terminal or parked) state and the last checkpoints; the lease ends; a terminal
-- status drops every queue entry of the run. On a run paused meanwhile only the checkpoints
-- are stored (the pause stays). Returns 1 when the final state was written; otherwise the
-- caller finds out why.
-- name: finish
WITH fin AS (
    UPDATE {t_instances} AS i
    SET {_finish_set}, lease_until = NULL
    WHERE {_ours} AND {_finishable}
    RETURNING 1
), inst AS (
    SELECT 1 FROM fin
    UNION ALL
    SELECT 1 FROM {t_instances} AS i
    WHERE {_ours} AND i.status = 'paused' AND NOT EXISTS (SELECT FROM fin)
), {_write_steps}, dq AS (
    DELETE FROM {t_task_queue} AS q
    WHERE %(terminal)s AND q.instance_id = %(id)s AND EXISTS (SELECT FROM fin)
)
SELECT count(*) FROM fin


-- name: get_instance
SELECT {_instance_columns} FROM {t_instances} AS i WHERE i.instance_id = %(id)s


-- name: get_checkpoint
SELECT c.output FROM {t_checkpoints} AS c WHERE c.instance_id = %(id)s AND c.key = %(key)s


-- Cancel/pause per control_decision, which the caller evaluates for every status: the
-- statuses where the request applies now (%(apply)s) and where it is stored for the
-- executing engine (%(request)s). A pending cancel is never replaced (not even by a
-- later cancel, nor downgraded to a pause). A cancel applied now drops the run's queue
-- entries (their holders are fenced off); a pause applied now leaves them unclaimable.
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
), dq AS (
    DELETE FROM {t_task_queue} AS q
    USING old
    WHERE q.instance_id = old.instance_id AND %(kind)s = 'cancel'
      AND old.status = ANY (%(apply)s::text[])
)
SELECT old.status FROM old


-- The "continue" entry (key '') of the run in the CTE "src" (columns definition_hash,
-- needs_entry), as InMemoryBackend._enqueue adds it: inserted due now, or an unclaimed one
-- made due now; a worker is woken when it becomes claimable.
-- name: _continue_entry
cont AS (
    INSERT INTO {t_task_queue} AS q (instance_id, task_key, definition_hash)
    SELECT %(id)s, '', src.definition_hash FROM src
    WHERE src.needs_entry
      AND NOT EXISTS (SELECT FROM {t_checkpoints} AS c
                      WHERE c.instance_id = %(id)s AND c.key = '')
    ON CONFLICT (instance_id, task_key) DO UPDATE
    SET available_at = excluded.available_at
    WHERE q.worker_id IS NULL AND excluded.available_at < q.available_at
    RETURNING 1
), wake AS (
    SELECT pg_notify({channel}, '') WHERE EXISTS (SELECT FROM cont)
)


-- A paused instance becomes running (a distributed one gets its "continue" entry);
-- otherwise a pending pause request is withdrawn.
-- Returns (status found, request kind found, notified); no row: unknown instance.
-- name: unpause
WITH old AS (
    SELECT i.instance_id, i.status, i.request_kind FROM {t_instances} AS i
    WHERE i.instance_id = %(id)s
    FOR UPDATE
), src AS (
    UPDATE {t_instances} AS i
    SET status = 'running', reason = NULL, paused_by = NULL, updated_at = now()
    FROM old
    WHERE i.instance_id = old.instance_id AND old.status = 'paused'
    RETURNING i.definition_hash, i.distributed AS needs_entry
), {_continue_entry}, withdrawn AS (
    UPDATE {t_instances} AS i
    SET request_kind = NULL, request_reason = NULL, request_by = NULL
    FROM old
    WHERE i.instance_id = old.instance_id AND old.status <> 'paused'
      AND old.request_kind = 'pause'
)
SELECT old.status, old.request_kind, (SELECT count(*) FROM wake) FROM old


-- Buffer an event unless the instance has finished; return the status found (NULL: the
-- instance does not exist yet, and the event waits for it). FOR SHARE orders this after a
-- concurrent finish, so an event is never buffered for a run that just ended. An active
-- distributed run gets its "continue" entry, so a worker comes to consume the event.
-- name: send_signal
WITH inst AS (
    SELECT i.status, i.distributed, i.definition_hash FROM {t_instances} AS i
    WHERE i.instance_id = %(id)s
    FOR SHARE
), ins AS (
    INSERT INTO {t_signals} (instance_id, signal_name, payload, send_id)
    SELECT %(id)s, %(name)s, %(payload)s, %(send_id)s
    WHERE NOT EXISTS (SELECT FROM inst
                      WHERE inst.status IN ('completed', 'failed', 'cancelled'))
    ON CONFLICT (send_id) DO NOTHING
), src AS (
    SELECT inst.definition_hash,
           inst.distributed AND inst.status IN ('running', 'waiting', 'awaiting_signal')
               AS needs_entry
    FROM inst
), {_continue_entry}
SELECT (SELECT inst.status FROM inst), (SELECT count(*) FROM wake)


-- == Worker queue =========================================================================


-- The queue entries a write adds, as the CTE "items" (key, task_id, priority, tags,
-- available_at). Like {_steps}, {_items} is compiled once per source (_sql.VARIANTS): most
-- advances of a worker add none, and then bind no arrays.
-- name: _queue_items
items AS ({_items})


-- Queue entries from parallel arrays, one element per QueueItem (its tags are the slice
-- q_tag_lo..q_tag_hi of the flat %(q_tags)s). One row per key: the first item's fields and
-- the earliest due time (NULL: now), as InMemoryBackend._enqueue merges repeats. Keys
-- already checkpointed are left out.
-- name: _items_many
    SELECT DISTINCT ON (u.key) u.key, u.task_id, u.priority::int2 AS priority,
           (%(q_tags)s::text[])[u.lo:u.hi] AS tags,
           min(coalesce(to_timestamp(u.at), now())) OVER (PARTITION BY u.key) AS available_at
    FROM unnest(%(q_keys)s::text[], %(q_task_ids)s::text[], %(q_priorities)s::int4[],
                %(q_tag_lo)s::int4[], %(q_tag_hi)s::int4[], %(q_at)s::float8[])
         WITH ORDINALITY AS u (key, task_id, priority, lo, hi, at, n)
    WHERE NOT EXISTS (SELECT FROM {t_checkpoints} AS c
                      WHERE c.instance_id = %(id)s AND c.key = u.key)
    ORDER BY u.key, u.n


-- name: _items_none
SELECT NULL::text AS key, NULL::text AS task_id, NULL::int2 AS priority, NULL::text[] AS tags,
       NULL::timestamptz AS available_at
LIMIT 0


-- Insert the "items" (except the key %(key)s) for the run in the CTE "inst" (column
-- definition_hash): a key already queued keeps its entry, an unclaimed one its earliest due
-- time. Returns whether each written entry is claimable now.
-- name: _enqueue_items
enq AS (
    INSERT INTO {t_task_queue} AS q
        (instance_id, task_key, task_id, definition_hash, priority, tags, available_at)
    SELECT %(id)s, it.key, it.task_id, inst.definition_hash, it.priority, it.tags,
           it.available_at
    FROM items AS it CROSS JOIN inst
    WHERE it.key IS DISTINCT FROM %(key)s
    ON CONFLICT (instance_id, task_key) DO UPDATE
    SET available_at = excluded.available_at
    WHERE q.worker_id IS NULL AND excluded.available_at < q.available_at
    RETURNING q.available_at <= now() AS ready
)


-- FOR SHARE orders this after a concurrent finish: entries are never added to a run that
-- just ended (they could never be claimed). Returns the number of notifications sent.
-- name: enqueue
WITH inst AS (
    SELECT i.definition_hash FROM {t_instances} AS i
    WHERE i.instance_id = %(id)s AND i.status NOT IN ('completed', 'failed', 'cancelled')
    FOR SHARE
), {_queue_items}, {_enqueue_items}, wake AS (
    SELECT pg_notify({channel}, '') WHERE EXISTS (SELECT FROM enq WHERE enq.ready)
)
SELECT count(*) FROM wake


-- The entries a worker may claim, of queue row q and its run's row i: of the definitions
-- it serves, with tags it all serves, of runs neither paused nor finished. Shared by claim
-- and next_due, so an idle worker never waits for an entry it could not claim.
-- "tags = '{}' OR": the same condition, written so that the planner estimates it from the
-- column's common values (most entries are untagged) instead of the 0.5% default of <@
-- without element statistics, which made it prefer a sequential scan and a sort.
-- name: _serves
q.definition_hash = ANY (%(hashes)s::text[])
AND (q.tags = ARRAY[]::text[] OR q.tags <@ %(tags)s::text[])
AND i.status IN ('running', 'waiting', 'awaiting_signal')


-- Claim up to %(n)s entries: unclaimed and due, or claimed with an expired lease; of the
-- given definitions, tags all served, instances neither paused nor finished. Order: the
-- aged priority (_aged: priority minus one level per 300 s waited, as the reference's docs
-- say, so low-priority work is never starved), then oldest. Unclaimed entries are taken
-- from the ready index by one walk per priority level (1..5, the builder's range; writes
-- clamp to it): within a level the oldest entries age the most, so the best %(n)s overall
-- are among each level's %(n)s oldest. Each walk locks rows as it goes (SKIP LOCKED:
-- concurrent claimers never wait on each other nor take the same row); the outer LIMIT
-- keeps the best %(n)s (the others are unlocked at commit). The database clock decides
-- due, expired and waited. Each claim also returns the worker whose lease it took over (NULL
-- for an unclaimed entry) and the entry's last_error: why its previous claim ended without
-- an outcome, as the dead-lettering worker reports it.
-- Whether the run of the entry or candidate "q" holds a slot (of its key): a
-- scalar subquery with LIMIT 1, probing the instance_id index once per row (an EXISTS
-- inside an OR may be planned as a hashed scan of the whole slots table).
-- name: _holds_slot
((SELECT 1 FROM {t_concurrency_slots} AS hs WHERE hs.instance_id = q.instance_id LIMIT 1)
 IS NOT NULL)


-- A run with a concurrency key starts only when it may take a slot of it (migration 0007):
-- it holds one already (a wake-up), or fewer than the limit of unfinished runs hold one. A
-- pre-filter in the claim's walk, so a key at its limit never blocks the others (fair
-- across keys); the slot itself is taken by _admit, which is what guarantees the limit.
-- name: _admissible
(q.concurrency_key IS NULL
 OR {_holds_slot}
 OR (SELECT count(*) FROM {t_concurrency_slots} AS s
     JOIN {t_instances} AS h ON h.instance_id = s.instance_id
     WHERE s.concurrency_key = q.concurrency_key
       AND h.status NOT IN ('completed', 'failed', 'cancelled')) < q.concurrency_limit)


-- Take a slot for each candidate that needs one (at most one candidate per key per claim):
-- the lowest slot number no unfinished run holds. Two claimers racing for the same number
-- collide on the primary key; the later one takes the row over only when its holder is
-- visibly finished (a holder this statement cannot see, committed after it began, is
-- running), so it gets no slot, claims nothing, and the limit holds. Defines "cand" anew
-- (with needs_slot) and "admit" (the runs that took a slot).
-- name: _admit
need AS (
    SELECT DISTINCT ON (q.concurrency_key) q.instance_id, q.concurrency_key, q.concurrency_limit
    FROM cand AS q
    WHERE q.concurrency_key IS NOT NULL AND NOT {_holds_slot}
    ORDER BY q.concurrency_key
), admit AS (
    INSERT INTO {t_concurrency_slots} AS s (concurrency_key, slot, instance_id)
    SELECT n.concurrency_key, f.slot, n.instance_id
    FROM need AS n
    CROSS JOIN LATERAL (
        SELECT g.slot FROM generate_series(0, n.concurrency_limit - 1) AS g (slot)
        WHERE NOT EXISTS (
            SELECT FROM {t_concurrency_slots} AS o
            JOIN {t_instances} AS h ON h.instance_id = o.instance_id
            WHERE o.concurrency_key = n.concurrency_key AND o.slot = g.slot
              AND h.status NOT IN ('completed', 'failed', 'cancelled'))
        ORDER BY g.slot
        LIMIT 1
    ) AS f
    ON CONFLICT (concurrency_key, slot) DO UPDATE SET instance_id = excluded.instance_id
    WHERE EXISTS (SELECT FROM {t_instances} AS h WHERE h.instance_id = s.instance_id
                  AND h.status IN ('completed', 'failed', 'cancelled'))
    RETURNING s.instance_id
), cand_slots AS (
    SELECT q.*, (q.concurrency_key IS NOT NULL AND NOT {_holds_slot}) AS needs_slot
    FROM cand AS q
)


-- name: _aged
(c.priority - extract(epoch FROM now() - c.available_at) / 300.0)


-- name: claim
WITH cand AS (
    SELECT c.instance_id, c.task_key, c.worker_id AS expired_from, c.concurrency_key,
           c.concurrency_limit
    FROM (
        SELECT ready.* FROM generate_series(1, 5) AS p (priority)
        CROSS JOIN LATERAL (
            SELECT q.instance_id, q.task_key, q.priority, q.available_at, q.worker_id,
                   q.concurrency_key, q.concurrency_limit
            FROM {t_task_queue} AS q
            JOIN {t_instances} AS i ON i.instance_id = q.instance_id
            WHERE q.worker_id IS NULL AND q.priority = p.priority AND q.available_at <= now()
              AND {_serves} AND {_admissible}
            ORDER BY q.available_at
            LIMIT %(n)s
            FOR UPDATE OF q SKIP LOCKED
        ) AS ready
        UNION ALL
        SELECT * FROM (
            SELECT q.instance_id, q.task_key, q.priority, q.available_at, q.worker_id,
                   NULL::text, NULL::integer
            FROM {t_task_queue} AS q
            JOIN {t_instances} AS i ON i.instance_id = q.instance_id
            WHERE q.worker_id IS NOT NULL AND q.lease_expires_at < now()
              AND {_serves}
            ORDER BY q.priority, q.available_at
            LIMIT %(n)s
            FOR UPDATE OF q SKIP LOCKED
        ) AS expired
    ) AS c
    ORDER BY {_aged}, c.available_at
    LIMIT %(n)s
), {_admit}, claimed AS (
    UPDATE {t_task_queue} AS q
    SET worker_id = %(worker)s, attempt = q.attempt + 1,
        lease_expires_at = now() + make_interval(secs => %(lease)s), claim_token = %(token)s
    FROM cand_slots AS cand
    WHERE q.instance_id = cand.instance_id AND q.task_key = cand.task_key
      AND (NOT cand.needs_slot OR cand.instance_id IN (SELECT a.instance_id FROM admit AS a))
    RETURNING q.instance_id, q.task_key, q.attempt, q.definition_hash, q.priority,
              q.available_at, cand.expired_from, q.last_error
)
(SELECT c.instance_id, c.task_key, c.attempt, c.definition_hash, c.expired_from, c.last_error,
        extract(epoch FROM now() - c.available_at)::float8
 FROM claimed AS c
 ORDER BY {_aged}, c.available_at)
UNION ALL
-- A last row of NULLs when a candidate needed a slot and lost it to a concurrent claim: the
-- caller claims again at once (work is there) instead of sleeping.
SELECT NULL::text, NULL::text, NULL::int4, NULL::text, NULL::text, NULL::text, NULL::float8
WHERE EXISTS (SELECT FROM cand_slots AS cs
              WHERE cs.needs_slot AND cs.instance_id NOT IN (SELECT a.instance_id FROM admit AS a))


-- Seconds until the earliest unclaimed entry the claim query would take falls due (NULL:
-- none). One probe of the ready index per priority (1..5, as the builder allows), so the
-- cost does not grow with the number of sleeping timers.
-- name: next_due
SELECT extract(epoch FROM min(d.at) - now())::float8
FROM generate_series(1, 5) AS p (priority)
CROSS JOIN LATERAL (
    SELECT q.available_at AS at
    FROM {t_task_queue} AS q
    JOIN {t_instances} AS i ON i.instance_id = q.instance_id
    WHERE q.worker_id IS NULL AND q.priority = p.priority AND q.available_at > now()
      AND {_serves}
    ORDER BY q.available_at
    LIMIT 1
) AS d


-- A claim re-sent after a lost connection: the entries its first attempt claimed.
-- name: claimed_by_token
SELECT q.instance_id, q.task_key, q.attempt, q.definition_hash, NULL::text, q.last_error,
       extract(epoch FROM now() - q.available_at)::float8
FROM {t_task_queue} AS q
WHERE q.worker_id = %(worker)s AND q.claim_token = %(token)s
ORDER BY q.priority, q.available_at


-- Extend the leases still held (same key, attempt and worker); returns them.
-- name: heartbeat
UPDATE {t_task_queue} AS q
SET lease_expires_at = now() + make_interval(secs => %(lease)s)
FROM unnest(%(ids)s::text[], %(keys)s::text[], %(attempts)s::int4[], %(workers)s::text[])
     AS c (instance_id, task_key, attempt, worker_id)
WHERE q.instance_id = c.instance_id AND q.task_key = c.task_key AND q.attempt = c.attempt
  AND q.worker_id = c.worker_id
RETURNING q.instance_id, q.task_key, q.attempt, q.worker_id


-- The fence of every write under a claim: the run's row first (lock order: instance, then
-- queue), then the claimed entry, only if it is still this claim. Every other CTE of an
-- advance writes only when "held" has its row.
-- "lock" also has the run row's version (xmin) as locked: the newest one, which a write
-- committed after this statement's snapshot was taken replaced (see "fresh" in advance).
-- name: _held
lock AS MATERIALIZED (
    SELECT i.xmin AS version FROM {t_instances} AS i
    WHERE i.instance_id = %(id)s FOR NO KEY UPDATE
), held AS MATERIALIZED (
    SELECT q.task_key FROM {t_task_queue} AS q
    WHERE q.instance_id = %(id)s AND q.task_key = %(key)s AND q.attempt = %(attempt)s
      AND q.worker_id = %(worker)s AND EXISTS (SELECT FROM lock)
    FOR UPDATE
)


-- What happens to the claimed entry (%(fate)s, decided by the caller): 'keep' nothing;
-- 'drop' deletes it; 'requeue' (the write queues the claim's own key again) turns it into
-- an unclaimed entry; 'renew' (next_item is the claim's own key) claims it again with
-- attempt 1; 'move' deletes it only when the claim moved to next_item (the CTE "moved").
-- Requeue and renew fall back to drop when the key is checkpointed.
-- Needs the CTEs "held", "items" and "moved".
-- name: _release
requeued AS (
    UPDATE {t_task_queue} AS q
    SET worker_id = NULL, lease_expires_at = NULL, attempt = 0, claim_token = NULL,
        last_error = NULL, task_id = it.task_id, priority = it.priority, tags = it.tags,
        available_at = it.available_at
    FROM items AS it
    WHERE %(fate)s = 'requeue' AND it.key = %(key)s
      AND q.instance_id = %(id)s AND q.task_key = %(key)s AND EXISTS (SELECT FROM held)
    RETURNING q.available_at <= now() AS ready
), renewed AS (
    UPDATE {t_task_queue} AS q
    SET attempt = 1, last_error = NULL,
        lease_expires_at = now() + make_interval(secs => %(lease)s), claim_token = %(token)s,
        task_id = %(n_task_id)s, priority = %(n_priority)s, tags = %(n_tags)s::text[],
        available_at = now()
    WHERE %(fate)s = 'renew' AND q.instance_id = %(id)s AND q.task_key = %(key)s
      AND EXISTS (SELECT FROM held)
      AND NOT EXISTS (SELECT FROM {t_checkpoints} AS c
                      WHERE c.instance_id = %(id)s AND c.key = %(key)s)
    RETURNING q.attempt
), dropped AS (
    DELETE FROM {t_task_queue} AS q
    WHERE %(fate)s <> 'keep' AND q.instance_id = %(id)s AND EXISTS (SELECT FROM held)
      AND (%(fate)s <> 'move' OR EXISTS (SELECT FROM moved))
      AND (%(terminal)s
           OR (q.task_key = %(key)s
               AND NOT EXISTS (SELECT FROM requeued) AND NOT EXISTS (SELECT FROM renewed)))
)


-- advance() without a final state: checkpoints, new entries, the run touched (as save_steps
-- does), and the claim kept, given up, or moved to %(n_key)s: inserted claimed by the same
-- worker with attempt 1, or its entry taken over when due and never claimed (a spread fork
-- branch nobody took yet); a key checkpointed or claimed by another worker is not taken,
-- and the claim is kept. Nor is it taken unless this statement's snapshot has every write
-- of the run ("fresh": the run row's version it read is the one it locked): a checkpoint
-- committed by another worker while this one waited for the lock, and the entry that
-- write dropped, would otherwise be invisible here, and the task would run twice. The
-- caller then moves the claim in a second statement, after locking the run row.
-- Returns (held, obeyed columns..., definition hash, attempt of the claim now held on
-- %(n_key)s, notified, fresh).
-- name: advance
WITH {_held}, inst AS (
    UPDATE {t_instances} AS i
    SET updated_at = now(),
        status = CASE WHEN i.status IN ('cancelled', 'paused') THEN i.status ELSE 'running' END
    WHERE i.instance_id = %(id)s AND EXISTS (SELECT FROM held)
    RETURNING i.status, i.reason, i.cancelled_by, i.paused_by,
              i.request_kind, i.request_reason, i.request_by, i.definition_hash
), fresh AS (
    SELECT FROM {t_instances} AS i JOIN lock ON i.xmin = lock.version
    WHERE i.instance_id = %(id)s
), {_write_steps}, {_queue_items}, {_enqueue_items}, moved AS (
    INSERT INTO {t_task_queue} AS q
        (instance_id, task_key, task_id, definition_hash, priority, tags, worker_id, attempt,
         lease_expires_at, claim_token)
    SELECT %(id)s, %(n_key)s, %(n_task_id)s, inst.definition_hash, %(n_priority)s,
           %(n_tags)s::text[], %(worker)s, 1, now() + make_interval(secs => %(lease)s),
           %(token)s
    FROM inst
    WHERE %(move)s AND EXISTS (SELECT FROM fresh)
      AND NOT EXISTS (SELECT FROM {t_checkpoints} AS c
                      WHERE c.instance_id = %(id)s AND c.key = %(n_key)s)
    ON CONFLICT (instance_id, task_key) DO UPDATE
    SET worker_id = excluded.worker_id, attempt = 1,
        lease_expires_at = excluded.lease_expires_at, claim_token = excluded.claim_token
    WHERE q.worker_id IS NULL AND q.attempt = 0
      AND (q.available_at <= now() OR %(n_due)s)
    RETURNING q.attempt
), {_release}, wake AS (
    SELECT pg_notify({channel}, '')
    WHERE EXISTS (SELECT FROM enq WHERE enq.ready)
       OR EXISTS (SELECT FROM requeued WHERE requeued.ready)
)
SELECT EXISTS (SELECT FROM held), inst.status, inst.reason, inst.cancelled_by,
       inst.paused_by, inst.request_kind, inst.request_reason, inst.request_by,
       inst.definition_hash,
       coalesce((SELECT m.attempt FROM moved AS m), (SELECT r.attempt FROM renewed AS r)),
       (SELECT count(*) FROM wake), EXISTS (SELECT FROM fresh)
FROM (SELECT) AS one
LEFT JOIN inst ON true


-- advance() with a final state: as finish (a terminal one drops every entry of the run;
-- the caller then passes no items), with the claim given up. A run paused meanwhile keeps
-- its pause: only the claim is given up (_finishable).
-- Returns (held, notified, final state written).
-- name: advance_final
WITH {_held}, inst AS (
    UPDATE {t_instances} AS i
    SET {_finish_set}
    WHERE i.instance_id = %(id)s AND EXISTS (SELECT FROM held) AND {_finishable}
    RETURNING i.definition_hash
), {_write_steps}, {_queue_items}, {_enqueue_items}, moved AS (
    SELECT NULL::int4 AS attempt WHERE false  -- a final state never moves the claim
), {_release}, wake AS (
    SELECT pg_notify({channel}, '')
    WHERE EXISTS (SELECT FROM enq WHERE enq.ready)
       OR EXISTS (SELECT FROM requeued WHERE requeued.ready)
)
SELECT EXISTS (SELECT FROM held), (SELECT count(*) FROM wake), EXISTS (SELECT FROM inst)


-- abandon(): the claim given up without an outcome. The entry is unclaimed again, due in
-- %(retry_in)s seconds, keeps its attempt count (the next claim is attempt + 1, as after an
-- expired lease) and remembers %(error)s. Returns (abandoned, notified).
-- name: abandon
WITH {_held}, gone AS (
    UPDATE {t_task_queue} AS q
    SET worker_id = NULL, lease_expires_at = NULL, claim_token = NULL,
        available_at = now() + make_interval(secs => %(retry_in)s), last_error = %(error)s
    WHERE q.instance_id = %(id)s AND q.task_key = %(key)s AND EXISTS (SELECT FROM held)
    RETURNING q.available_at <= now() AS ready
), wake AS (
    SELECT pg_notify({channel}, '') WHERE EXISTS (SELECT FROM gone WHERE gone.ready)
)
SELECT EXISTS (SELECT FROM gone), (SELECT count(*) FROM wake)


-- An advance re-sent after a lost connection found its claim gone: did the first attempt
-- commit? Returns (obeyed columns..., definition hash, attempt of the entry %(n_key)s this
-- call claimed, whether %(key)s is claimed now); no row: the run is gone.
-- name: advance_recover
SELECT i.status, i.reason, i.cancelled_by, i.paused_by,
       i.request_kind, i.request_reason, i.request_by, i.definition_hash,
       (SELECT q.attempt FROM {t_task_queue} AS q
        WHERE q.instance_id = %(id)s AND q.task_key = %(n_key)s
          AND q.worker_id = %(worker)s AND q.claim_token = %(token)s),
       EXISTS (SELECT FROM {t_task_queue} AS q
               WHERE q.instance_id = %(id)s AND q.task_key = %(key)s
                 AND q.worker_id IS NOT NULL)
FROM {t_instances} AS i
WHERE i.instance_id = %(id)s


-- name: listen
LISTEN {channel_name}


-- name: listen_changes
LISTEN {changes_channel_name}


-- == Retention ============================================================================


-- name: retention_cutoff
SELECT extract(epoch FROM now() - make_interval(secs => %(older_than)s))::float8


-- name: count_finished
SELECT count(*) FROM {t_instances} AS i
WHERE i.status IN ('completed', 'failed', 'cancelled')
  AND i.completed_at < to_timestamp(%(cutoff)s::float8)


-- One batch (its own transaction): up to %(batch)s finished runs that ended before the
-- cutoff, oldest first, skipping rows other sessions hold. Checkpoints, task executions
-- and queue entries go with their run (ON DELETE CASCADE, or _drop_run_rows in the
-- partitioned layout); consumed signal events are deleted here (unconsumed ones stay, for a
-- future run with the same id, as with replace).
-- name: delete_finished
WITH old AS (
    SELECT i.instance_id, i.created_at FROM {t_instances} AS i
    WHERE i.status IN ('completed', 'failed', 'cancelled')
      AND i.completed_at < to_timestamp(%(cutoff)s::float8)
    ORDER BY i.completed_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), sig AS (
    DELETE FROM {t_signals} AS s
    USING old
    WHERE s.instance_id = old.instance_id AND s.consumed_at IS NOT NULL
), gone AS (
    DELETE FROM {t_instances} AS i
    USING old
    WHERE i.instance_id = old.instance_id
    RETURNING 1
){_drop_run_rows}
SELECT count(*) FROM gone


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
-- Tables that carry our names in the schema (checked before the first migration: a
-- table there that our migrations did not create belongs to someone else).
-- name: existing_tables
SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = ANY (%(names)s::text[])
ORDER BY c.relname

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
