-- The full current schema of the PostgreSQL backend, for reading and for DBAs who apply
-- it by hand. The backend itself applies migrations/NNNN_*.sql in order (and records them
-- in the migrations table); tests/backends/test_postgres_migrations.py checks that both
-- give the same catalog. Keep the two in step: every new migration changes this file.
--
-- Names in braces are placeholders for identifiers (psycopg.sql.Identifier): schema is the
-- configured schema, t_ names are schema-qualified tables and n_ names bare index and
-- constraint names, all carrying the table prefix (default "sayiir_"). To apply it by
-- hand with the defaults, replace each t_ name by "public"."sayiir_<table>" and each n_
-- name by "sayiir_<name>" -- or simply run `sayiir migrate URL --dry-run`, which prints
-- the pending migrations with the names filled in.

-- Applied migrations: one row per version, written in the migration's own transaction.
CREATE TABLE IF NOT EXISTS {t_migrations} (
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_migrations_pkey} PRIMARY KEY (version)
);

-- One row per workflow run. Updated on every checkpoint (updated_at, status, lease_until), so
-- pages keep free room for HOT updates; no index covers those columns for the same reason.
-- start_token is the token of the execution that owns the run, lease_until when its hold
-- expires (migration 0003: a resume takes the run over only after it). traceparent (0005) is
-- the W3C trace context of the caller that started the run, when tracing was on.
CREATE TABLE {t_instances} (
    instance_id      text        NOT NULL,
    workflow_id      text        NOT NULL,
    definition_hash  text        NOT NULL,
    status           text        NOT NULL,
    input            bytea       NOT NULL,
    output           bytea,
    error            text,
    reason           text,
    cancelled_by     text,
    paused_by        text,
    wake_at          timestamptz,
    park_node        text,
    signal_name      text,
    request_kind     text,
    request_reason   text,
    request_by       text,
    distributed      boolean     NOT NULL DEFAULT false,
    start_token      uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    lease_until      timestamptz,
    traceparent      text,
    CONSTRAINT {n_instances_pkey} PRIMARY KEY (instance_id),
    CONSTRAINT {n_instances_status_check} CHECK (status IN (
        'running', 'waiting', 'awaiting_signal', 'paused', 'completed', 'failed', 'cancelled')),
    CONSTRAINT {n_instances_request_check} CHECK (request_kind IN ('cancel', 'pause'))
) WITH (fillfactor = 80);

-- The console's run list pages by keyset, (sort column[, created_at], instance_id); each filter
-- has an index in that order (migration 0006). None covers updated_at (HOT updates, above).
-- The created index carries status: the status counts of a window are an index-only scan.
CREATE INDEX {n_instances_workflow_idx} ON {t_instances} (workflow_id, created_at, instance_id);
CREATE INDEX {n_instances_status_idx} ON {t_instances} (status, created_at, instance_id);
CREATE INDEX {n_instances_created_idx} ON {t_instances} (created_at, instance_id)
    INCLUDE (status);
CREATE INDEX {n_instances_wf_status_idx}
    ON {t_instances} (workflow_id, status, created_at, instance_id);
CREATE INDEX {n_instances_id_prefix_idx} ON {t_instances} (instance_id text_pattern_ops);
CREATE INDEX {n_instances_completed_idx} ON {t_instances} (completed_at)
    WHERE completed_at IS NOT NULL;
CREATE INDEX {n_instances_wake_idx} ON {t_instances} (wake_at)
    WHERE status IN ('waiting', 'awaiting_signal');

