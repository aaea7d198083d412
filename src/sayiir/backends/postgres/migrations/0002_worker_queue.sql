-- 0002: the worker queue (QueueStorage, used by sayiir.worker.Worker; docs/workers.md).
--
-- One row per runnable point of a run submitted for workers: a task to run, or "continue"
-- (task_key = ''). A row is unclaimed (worker_id IS NULL) or claimed by a worker until
-- lease_expires_at; attempt counts the claims and fences every write made under a claim.
-- claim_token is the id of the call that claimed the row, so a claim or advance re-sent after
-- a lost connection recognises its own row. Rows are inserted, claimed once or twice and
-- deleted, so the table stays small; fillfactor 70 and an eager autovacuum keep its pages
-- and indexes compact under that churn. The foreign key cascades: deleting a run (retention)
-- deletes its entries.
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
