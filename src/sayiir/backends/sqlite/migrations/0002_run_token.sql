-- 0002_run_token: the token of the run that owns the instance id.
--
-- Set when a run starts, and anew when conflict_policy="terminate_existing" replaces it. Every
-- write of an executing engine carries its run's token; a write from a replaced run is refused
-- (RunReplacedError) instead of landing in the new run. NULL (rows from before this
-- migration): every write is accepted, as before.
ALTER TABLE sayiir_workflow_instances ADD COLUMN run_token TEXT;