-- Live views (the web console) LISTEN on the changes channel: every new run and every change
-- of a run's status is announced with its instance id (migration 0006). A running run's
-- checkpoints keep its status, so the hot path pays only the WHEN test.
CREATE FUNCTION {f_notify_changes}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify({changes_channel}, NEW.instance_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER {n_instances_insert_notify} AFTER INSERT ON {t_instances}
    FOR EACH ROW EXECUTE FUNCTION {f_notify_changes}();
CREATE TRIGGER {n_instances_status_notify} AFTER UPDATE OF status ON {t_instances}
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION {f_notify_changes}();

-- One row per task attempt; a retried write of the same attempt updates its row.
CREATE TABLE {t_task_executions} (
    id             bigserial   NOT NULL,
    instance_id    text        NOT NULL,
    task_key       text        NOT NULL,
    task_id        text        NOT NULL,
    attempt        integer     NOT NULL,
    status         text        NOT NULL,
    worker_id      text,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    duration_ms    double precision,
    error          text,
    next_retry_at  timestamptz,
    deadline       timestamptz,
    CONSTRAINT {n_task_executions_pkey} PRIMARY KEY (id),
    CONSTRAINT {n_task_executions_attempt_key} UNIQUE (instance_id, task_key, attempt),
    CONSTRAINT {n_task_executions_instance_fkey} FOREIGN KEY (instance_id)
        REFERENCES {t_instances} (instance_id) ON DELETE CASCADE,
    CONSTRAINT {n_task_executions_status_check} CHECK (status IN ('running', 'completed', 'failed'))
);

CREATE INDEX {n_task_executions_task_idx} ON {t_task_executions} (task_id, started_at);
-- Rows arrive in time order: a BRIN index serves time-window queries at almost no write cost.
CREATE INDEX {n_task_executions_finished_idx} ON {t_task_executions} USING brin (finished_at);

-- Task outputs (and engine markers such as timers), one per (instance, key).
CREATE TABLE {t_checkpoints} (
    instance_id  text        NOT NULL,
    key          text        NOT NULL,
    task_id      text,
    output       bytea       NOT NULL,
    size         integer     NOT NULL GENERATED ALWAYS AS (octet_length(output)) STORED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_checkpoints_pkey} PRIMARY KEY (instance_id, key),
    CONSTRAINT {n_checkpoints_instance_fkey} FOREIGN KEY (instance_id)
        REFERENCES {t_instances} (instance_id) ON DELETE CASCADE
);

-- Signal events, FIFO per (instance, name). No foreign key: an event may arrive before
-- its instance exists. send_id makes a retried send_signal store the event once.
CREATE TABLE {t_signals} (
    id           bigserial   NOT NULL,
    instance_id  text        NOT NULL,
    signal_name  text        NOT NULL,
    payload      bytea       NOT NULL,
    send_id      uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    consumed_at  timestamptz,
    CONSTRAINT {n_signals_pkey} PRIMARY KEY (id),
    CONSTRAINT {n_signals_send_key} UNIQUE (send_id)
);

CREATE INDEX {n_signals_pending_idx} ON {t_signals} (instance_id, signal_name, id)
    WHERE consumed_at IS NULL;
CREATE INDEX {n_signals_instance_idx} ON {t_signals} (instance_id);

-- Worker queue (migration 0002).
-- One row per runnable point of a run submitted for workers: a task to run, or "continue"
-- (task_key = ''). A row is unclaimed (worker_id IS NULL) or claimed by a worker until
-- lease_expires_at; attempt counts the claims and fences every write made under a claim.
-- claim_token is the id of the call that claimed the row, so a claim or advance re-sent after
-- a lost connection recognises its own row. Rows are inserted, claimed once or twice and
-- deleted, so the table stays small; fillfactor 70 and an eager autovacuum keep its pages
-- and indexes compact under that churn. The foreign key cascades: deleting a run (retention)
-- deletes its entries. last_error (migration 0004) is why the entry's last claim ended
-- without an outcome, given by the worker that abandoned it (dead-lettering reports it).
CREATE TABLE {t_task_queue} (
    instance_id       text        NOT NULL,
    task_key          text        NOT NULL,
    task_id           text,
    definition_hash   text        NOT NULL,
    priority          smallint    NOT NULL DEFAULT 3,
    tags              text[]      NOT NULL DEFAULT ARRAY[]::text[],
    available_at      timestamptz NOT NULL DEFAULT now(),
    worker_id         text,
    attempt           integer     NOT NULL DEFAULT 0,
    lease_expires_at  timestamptz,
    claim_token       uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    concurrency_key   text,
    concurrency_limit integer,
    CONSTRAINT {n_task_queue_pkey} PRIMARY KEY (instance_id, task_key),
    CONSTRAINT {n_task_queue_instance_fkey} FOREIGN KEY (instance_id)
        REFERENCES {t_instances} (instance_id) ON DELETE CASCADE,
    CONSTRAINT {n_task_queue_lease_check} CHECK ((worker_id IS NULL) = (lease_expires_at IS NULL))
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.05);

