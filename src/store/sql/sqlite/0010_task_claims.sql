-- The replica that claimed a running agent task (PostgreSQL migration 0006), so that a
-- starting replica puts back only the tasks of replicas that are gone.
ALTER TABLE agent_tasks ADD COLUMN claimed_by TEXT;
