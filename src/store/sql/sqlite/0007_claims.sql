-- Runs are claimed with a lease (PostgreSQL migration 0003): the claiming process and when its
-- claim lapses unless renewed.
ALTER TABLE workflows ADD COLUMN claimed_by TEXT;
ALTER TABLE workflows ADD COLUMN lease_until TEXT;
CREATE INDEX workflows_leases ON workflows (status, lease_until);
