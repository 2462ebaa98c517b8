-- Runs are claimed with a lease (SQLite migration 0007): the claiming process and when its
-- claim lapses unless renewed; another process takes over a run whose lease lapsed.
ALTER TABLE workflows ADD COLUMN claimed_by TEXT, ADD COLUMN lease_until TIMESTAMPTZ;
CREATE INDEX workflows_leases ON workflows (status, lease_until);
