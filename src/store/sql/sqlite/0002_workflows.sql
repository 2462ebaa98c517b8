-- Durable workflows: a run is a sequence of named steps whose outputs are kept, so that a
-- restarted process resumes at the first step not completed.
CREATE TABLE workflows (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    subject          TEXT,
    idempotency_key  TEXT,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN
                       ('queued', 'running', 'sleeping', 'waiting', 'completed', 'failed', 'cancelled')),
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    wake_at          TEXT,
    waiting_for      TEXT,
    output           TEXT,
    error            TEXT,
    progress         TEXT NOT NULL DEFAULT '{}',
    runs             INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    UNIQUE (tenant_id, kind, idempotency_key)
);
CREATE INDEX workflows_runnable ON workflows (status, wake_at);
CREATE INDEX workflows_tenant ON workflows (tenant_id, created_at);

CREATE TABLE workflow_steps (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    position    INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'retrying', 'completed', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    output      TEXT,
    errors      TEXT NOT NULL DEFAULT '[]',
    wake_at     TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (workflow_id, name)
);

-- Events sent to a workflow (approvals and the like), kept until a wait consumes them.
CREATE TABLE workflow_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    consumed    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);
CREATE INDEX workflow_events_wf ON workflow_events (workflow_id, name, consumed);

-- Index generations: a reindex writes the next generation's chunks beside the serving ones
-- and switches the KB over in one transaction.
ALTER TABLE kbs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE kbs ADD COLUMN model_source TEXT;
ALTER TABLE chunks ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
CREATE INDEX chunks_generation ON chunks (document_id, generation, ordinal);

-- What each ready document's chunks were made with, to list stale documents.
ALTER TABLE documents ADD COLUMN embedding_model TEXT;
ALTER TABLE documents ADD COLUMN chunk_max_tokens INTEGER;
ALTER TABLE documents ADD COLUMN chunk_overlap_tokens INTEGER;
UPDATE documents SET embedding_model = (SELECT embedding_model FROM kbs WHERE kbs.id = documents.kb_id),
                     chunk_max_tokens = (SELECT chunk_max_tokens FROM kbs WHERE kbs.id = documents.kb_id),
                     chunk_overlap_tokens = (SELECT chunk_overlap_tokens FROM kbs WHERE kbs.id = documents.kb_id)
 WHERE status = 'ready';
CREATE INDEX documents_status ON documents (status);

-- Folders synced into a knowledge base on a schedule.
CREATE TABLE sources (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kb_id        TEXT NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
    path         TEXT NOT NULL,
    schedule     TEXT,
    next_sync_at TEXT,
    last_sync_at TEXT,
    last_workflow_id TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (kb_id, path)
);
