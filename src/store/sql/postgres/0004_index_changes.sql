-- What changed each knowledge base's index at each sequence number (SQLite migration 0008):
-- written with the bump of kbs.index_seq, read by replicas that follow the store (woken by
-- NOTIFY groundwork_index).
CREATE TABLE index_changes (
    kb_id       TEXT NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('publish', 'delete', 'switch')),
    document_id TEXT,
    removed     TEXT NOT NULL DEFAULT '[]',
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kb_id, seq)
);
