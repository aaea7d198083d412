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

-- name: pragma_data_version
-- Changes whenever another connection committed (CommitWatcher: wake-ups across processes).
PRAGMA data_version

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
       run_token, distributed, definition_hash
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

-- name: free_step_slot
-- A task with max_concurrent gives its slot back in the write of its checkpoint
-- (StepRecord.frees_slot). The slots' (instance_id, step_key) index.
DELETE FROM sayiir_task_slots WHERE instance_id = :instance_id AND step_key = :key

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

-- == Worker queue (sayiir_task_queue; InMemoryBackend is the reference semantics) =========
--
-- Every statement runs inside the BEGIN IMMEDIATE transaction of one backend call, so one
-- process at a time reads and changes the queue: a claim never needs row locks, and a write
-- under a claim checks the claim and writes in one step. :served and :hashes are JSON arrays.

-- name: queue_select_entry
SELECT attempt, worker_id FROM sayiir_task_queue
WHERE instance_id = :instance_id AND task_key = :key

-- name: queue_insert
-- An entry added (InMemoryBackend._enqueue): a checkpointed key is skipped, a key already
-- queued keeps its entry, an unclaimed one its earliest due time.
-- A limited run's start entry carries its concurrency key and limit (0009_run_limits).
INSERT INTO sayiir_task_queue AS q
    (instance_id, task_key, task_id, definition_hash, priority, tags, available_at,
     concurrency_key, concurrency_limit)
SELECT :instance_id, :key, :task_id, :definition_hash, :priority, :tags, :available_at,
       :concurrency_key, :concurrency_limit
WHERE NOT EXISTS (
    SELECT 1 FROM sayiir_checkpoints WHERE instance_id = :instance_id AND key = :key)
ON CONFLICT (instance_id, task_key) DO UPDATE
SET available_at = min(q.available_at, excluded.available_at)
WHERE q.worker_id IS NULL

-- name: queue_insert_claimed
-- advance(next_item=...): the worker takes the next entry of its run at once.
INSERT INTO sayiir_task_queue
    (instance_id, task_key, task_id, definition_hash, priority, tags, available_at,
     worker_id, attempt, lease_expires_at)
VALUES (:instance_id, :key, :task_id, :definition_hash, :priority, :tags, :now,
        :worker_id, 1, :lease_expires_at)

-- name: queue_take_entry
-- advance(next_item=...) on a queued key: taken only when due and never claimed (a spread
-- fork branch nobody took yet); an entry claimed before goes through claim, which counts
-- its attempts towards dead-lettering.
UPDATE sayiir_task_queue
SET worker_id = :worker_id, attempt = 1, lease_expires_at = :lease_expires_at
WHERE instance_id = :instance_id AND task_key = :key AND worker_id IS NULL AND attempt = 0
  AND available_at <= :now

-- name: queue_claimable
-- Up to :n entries a worker may claim, in claim order: unclaimed and due (the ready index
-- walked in aged-priority order, see the migration), or claimed with a lease that ran out
-- (the lease index). Only entries of the definitions it serves (:hashes), whose tags it all
-- serves (:served), of runs neither paused nor finished. CROSS JOIN makes SQLite walk the
-- queue index first (never every active run). SqliteBackend.claim (_queue.claim) takes the
-- rows this returns, in the same transaction: the claim lives there and here only.
-- A run with a concurrency key (0009_run_limits) is returned only when it may run: it holds
-- a slot of its key already (a wake-up), or fewer than the limit of unfinished runs hold
-- one. A filter in the walk, so a key at its limit never blocks the others (fair across
-- keys); needs_slot: the claim takes the slot (queue_take_slot) before the entry.
SELECT id, instance_id, task_key, attempt, worker_id, last_error, definition_hash,
       concurrency_key, concurrency_limit, needs_slot