-- The claim query walks unclaimed entries in claim order and stops after LIMIT rows.
CREATE INDEX {n_task_queue_ready_idx} ON {t_task_queue} (priority, available_at)
    WHERE worker_id IS NULL;
-- Claimed entries whose lease ran out (claimable again). A heartbeat changes
-- lease_expires_at, so it is not a HOT update; heartbeats are rare (every claim_ttl / 3).
CREATE INDEX {n_task_queue_lease_idx} ON {t_task_queue} (lease_expires_at)
    WHERE worker_id IS NOT NULL;

-- Workflow definitions (sayiir.core.graph.definition_json), inserted once per hash when a run
-- starts (migration 0006; each process remembers the hashes it stored).
CREATE TABLE {t_definitions} (
    definition_hash  text        NOT NULL,
    workflow_id      text        NOT NULL,
    structure        jsonb       NOT NULL,
    first_seen       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_definitions_pkey} PRIMARY KEY (definition_hash)
);

-- Operator actions (cancel, pause, retry, fork, signal...): who did what to which run, when.
CREATE TABLE {t_audit} (
    id           bigserial   NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text        NOT NULL,
    action       text        NOT NULL,
    instance_id  text,
    detail       jsonb       NOT NULL DEFAULT jsonb_build_object(),
    CONSTRAINT {n_audit_pkey} PRIMARY KEY (id)
);

CREATE INDEX {n_audit_instance_idx} ON {t_audit} (instance_id, id);

-- Cron schedules (migration 0007): a compare-and-set row per schedule, JSON body.
CREATE TABLE {t_schedules} (
    schedule_id text        NOT NULL,
    version     bigint      NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    fire_at     timestamptz NOT NULL,
    body        bytea       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_schedules_pkey} PRIMARY KEY (schedule_id)
);

CREATE INDEX {n_schedules_due_idx} ON {t_schedules} (fire_at) WHERE NOT paused;

-- Run concurrency limits (migration 0007): a slot row per run holding one, per key.
CREATE TABLE {t_concurrency_slots} (
    concurrency_key text    NOT NULL,
    slot            integer NOT NULL,
    instance_id     text    NOT NULL,
    CONSTRAINT {n_concurrency_slots_pkey} PRIMARY KEY (concurrency_key, slot),
    CONSTRAINT {n_concurrency_slots_instance_fkey} FOREIGN KEY (instance_id)
        REFERENCES {t_instances} (instance_id) ON DELETE CASCADE
);

CREATE INDEX {n_concurrency_slots_instance_idx} ON {t_concurrency_slots} (instance_id);

-- Idempotent submit with a window (migration 0007): the run holding a key until expires_at.
CREATE TABLE {t_dedupe_keys} (
    dedupe_key  text        NOT NULL,
    instance_id text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    CONSTRAINT {n_dedupe_keys_pkey} PRIMARY KEY (dedupe_key)
);

-- The purge of expired keys (migration 0010): submits and sayiir retention walk it.
CREATE INDEX {n_dedupe_keys_expires_idx} ON {t_dedupe_keys} (expires_at);

