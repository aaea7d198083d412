-- Named queries of SqliteBackend's task limits (_task_limits; migration 0010). Each runs in
-- the BEGIN IMMEDIATE transaction of one operation.

-- The slots of a task: their number, whether step :key of run :id holds it, and whether
-- its holder is still there (the execution with token owner holds the run's lease, or
-- claim attempt of the queue entry owner is held). Primary keys serve every probe.
-- name: select_task_slots
SELECT s.slot, s.instance_id, s.instance_id = :id AND s.step_key = :key,
       CASE WHEN s.attempt IS NULL THEN EXISTS (
           SELECT 1 FROM sayiir_workflow_instances AS h
           WHERE h.instance_id = s.instance_id AND h.run_token = s.owner
             AND h.status = 'running' AND h.lease_until > :now)
       ELSE EXISTS (
           SELECT 1 FROM sayiir_task_queue AS q
           WHERE q.instance_id = s.instance_id AND q.task_key = s.owner
             AND q.attempt = s.attempt AND q.worker_id IS NOT NULL
             AND q.lease_expires_at > :now)
       END
FROM sayiir_task_slots AS s
WHERE s.task_id = :task
ORDER BY s.slot

-- name: put_task_slot
INSERT OR REPLACE INTO sayiir_task_slots (task_id, slot, instance_id, step_key, owner, attempt)
VALUES (:task, :slot, :id, :key, :owner, :attempt)

-- name: release_task_slot
DELETE FROM sayiir_task_slots WHERE instance_id = :id AND step_key = :key AND task_id = :task

-- name: select_rate_window
SELECT starts FROM sayiir_rate_windows WHERE bucket = :bucket

-- name: put_rate_window
INSERT OR REPLACE INTO sayiir_rate_windows (bucket, starts) VALUES (:bucket, :starts)

-- name: forget_task_wait
DELETE FROM sayiir_task_waits WHERE instance_id = :id AND step_key = :key

-- name: put_task_wait
INSERT OR REPLACE INTO sayiir_task_waits
    (instance_id, step_key, task_id, kind, name, lim, per, retry_at, since)
VALUES (:id, :key, :task, :kind, :name, :limit, :per, :retry_at, :now)

-- name: select_task_wait
SELECT w.task_id, w.kind, w.name, w.lim, w.per, w.retry_at, w.step_key
FROM sayiir_task_waits AS w JOIN sayiir_workflow_instances AS i USING (instance_id)
WHERE w.instance_id = :id AND i.status = 'running'
ORDER BY w.since DESC
LIMIT 1
