-- Where each replica answers and keeps its data (PostgreSQL migration 0007). SQLite has one
-- process, which holds every agent: no lease table.
ALTER TABLE replicas ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE replicas ADD COLUMN home TEXT NOT NULL DEFAULT '';
