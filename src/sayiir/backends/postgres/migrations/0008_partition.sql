-- 0008: the partitioned layout (docs/postgres.md, "Partitioning"), as functions only.
--
-- Nothing here changes a table: a database stays unpartitioned, and unaffected, until
-- `sayiir partition URL` (PostgresBackend.partition_tables()) calls {f_partition_convert}.
-- In the partitioned layout the runs, task executions and checkpoints are range-partitioned
-- by month of the run's creation time (the children carry it as run_created_at, so a run's
-- rows all live in one month), each table also has a default partition, and retention drops
-- whole months ({f_partition_drop}) instead of deleting rows. Months are named
-- <table>_pYYYYMM and cut in UTC, whatever the session's time zone.

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
