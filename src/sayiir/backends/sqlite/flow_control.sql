-- Named queries of SqliteBackend's flow control: schedules and dedupe keys (_flow_control).

-- name: insert_schedule
INSERT INTO sayiir_schedules (schedule_id, version, paused, fire_at, body, updated_at)
VALUES (:id, :version, :paused, :fire_at, :body, :now)
ON CONFLICT (schedule_id) DO NOTHING

-- name: update_schedule
UPDATE sayiir_schedules
SET version = :version, paused = :paused, fire_at = :fire_at, body = :body, updated_at = :now
WHERE schedule_id = :id AND version = :expected

-- name: select_schedule
SELECT schedule_id, version, paused, fire_at, body FROM sayiir_schedules WHERE schedule_id = :id

-- name: select_schedules
SELECT schedule_id, version, paused, fire_at, body FROM sayiir_schedules ORDER BY schedule_id

-- name: delete_schedule
DELETE FROM sayiir_schedules WHERE schedule_id = :id

-- name: select_due_schedules
SELECT schedule_id, version, paused, fire_at, body FROM sayiir_schedules
WHERE paused = 0 AND fire_at <= :now
ORDER BY fire_at
LIMIT :limit

-- name: select_next_schedule_at
SELECT min(fire_at) FROM sayiir_schedules WHERE paused = 0

-- name: upsert_dedupe_key
INSERT INTO sayiir_dedupe_keys (dedupe_key, instance_id, expires_at)
VALUES (:key, :run, :expires)
ON CONFLICT (dedupe_key) DO UPDATE
SET instance_id = excluded.instance_id, expires_at = excluded.expires_at
WHERE sayiir_dedupe_keys.expires_at <= :now

-- name: select_dedupe_key
SELECT instance_id FROM sayiir_dedupe_keys WHERE dedupe_key = :key

-- name: purge_dedupe_keys
-- Up to :limit keys whose window has passed, oldest first (the expires_at index, 0009).
DELETE FROM sayiir_dedupe_keys
WHERE dedupe_key IN (
    SELECT dedupe_key FROM sayiir_dedupe_keys WHERE expires_at <= :now
    ORDER BY expires_at LIMIT :limit)
