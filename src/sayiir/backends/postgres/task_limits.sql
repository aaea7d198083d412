-- Named queries of the PostgreSQL backend's task limits (sayiir.backends.postgres._task_limits;
-- migration 0011). Every query is served by a primary key or the instance index.

-- Whether the holder of slot row s still holds it: the in-process execution whose token is
-- s.owner still has the run's lease, or the worker's claim (entry s.owner, attempt
-- s.attempt) is still held. Probes the instances' and the queue's primary keys.
-- name: _task_slot_alive
(CASE WHEN s.attempt IS NULL THEN EXISTS (
    SELECT FROM {t_instances} AS h
    WHERE h.instance_id = s.instance_id AND h.start_token::text = s.owner
      AND h.status = 'running' AND h.lease_until > now())
 ELSE EXISTS (
    SELECT FROM {t_task_queue} AS q
    WHERE q.instance_id = s.instance_id AND q.task_key = s.owner AND q.attempt = s.attempt
      AND q.worker_id IS NOT NULL AND q.lease_expires_at > now())
 END)


-- Take the first slot number under %(limit)s that nobody alive holds (the step's own
-- counts as free). Two takers racing for one number collide on the primary key: the later
-- one's ON CONFLICT takes the row as committed only from a holder that is gone, judged on
-- the version this statement's snapshot sees: a holder that took the row after the
-- snapshot (its lease or claim not visible in it, so it would look dead) is left alone,
-- and the caller asks again with a fresh snapshot. Returns (a free number was seen, the
-- slot was taken); a take forgets the step's wait. The walk stops at the first free
-- number (slot rows of the task: primary key).
-- name: acquire_task_slot
WITH cand AS (
    SELECT g.n FROM generate_series(0, %(limit)s::int4 - 1) AS g(n)
    WHERE NOT EXISTS (
        SELECT FROM {t_task_slots} AS s
        WHERE s.task_id = %(task)s AND s.slot = g.n
          AND NOT (s.instance_id = %(id)s AND s.step_key = %(key)s)
          AND {_task_slot_alive})
    LIMIT 1
), taken AS (
    INSERT INTO {t_task_slots} AS s (task_id, slot, instance_id, step_key, owner, attempt)
    SELECT %(task)s, cand.n, %(id)s, %(key)s, %(owner)s, %(attempt)s::int4 FROM cand
    ON CONFLICT (task_id, slot) DO UPDATE
    SET instance_id = excluded.instance_id, step_key = excluded.step_key,
        owner = excluded.owner, attempt = excluded.attempt, taken_at = now()
    WHERE (s.instance_id = excluded.instance_id AND s.step_key = excluded.step_key)
       OR (NOT {_task_slot_alive}
           AND EXISTS (SELECT FROM {t_task_slots} AS seen
                       WHERE seen.task_id = s.task_id AND seen.slot = s.slot
                         AND seen.xmin = s.xmin))
    RETURNING 1
), forgot AS (
    DELETE FROM {t_task_waits} AS w
    WHERE w.instance_id = %(id)s AND w.step_key = %(key)s AND EXISTS (SELECT FROM taken)
)
SELECT EXISTS (SELECT FROM cand), EXISTS (SELECT FROM taken)


-- name: release_task_slot
DELETE FROM {t_task_slots} AS s
WHERE s.instance_id = %(id)s AND s.step_key = %(key)s AND s.task_id = %(task)s


-- A start at %(now)s in the bucket's window when fewer than %(n)s of its starts (kept
-- ascending) lie in [now - per, now]: the n-th newest is then older than that. Racing
-- starts wait for the row; ON CONFLICT re-checks the condition on its newest version. The
-- window keeps only the starts of the last period. Returns (taken, the starts as read).
-- name: take_rate_token
WITH took AS (
    INSERT INTO {t_rate_windows} AS r (bucket, starts)
    VALUES (%(bucket)s, ARRAY[%(now)s::float8])
    ON CONFLICT (bucket) DO UPDATE
    SET starts = ARRAY(
        SELECT x FROM unnest(r.starts || %(now)s::float8) AS x
        WHERE x >= %(now)s::float8 - %(per)s::float8 ORDER BY x)
    WHERE cardinality(r.starts) < %(n)s::int4
       OR r.starts[cardinality(r.starts) - %(n)s::int4 + 1] < %(now)s::float8 - %(per)s::float8
    RETURNING 1
), forgot AS (
    DELETE FROM {t_task_waits} AS w
    WHERE w.instance_id = %(id)s AND w.step_key = %(key)s AND EXISTS (SELECT FROM took)
)
SELECT EXISTS (SELECT FROM took),
       (SELECT r.starts FROM {t_rate_windows} AS r WHERE r.bucket = %(bucket)s)


-- The step %(key)s of run %(id)s waits at a task limit (refused above).
-- name: record_task_wait
INSERT INTO {t_task_waits} AS w (instance_id, step_key, task_id, kind, name, lim, per, retry_at)
VALUES (%(id)s, %(key)s, %(task)s, %(kind)s, %(name)s, %(limit)s::int4, %(per)s::float8,
        %(retry_at)s::float8)
ON CONFLICT (instance_id, step_key) DO UPDATE
SET task_id = excluded.task_id, kind = excluded.kind, name = excluded.name, lim = excluded.lim,
    per = excluded.per, retry_at = excluded.retry_at, since = now()


-- What a step of a running run waits for, with the live holders of the task's slots.
-- name: task_wait
SELECT w.task_id, w.kind, w.name, w.lim, w.per, w.retry_at,
       ARRAY(SELECT s.instance_id FROM {t_task_slots} AS s
             WHERE s.task_id = w.task_id AND {_task_slot_alive}
             ORDER BY s.instance_id)
FROM {t_task_waits} AS w
WHERE w.instance_id = %(id)s
  AND EXISTS (SELECT FROM {t_instances} AS i
              WHERE i.instance_id = w.instance_id AND i.status = 'running')
ORDER BY w.since DESC
LIMIT 1


-- Retention after dropping whole months: the slots and waits of runs that no longer exist.
-- Both tables hold few rows (the slots held, the steps waiting): each is read whole, and
-- each of its runs looked up by index (OFFSET 0 keeps the probe a loop, not a join that
-- would read every run).
-- name: purge_task_limit_rows
WITH slots AS (
    DELETE FROM {t_task_slots} AS s
    WHERE NOT EXISTS (
        SELECT FROM {t_instances} AS i WHERE i.instance_id = s.instance_id OFFSET 0)
    RETURNING 1
), waits AS (
    DELETE FROM {t_task_waits} AS w
    WHERE NOT EXISTS (
        SELECT FROM {t_instances} AS i WHERE i.instance_id = w.instance_id OFFSET 0)
    RETURNING 1
)
SELECT (SELECT count(*) FROM slots) + (SELECT count(*) FROM waits)
