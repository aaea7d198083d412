-- Named queries of the PostgreSQL backend's schedules (sayiir.backends.postgres._schedules),
-- compiled with those of queries.sql (same placeholders). Times are epoch seconds.

-- name: _schedule_columns
s.schedule_id, s.version, s.paused, extract(epoch FROM s.fire_at)::float8, s.body


-- name: insert_schedule
INSERT INTO {t_schedules} (schedule_id, version, paused, fire_at, body)
VALUES (%(id)s, %(version)s, %(paused)s, to_timestamp(%(fire_at)s::float8), %(body)s)
ON CONFLICT (schedule_id) DO NOTHING
RETURNING 1


-- name: update_schedule
UPDATE {t_schedules} AS s
SET version = %(version)s, paused = %(paused)s, fire_at = to_timestamp(%(fire_at)s::float8),
    body = %(body)s, updated_at = now()
WHERE s.schedule_id = %(id)s AND s.version = %(expected)s
RETURNING 1


-- name: select_schedule
SELECT {_schedule_columns} FROM {t_schedules} AS s WHERE s.schedule_id = %(id)s


-- name: select_schedules
SELECT {_schedule_columns} FROM {t_schedules} AS s ORDER BY s.schedule_id


-- name: delete_schedule
DELETE FROM {t_schedules} WHERE schedule_id = %(id)s RETURNING 1


-- Served by {n_schedules_due_idx} (fire_at, WHERE NOT paused).
-- name: select_due_schedules
SELECT {_schedule_columns} FROM {t_schedules} AS s
WHERE NOT s.paused AND s.fire_at <= to_timestamp(%(now)s::float8)
ORDER BY s.fire_at
LIMIT %(limit)s


-- name: select_next_schedule_at
SELECT extract(epoch FROM min(s.fire_at))::float8 FROM {t_schedules} AS s WHERE NOT s.paused
