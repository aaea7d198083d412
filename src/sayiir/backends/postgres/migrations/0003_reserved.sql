-- 0003: a placeholder on branch "worker" only (0003 is reserved for another change merged
-- at the same time; migration numbers must have no gap). It changes nothing; at merge it is
-- replaced by the real 0003, or 0004 below is renumbered 0003 and this file dropped.
SELECT 1;
