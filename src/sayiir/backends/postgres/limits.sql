-- Named queries of the PostgreSQL backend's run concurrency limits (operator reads;
-- sayiir.backends.postgres._limits). The claim's side of the limits is in queries.sql
-- (_admissible, _admit).

-- A run waiting for its first claim: its key, limit and the unfinished runs holding a slot.
-- Served by the queue's primary key and the slots' primary key (concurrency_key, slot).
-- name: concurrency_state
SELECT q.concurrency_key, q.concurrency_limit,
       ARRAY(SELECT s.instance_id FROM {t_concurrency_slots} AS s
             JOIN {t_instances} AS h ON h.instance_id = s.instance_id
             WHERE s.concurrency_key = q.concurrency_key
               AND h.status NOT IN ('completed', 'failed', 'cancelled')
             ORDER BY s.instance_id)
FROM {t_task_queue} AS q
WHERE q.instance_id = %(id)s AND q.task_key = '' AND q.attempt = 0
  AND q.concurrency_key IS NOT NULL


-- Take a dedupe key for %(run)s until %(expires)s unless a run holds it at %(now)s; returns
-- the holder now (ours when taken). No row: a concurrent submit took it after this
-- statement's snapshot; the caller asks again.
-- Up to %(limit)s keys whose window has passed at %(now)s, oldest first (the expires_at
-- index, migration 0010). SKIP LOCKED: a key a submit is taking over right now is left to
-- it. Returns how many were deleted.
-- name: purge_dedupe_keys
WITH old AS (
    SELECT d.dedupe_key FROM {t_dedupe_keys} AS d
    WHERE d.expires_at <= to_timestamp(%(now)s::float8)
    ORDER BY d.expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM {t_dedupe_keys} AS d USING old
    WHERE d.dedupe_key = old.dedupe_key
    RETURNING 1
)
SELECT count(*) FROM gone


-- How many keys purge_dedupe_keys would delete at %(now)s (sayiir retention --dry-run).
-- name: count_expired_dedupe_keys
SELECT count(*) FROM {t_dedupe_keys} AS d WHERE d.expires_at <= to_timestamp(%(now)s::float8)


-- name: take_dedupe_key
WITH up AS (
    INSERT INTO {t_dedupe_keys} AS d (dedupe_key, instance_id, expires_at)
    VALUES (%(key)s, %(run)s, to_timestamp(%(expires)s::float8))
    ON CONFLICT (dedupe_key) DO UPDATE
    SET instance_id = excluded.instance_id, expires_at = excluded.expires_at
    WHERE d.expires_at <= to_timestamp(%(now)s::float8)
    RETURNING d.instance_id
)
SELECT u.instance_id FROM up AS u
UNION ALL
SELECT d.instance_id FROM {t_dedupe_keys} AS d
WHERE d.dedupe_key = %(key)s AND NOT EXISTS (SELECT FROM up)