-- The partitioned layout (migration 0008): functions only, called by `sayiir partition URL`
-- and by retention; the tables above are the plain layout, which they convert.
-- A unique index of a partitioned table must contain the partition key, so the instance id
-- alone cannot be the primary key there. This trigger keeps it unique across partitions: it
-- serialises inserts of one id (a transaction-scoped advisory lock), then skips the insert
-- (returns NULL, as ON CONFLICT DO NOTHING would) when a run with that id exists. Each query
-- of the function takes a fresh snapshot, so the probe sees a concurrent insert committed
-- while this one waited for the lock.
CREATE FUNCTION {f_unique_run_id}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtextextended('sayiir:run:' || {lit_schema} || '.' || {lit_prefix} || ':'
                         || NEW.instance_id, 0));
    IF EXISTS (SELECT FROM {t_instances} AS i WHERE i.instance_id = NEW.instance_id) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

-- Add the month partition starting at lo (UTC) of table base (attached to parent, which is
-- base itself except during the conversion). Returns whether it was created: false when it
-- exists, or when the default partition holds rows of that month (they stay there, where
-- they are still found; retention deletes them by rows).
CREATE FUNCTION {f_partition_add}(parent text, base text, lo timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    s text := {lit_schema};
    part text := base || '_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass(format('%I.%I', s, part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)%s',
                       s, part, s, parent, lo, lo + interval '1 month',
                       CASE WHEN base = {lit_prefix} || 'workflow_instances'
                            THEN ' WITH (fillfactor = 80)' ELSE '' END);
    EXCEPTION WHEN check_violation OR duplicate_table THEN
        RETURN false;
    END;
    RETURN true;
END
$$;

