-- 0007_worker_queue: the worker queue (QueueStorage, used by sayiir.worker.Worker;
-- docs/workers.md), as on PostgreSQL (its 0002 and 0004).
--
-- One row per runnable point of a run submitted for workers: a task to run, or "continue"
-- (task_key = ''). A row is unclaimed (worker_id IS NULL) or claimed by a worker until
-- lease_expires_at; attempt counts the claims and fences every write made under a claim;
-- last_error says why the last claim ended without an outcome. tags is a JSON array of
-- text. id orders entries queued at the same moment. Deleting a run deletes its entries.
CREATE TABLE sayiir_task_queue (
    id               INTEGER PRIMARY KEY,
    instance_id      TEXT NOT NULL
        REFERENCES sayiir_workflow_instances (instance_id) ON DELETE CASCADE,
    task_key         TEXT NOT NULL,
    task_id          TEXT,
    definition_hash  TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 3,
    tags             TEXT NOT NULL DEFAULT '[]',
    available_at     REAL NOT NULL,
    worker_id        TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    last_error       TEXT,
    CHECK ((worker_id IS NULL) = (lease_expires_at IS NULL))
);

-- One entry per (run, key); also serves every lookup of a claim's entry.
CREATE UNIQUE INDEX sayiir_task_queue_key_idx ON sayiir_task_queue (instance_id, task_key);

-- Unclaimed entries in claim order. The aged priority (records.claim_order: priority minus
-- one level per 300 s waited) orders entries like priority * 300 + available_at, which does
-- not depend on the time of the claim, so an index can hold it.
CREATE INDEX sayiir_task_queue_ready_idx
    ON sayiir_task_queue (priority * 300.0 + available_at, id)
    WHERE worker_id IS NULL;

-- Claimed entries by the end of their lease (claimable again once it has passed).
CREATE INDEX sayiir_task_queue_lease_idx
    ON sayiir_task_queue (lease_expires_at)
    WHERE worker_id IS NOT NULL;
