-- Where each replica answers (PostgreSQL migration 0007). SQLite has one process, which holds
-- every agent: no lease table.
ALTER TABLE replicas ADD COLUMN address TEXT NOT NULL DEFAULT '';
