-- 0010: expired dedupe keys are purged (docs/flow-control.md): submits with a key delete a
-- few whose window has passed, and `sayiir retention` all of them, in batches. Both walk
-- this index from its oldest end, so the table does not grow with every key ever used.
CREATE INDEX {n_dedupe_keys_expires_idx} ON {t_dedupe_keys} (expires_at);