-- The month partitions of the three tables from the month of since (UTC) to ahead months
-- after the current one; parent_suffix names the parents during the conversion. Returns how
-- many partitions were created (0 when all exist: then it takes no lock at all).
CREATE FUNCTION {f_partition_ensure}(parent_suffix text, since timestamptz, ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    p text := {lit_prefix};
    lo timestamptz := date_trunc('month', least(since, now()) AT TIME ZONE 'UTC')
                      AT TIME ZONE 'UTC';
    upto timestamptz := (date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
                        + make_interval(months => ahead);
    base text;
    n integer := 0;
BEGIN
    WHILE lo <= upto LOOP
        FOREACH base IN ARRAY ARRAY['workflow_instances', 'task_executions', 'checkpoints'] LOOP
            n := n + {f_partition_add}(p || base || parent_suffix, p || base, lo)::integer;
        END LOOP;
        lo := lo + interval '1 month';
    END LOOP;
    RETURN n;
END
$$;

-- The columns of table rel a row copy names (all but generated ones), each prefixed with
-- alias and a dot when alias is not empty.
CREATE FUNCTION {f_partition_columns}(rel regclass, alias text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(CASE WHEN alias = '' THEN '' ELSE quote_ident(alias) || '.' END
                      || quote_ident(a.attname), ', ' ORDER BY a.attnum)
    FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
$$;

-- Convert the three tables to the partitioned layout, in the caller's transaction (all or
-- nothing): new partitioned tables shaped like the old ones (columns, defaults, checks) plus
-- run_created_at on the children, the rows copied, the old tables dropped (with the foreign
-- keys that pointed at them: queue entries and slots are then removed by the statements
-- that remove runs), the new ones renamed, their keys made to include the partition key, and
-- every other index and trigger of the old tables created again from the catalog (so the
-- conversion keeps what any migration added). Returns false when already partitioned.
CREATE FUNCTION {f_partition_convert}(ahead integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    s text := {lit_schema};
    p text := {lit_prefix};
    inst regclass := format('%I.%I', {lit_schema}, {lit_prefix} || 'workflow_instances');
    te regclass := format('%I.%I', {lit_schema}, {lit_prefix} || 'task_executions');
    cp regclass := format('%I.%I', {lit_schema}, {lit_prefix} || 'checkpoints');
    defs text[];
    def text;
    seq text;
    earliest timestamptz;
    base text;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_partitioned_table AS t WHERE t.partrelid = inst) THEN
        RETURN false;
    END IF;
    LOCK TABLE {t_instances}, {t_task_executions}, {t_checkpoints}, {t_task_queue},
               {t_concurrency_slots} IN ACCESS EXCLUSIVE MODE;
    SELECT coalesce(array_agg(d ORDER BY n), ARRAY[]::text[]) INTO defs FROM (
        SELECT pg_get_indexdef(x.indexrelid) AS d, 1 AS n FROM pg_catalog.pg_index AS x
        WHERE x.indrelid IN (inst, te, cp) AND NOT x.indisunique
        UNION ALL
        SELECT pg_get_triggerdef(g.oid), 2 FROM pg_catalog.pg_trigger AS g
        WHERE g.tgrelid IN (inst, te, cp) AND NOT g.tgisinternal
    ) AS q;
    FOREACH base IN ARRAY ARRAY['workflow_instances', 'task_executions', 'checkpoints'] LOOP
        EXECUTE format(
            'CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
            'INCLUDING GENERATED INCLUDING STORAGE%s) PARTITION BY RANGE (%I)',
            s, p || base || '_new', s, p || base,
            CASE WHEN base = 'workflow_instances' THEN ''
                 ELSE ', run_created_at timestamptz NOT NULL' END,
            CASE WHEN base = 'workflow_instances' THEN 'created_at' ELSE 'run_created_at' END);
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I DEFAULT%s',
                       s, p || base || '_default', s, p || base || '_new',
                       CASE WHEN base = 'workflow_instances' THEN ' WITH (fillfactor = 80)'
                            ELSE '' END);
    END LOOP;
    SELECT min(i.created_at) INTO earliest FROM {t_instances} AS i;
    PERFORM {f_partition_ensure}('_new', coalesce(earliest, now()), ahead);
    EXECUTE format('INSERT INTO %I.%I (%s) SELECT %s FROM %s',
                   s, p || 'workflow_instances_new', {f_partition_columns}(inst, ''),
                   {f_partition_columns}(inst, ''), inst);
    EXECUTE format('INSERT INTO %I.%I (%s, run_created_at) SELECT %s, i.created_at '
                   'FROM %s AS c JOIN %s AS i ON i.instance_id = c.instance_id',
                   s, p || 'task_executions_new', {f_partition_columns}(te, ''),
                   {f_partition_columns}(te, 'c'), te, inst);
    EXECUTE format('INSERT INTO %I.%I (%s, run_created_at) SELECT %s, i.created_at '
                   'FROM %s AS c JOIN %s AS i ON i.instance_id = c.instance_id',
                   s, p || 'checkpoints_new', {f_partition_columns}(cp, ''),
                   {f_partition_columns}(cp, 'c'), cp, inst);
    seq := pg_get_serial_sequence(te::text, 'id');
    IF seq IS NOT NULL THEN
        EXECUTE format('ALTER SEQUENCE %s OWNED BY %I.%I.id', seq, s, p || 'task_executions_new');
    END IF;
    DROP TABLE {t_checkpoints}, {t_task_executions};
    DROP TABLE {t_instances} CASCADE;
    FOREACH base IN ARRAY ARRAY['workflow_instances', 'task_executions', 'checkpoints'] LOOP
        EXECUTE format('ALTER TABLE %I.%I RENAME TO %I', s, p || base || '_new', p || base);
    END LOOP;
    EXECUTE 'ALTER TABLE {t_instances} ADD CONSTRAINT {n_instances_pkey} '
            'PRIMARY KEY (instance_id, created_at)';
    EXECUTE 'ALTER TABLE {t_task_executions} '
            'ADD CONSTRAINT {n_task_executions_pkey} PRIMARY KEY (id, run_created_at), '
            'ADD CONSTRAINT {n_task_executions_attempt_key} '
            'UNIQUE (instance_id, task_key, attempt, run_created_at)';
    EXECUTE 'ALTER TABLE {t_checkpoints} ADD CONSTRAINT {n_checkpoints_pkey} '
            'PRIMARY KEY (instance_id, key, run_created_at)';
    FOREACH def IN ARRAY defs LOOP
        EXECUTE def;
    END LOOP;
    EXECUTE 'CREATE TRIGGER {n_instances_unique_id} BEFORE INSERT ON {t_instances} '
            'FOR EACH ROW EXECUTE FUNCTION {f_unique_run_id}()';
    EXECUTE 'ANALYZE {t_instances}, {t_task_executions}, {t_checkpoints}';
    RETURN true;
END
$$;

-- Retention in the partitioned layout: drop each month (of the three tables) that ended
-- before cutoff, unless more than most of its runs must stay (not finished, or finished
-- since cutoff); those stragglers are first moved to the default partitions, where they
-- are found as before. Consumed signal events, queue entries and concurrency slots of the
-- dropped runs are deleted (no foreign key cascades to them in this layout). Returns
-- (runs dropped, months dropped, months left to row deletes for their stragglers).
CREATE FUNCTION {f_partition_drop}(cutoff timestamptz, most bigint) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    s text := {lit_schema};
    p text := {lit_prefix};
    stays text := format('NOT coalesce(i.status IN (''completed'', ''failed'', ''cancelled'')'
                         ' AND i.completed_at < %L, false)', cutoff);
    part record;
    suffix text;
    total bigint;
    strag bigint;
    dropped bigint := 0;
    months bigint := 0;
    kept bigint := 0;
    locked boolean := false;
    base text;
BEGIN
    FOR part IN
        SELECT c.relname AS name FROM pg_catalog.pg_inherits AS h
        JOIN pg_catalog.pg_class AS c ON c.oid = h.inhrelid
        WHERE h.inhparent = format('%I.%I', s, p || 'workflow_instances')::regclass
          AND c.relname = p || 'workflow_instances_p' || right(c.relname, 6)
          AND right(c.relname, 6) ~ '^[0-9]+$'
          AND (to_date(right(c.relname, 6), 'YYYYMM')::timestamp AT TIME ZONE 'UTC')
              + interval '1 month' <= cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('SELECT count(*), count(*) FILTER (WHERE %s) FROM %I.%I AS i',
                       stays, s, part.name) INTO total, strag;
        IF strag > most THEN
            kept := kept + 1;
            CONTINUE;
        END IF;
        IF NOT locked THEN
            LOCK TABLE {t_instances}, {t_task_executions}, {t_checkpoints}
                IN ACCESS EXCLUSIVE MODE;
            locked := true;
        END IF;
        suffix := '_p' || right(part.name, 6);
        FOREACH base IN ARRAY ARRAY['workflow_instances', 'task_executions', 'checkpoints'] LOOP
            CONTINUE WHEN to_regclass(format('%I.%I', s, p || base || suffix)) IS NULL;
            EXECUTE format('ALTER TABLE %I.%I DETACH PARTITION %I.%I',
                           s, p || base, s, p || base || suffix);
        END LOOP;
        IF strag > 0 THEN
            EXECUTE format('INSERT INTO %I.%I (%s) SELECT %s FROM %I.%I AS i WHERE %s',
                           s, p || 'workflow_instances',
                           {f_partition_columns}(format('%I.%I', s, part.name)::regclass, ''),
                           {f_partition_columns}(format('%I.%I', s, part.name)::regclass, 'i'),
                           s, part.name, stays);
            FOREACH base IN ARRAY ARRAY['task_executions', 'checkpoints'] LOOP
                CONTINUE WHEN to_regclass(format('%I.%I', s, p || base || suffix)) IS NULL;
                -- From the few stragglers to their rows by index probes (LATERAL with
                -- OFFSET 0, which the planner keeps as a loop): a join would read the whole
                -- month of the child table.
                EXECUTE format(
                    'INSERT INTO %I.%I (%s) SELECT %s FROM %I.%I AS i CROSS JOIN LATERAL ('
                    'SELECT * FROM %I.%I AS c WHERE c.instance_id = i.instance_id '
                    'AND c.run_created_at = i.created_at OFFSET 0) AS c WHERE %s',
                    s, p || base,
                    {f_partition_columns}(format('%I.%I', s, p || base || suffix)::regclass, ''),
                    {f_partition_columns}(format('%I.%I', s, p || base || suffix)::regclass, 'c'),
                    s, part.name, s, p || base || suffix, stays);
            END LOOP;
        END IF;
        EXECUTE format('DELETE FROM {t_signals} AS g USING %I.%I AS i '
                       'WHERE g.instance_id = i.instance_id AND g.consumed_at IS NOT NULL '
                       'AND NOT (%s)', s, part.name, stays);
        EXECUTE format('DELETE FROM {t_task_queue} AS g USING %I.%I AS i '
                       'WHERE g.instance_id = i.instance_id AND NOT (%s)', s, part.name, stays);
        EXECUTE format('DELETE FROM {t_concurrency_slots} AS g USING %I.%I AS i '
                       'WHERE g.instance_id = i.instance_id AND NOT (%s)', s, part.name, stays);
        FOREACH base IN ARRAY ARRAY['workflow_instances', 'task_executions', 'checkpoints'] LOOP
            EXECUTE format('DROP TABLE IF EXISTS %I.%I', s, p || base || suffix);
        END LOOP;
        dropped := dropped + total - strag;
        months := months + 1;
    END LOOP;
    RETURN ARRAY[dropped, months, kept];
END
$$;

-- Task limits (migration 0011): @task(max_concurrent=..., rate_limit=...).
-- task_slots: one row per slot held, (task id, slot number < max_concurrent). The primary
-- key makes two executions racing for one slot number collide: the later one takes the row
-- only when its holder is gone (its execution lost the run's lease, or its worker's claim),
-- so no more than the limit ever hold one. A slot is deleted when its attempt ends. No
-- foreign key (the hot path pays no check; the partitioned layout could not have one):
-- retention deletes the rows of the runs it drops.
CREATE TABLE {t_task_slots} (
    task_id     text        NOT NULL,
    slot        integer     NOT NULL,
    instance_id text        NOT NULL,
    step_key    text        NOT NULL,
    owner       text        NOT NULL,
    attempt     integer,
    taken_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_task_slots_pkey} PRIMARY KEY (task_id, slot)
);

-- release_task_slot, and retention: a run's slots.
CREATE INDEX {n_task_slots_instance_idx} ON {t_task_slots} (instance_id, step_key);

-- rate_windows: the starts (epoch seconds, ascending) of a rate limit's bucket within its
-- last period, at most n of them; a start is added by one conditional upsert, re-checked
-- on the row's newest version when starts race (no more than n in any window).
CREATE TABLE {t_rate_windows} (
    bucket  text     NOT NULL,
    starts  float8[] NOT NULL,
    CONSTRAINT {n_rate_windows_pkey} PRIMARY KEY (bucket)
);

-- task_waits: the step of a run that waits at a task limit, and for what (waiting_reason);
-- written when a step is refused, deleted when it gets through.
CREATE TABLE {t_task_waits} (
    instance_id text        NOT NULL,
    step_key    text        NOT NULL,
    task_id     text        NOT NULL,
    kind        text        NOT NULL,
    name        text        NOT NULL,
    lim         integer     NOT NULL,
    per         float8,
    retry_at    float8,
    since       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {n_task_waits_pkey} PRIMARY KEY (instance_id, step_key)
);
