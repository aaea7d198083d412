-- The partitioned layout (migration 0008, docs/postgres.md "Partitioning").
--
-- Fragments named _x__part replace the fragment _x of queries.sql when the backend's tables
-- are partitioned (sayiir.backends.postgres._sql.compile_sql): every query is written once,
-- and only these pieces differ. Queries below call the functions of migration 0008.


-- Task executions and checkpoints carry their run's creation time, their partition key, so
-- that a run's rows all live in one month. The value comes from the run's row, which an
-- instance id alone finds only by probing every partition (one index probe each).
-- name: _run_col__part
, run_created_at


-- name: _run_val__part
, (SELECT r.created_at FROM {t_instances} AS r WHERE r.instance_id = %(id)s)


-- No unique index can hold the instance id alone: the trigger {f_unique_run_id} skips the
-- insert of a second run with an existing id, as ON CONFLICT DO NOTHING would.
-- name: _new_run_conflict__part


-- No foreign key cascades from a partitioned run: its rows go in the same statement.
-- name: _drop_run_rows__part
, del_cp AS (
    DELETE FROM {t_checkpoints} AS c USING old
    WHERE c.instance_id = old.instance_id AND c.run_created_at = old.created_at
), del_te AS (
    DELETE FROM {t_task_executions} AS t USING old
    WHERE t.instance_id = old.instance_id AND t.run_created_at = old.created_at
), del_q AS (
    DELETE FROM {t_task_queue} AS q USING old WHERE q.instance_id = old.instance_id
), del_slot AS (
    DELETE FROM {t_concurrency_slots} AS s USING old WHERE s.instance_id = old.instance_id
), del_tslot AS (
    DELETE FROM {t_task_slots} AS s USING old WHERE s.instance_id = old.instance_id
), del_twait AS (
    DELETE FROM {t_task_waits} AS w USING old WHERE w.instance_id = old.instance_id
)


-- Overwrite the old run's row (its new creation time may move it to another partition), or
-- insert it when there is none: the trigger skips the insert when the update found the row.
-- name: _replace_run__part
moved AS (
    UPDATE {t_instances} AS i
    SET {_instance_cols} = {_instance_row}
    WHERE i.instance_id = %(id)s
    RETURNING 1
), added AS (
    INSERT INTO {t_instances} {_instance_values}
    RETURNING 1
), up AS (
    SELECT 1 FROM moved
    UNION ALL
    SELECT 1 FROM added
)


-- Which layout the tables have: 'p' (partitioned), 'r' (plain), NULL (no tables yet).
-- name: partition_layout
SELECT c.relkind::text
FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s


-- name: partition_convert
SELECT {f_partition_convert}(%(ahead)s::int4)


-- name: partition_ensure
SELECT {f_partition_ensure}('', now(), %(ahead)s::int4)


-- (runs dropped, months dropped, months left to row deletes)
-- name: partition_drop
SELECT {f_partition_drop}(to_timestamp(%(cutoff)s::float8), %(most)s::int8)
