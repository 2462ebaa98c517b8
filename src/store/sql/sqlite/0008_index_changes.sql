-- What changed each knowledge base's index at each sequence number (PostgreSQL migration
-- 0004): written with the bump of kbs.index_seq, read by replicas that follow the store.
CREATE TABLE index_changes (
    kb_id       TEXT NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('publish', 'delete', 'switch')),
    document_id TEXT,
    removed     TEXT NOT NULL DEFAULT '[]',
    created_at  TEXT NOT NULL,
    PRIMARY KEY (kb_id, seq)
);
