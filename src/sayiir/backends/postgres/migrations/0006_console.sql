-- 0006: what the operator console reads (issue 14).
--
-- Workflow definitions (sayiir.core.graph.definition_json), inserted once per hash when a run
-- starts (each process remembers the hashes it stored, so steady state adds no statement).
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

-- The run list pages by keyset: (sort column[, created_at], instance_id). Each filter the
-- console offers has an index in that order, so a page reads ~limit index entries whatever
-- its depth. None covers updated_at: it changes on every checkpoint, and an index on it
-- would turn every checkpoint's update of the instance row into a non-HOT update.
-- The created index carries status, so the status counts of a time window are an
-- index-only scan.
DROP INDEX {schema}.{n_instances_created_idx};
CREATE INDEX {n_instances_created_idx} ON {t_instances} (created_at, instance_id)
    INCLUDE (status);
DROP INDEX {schema}.{n_instances_status_idx};
CREATE INDEX {n_instances_status_idx} ON {t_instances} (status, created_at, instance_id);
DROP INDEX {schema}.{n_instances_workflow_idx};
CREATE INDEX {n_instances_workflow_idx} ON {t_instances} (workflow_id, created_at, instance_id);
CREATE INDEX {n_instances_wf_status_idx}
    ON {t_instances} (workflow_id, status, created_at, instance_id);
-- "instance id starts with": LIKE 'prefix%' under any database collation.
CREATE INDEX {n_instances_id_prefix_idx} ON {t_instances} (instance_id text_pattern_ops);

-- Live views (the web console) LISTEN on the changes channel: every new run and every change
-- of a run's status is announced with its instance id. A running run's checkpoints keep its
-- status, so the hot path pays only the WHEN test, never a notification.
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