FROM (
    SELECT * FROM (
        SELECT q.id, q.instance_id, q.task_key, q.attempt, q.worker_id, q.last_error,
               q.definition_hash, q.priority * 300.0 + q.available_at AS aged, q.available_at,
               q.concurrency_key, q.concurrency_limit,
               q.concurrency_key IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM sayiir_concurrency_slots AS hs
                   WHERE hs.instance_id = q.instance_id) AS needs_slot
        FROM sayiir_task_queue AS q
        CROSS JOIN sayiir_workflow_instances AS i ON i.instance_id = q.instance_id
        WHERE q.worker_id IS NULL AND q.available_at <= :now
          AND i.status IN ('running', 'waiting', 'awaiting_signal')
          AND q.definition_hash IN (SELECT value FROM json_each(:hashes))
          AND (q.tags = '[]' OR NOT EXISTS (
                SELECT 1 FROM json_each(q.tags) AS t
                WHERE t.value NOT IN (SELECT value FROM json_each(:served))))
          AND (q.concurrency_key IS NULL
               OR EXISTS (SELECT 1 FROM sayiir_concurrency_slots AS hs
                          WHERE hs.instance_id = q.instance_id)
               OR (SELECT count(*) FROM sayiir_concurrency_slots AS s
                   CROSS JOIN sayiir_workflow_instances AS h ON h.instance_id = s.instance_id
                   WHERE s.concurrency_key = q.concurrency_key
                     AND h.status NOT IN ('completed', 'failed', 'cancelled'))
                  < q.concurrency_limit)
        ORDER BY q.priority * 300.0 + q.available_at, q.id
        LIMIT :n
    )
    UNION ALL
    SELECT * FROM (
        SELECT q.id, q.instance_id, q.task_key, q.attempt, q.worker_id, q.last_error,
               q.definition_hash, q.priority * 300.0 + q.available_at AS aged, q.available_at,
               NULL, NULL, 0
        FROM sayiir_task_queue AS q
        CROSS JOIN sayiir_workflow_instances AS i ON i.instance_id = q.instance_id
        WHERE q.worker_id IS NOT NULL AND q.lease_expires_at < :now
          AND i.status IN ('running', 'waiting', 'awaiting_signal')
          AND q.definition_hash IN (SELECT value FROM json_each(:hashes))
          AND (q.tags = '[]' OR NOT EXISTS (
                SELECT 1 FROM json_each(q.tags) AS t
                WHERE t.value NOT IN (SELECT value FROM json_each(:served))))
        ORDER BY q.lease_expires_at
        LIMIT :n
    )
)
ORDER BY aged, available_at, id
LIMIT :n

-- name: queue_take
UPDATE sayiir_task_queue
SET worker_id = :worker_id, attempt = attempt + 1, lease_expires_at = :lease_expires_at,
    last_error = coalesce(:last_error, last_error)
WHERE id = :id

-- name: queue_take_slot
-- A slot of :key for the run, when fewer than :limit unfinished runs hold one (rowcount 1);
-- the claim's transaction is the only writer, so the count cannot go stale before the
-- insert. The rows of the key's finished holders are deleted first (queue_free_slots).
INSERT INTO sayiir_concurrency_slots (concurrency_key, instance_id)
SELECT :key, :instance_id
WHERE (SELECT count(*) FROM sayiir_concurrency_slots WHERE concurrency_key = :key) < :limit

-- name: queue_free_slots
-- The slots of :key whose runs finished: free again (a finished holder no longer counts).
DELETE FROM sayiir_concurrency_slots AS s
WHERE s.concurrency_key = :key AND EXISTS (
    SELECT 1 FROM sayiir_workflow_instances AS h
    WHERE h.instance_id = s.instance_id AND h.status IN ('completed', 'failed', 'cancelled'))

-- name: queue_concurrency_state
-- A run waiting for its first claim: its key, limit and the unfinished runs holding a slot
-- (a JSON array). Served by the queue's (instance_id, task_key) index and the slots' key.
SELECT q.concurrency_key, q.concurrency_limit,
       (SELECT json_group_array(instance_id) FROM (
            SELECT s.instance_id FROM sayiir_concurrency_slots AS s
            CROSS JOIN sayiir_workflow_instances AS h ON h.instance_id = s.instance_id
            WHERE s.concurrency_key = q.concurrency_key
              AND h.status NOT IN ('completed', 'failed', 'cancelled')
            ORDER BY s.instance_id))
FROM sayiir_task_queue AS q
WHERE q.instance_id = :instance_id AND q.task_key = '' AND q.attempt = 0
  AND q.concurrency_key IS NOT NULL

-- name: queue_next_due
-- When the earliest unclaimed entry a worker could claim falls due (timers, retries). Only
-- an idle worker asks, when the unclaimed entries are the ones not yet due: it walks those
-- (the ready index), not the runs.
SELECT min(q.available_at)
FROM sayiir_task_queue AS q
CROSS JOIN sayiir_workflow_instances AS i ON i.instance_id = q.instance_id
WHERE q.worker_id IS NULL AND q.available_at > :now
  AND i.status IN ('running', 'waiting', 'awaiting_signal')
  AND q.definition_hash IN (SELECT value FROM json_each(:hashes))
  AND (q.tags = '[]' OR NOT EXISTS (
        SELECT 1 FROM json_each(q.tags) AS t
        WHERE t.value NOT IN (SELECT value FROM json_each(:served))))

-- name: queue_heartbeat
UPDATE sayiir_task_queue
SET lease_expires_at = :lease_expires_at
WHERE instance_id = :instance_id AND task_key = :key AND attempt = :attempt
  AND worker_id = :worker_id

-- name: queue_abandon
UPDATE sayiir_task_queue
SET worker_id = NULL, lease_expires_at = NULL, available_at = :available_at,
    last_error = :error
WHERE instance_id = :instance_id AND task_key = :key AND attempt = :attempt
  AND worker_id = :worker_id

-- name: queue_delete_entry
DELETE FROM sayiir_task_queue WHERE instance_id = :instance_id AND task_key = :key

-- name: queue_delete_run
-- A run that finished or was cancelled loses every entry (their holders are fenced off).
DELETE FROM sayiir_task_queue WHERE instance_id = :instance_id

