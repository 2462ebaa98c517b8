//! Versioned schema. Migrations only ever get appended; a shipped one is never edited.

use rusqlite_migration::{Migrations, M};

/// Every migration, oldest first.
pub(super) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE TABLE kbs (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    description     TEXT,
    embedding_model TEXT NOT NULL,
    dimension       INTEGER NOT NULL,
    chunk_max_tokens     INTEGER NOT NULL,
    chunk_overlap_tokens INTEGER NOT NULL,
    index_seq       INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kb_id           TEXT NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
    chunks_embedded INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL
);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    kb_id       TEXT NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
    job_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'ready', 'failed')),
    error_code  TEXT,
    error       TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    chunk_count INTEGER NOT NULL DEFAULT 0,
    pages       INTEGER,
    warnings    TEXT NOT NULL DEFAULT '[]',
    replaces    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX documents_kb_status ON documents (kb_id, status, created_at);
CREATE INDEX documents_kb_sha ON documents (kb_id, sha256);
CREATE INDEX documents_kb_name ON documents (kb_id, name);
CREATE INDEX documents_job ON documents (job_id);
CREATE INDEX documents_sha ON documents (sha256);

-- AUTOINCREMENT: chunk ids are index point ids and must never be reused.
CREATE TABLE chunks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id  TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal      INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    end_offset   INTEGER NOT NULL,
    text         TEXT NOT NULL,
    tokens       INTEGER NOT NULL,
    page_start   INTEGER,
    page_end     INTEGER,
    heading_path TEXT NOT NULL,
    hash         TEXT NOT NULL,
    vector       BLOB NOT NULL
);
CREATE INDEX chunks_document ON chunks (document_id, ordinal);
"#,
        ),
        M::up(
            r#"
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
"#,
        ),
        M::up(
            r#"
-- Every model call through the gateway; also the record of settled spend.
CREATE TABLE gateway_calls (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    ts          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    user_id     TEXT,
    agent_id    TEXT,
    route       TEXT NOT NULL,
    provider    TEXT,
    model       TEXT,
    status      TEXT NOT NULL,
    error       TEXT,
    attempts    TEXT NOT NULL,
    latency_ms  REAL NOT NULL,
    ttft_ms     REAL,
    tokens_in   INTEGER NOT NULL,
    tokens_out  INTEGER NOT NULL,
    cost_usd    REAL NOT NULL,
    cache       TEXT NOT NULL,
    guardrails  TEXT NOT NULL,
    stream      INTEGER NOT NULL,
    request     TEXT,
    response    TEXT
);
CREATE INDEX gateway_calls_tenant_ts ON gateway_calls (tenant_id, ts);
CREATE INDEX gateway_calls_key_ts ON gateway_calls (key_id, ts);

-- Answers by hash of the canonical request.
CREATE TABLE gateway_cache (
    key         TEXT PRIMARY KEY,
    route       TEXT NOT NULL,
    value       TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    expires_at  TEXT NOT NULL,
    last_used   INTEGER NOT NULL
);
CREATE INDEX gateway_cache_lru ON gateway_cache (last_used);
"#,
        ),
        M::up(
            r#"
-- Agents: one namespace per (tenant, id); everything below is deleted with its agent.
CREATE TABLE agents (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    config      TEXT NOT NULL,
    state       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE agent_conversations (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    title        TEXT NOT NULL,
    summary      TEXT NOT NULL DEFAULT '',
    summary_upto INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_conversations_agent ON agent_conversations (tenant_id, agent_id, updated_at);

CREATE TABLE agent_messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES agent_conversations(id) ON DELETE CASCADE,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    citations       TEXT NOT NULL DEFAULT '[]',
    tokens_in       INTEGER NOT NULL DEFAULT 0,
    tokens_out      INTEGER NOT NULL DEFAULT 0,
    cost_usd        REAL NOT NULL DEFAULT 0,
    meta            TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL
);
CREATE INDEX agent_messages_conversation ON agent_messages (conversation_id, id);

CREATE TABLE agent_tasks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at       TEXT NOT NULL,
    last_error   TEXT,
    result       TEXT,
    schedule_id  TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_tasks_queue ON agent_tasks (tenant_id, agent_id, status, id);
CREATE INDEX agent_tasks_due ON agent_tasks (status, run_at);

CREATE TABLE agent_schedules (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('at', 'after', 'cron')),
    spec        TEXT NOT NULL,
    task_kind   TEXT NOT NULL,
    payload     TEXT NOT NULL,
    next_run    TEXT,
    last_run    TEXT,
    runs        INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_schedules_due ON agent_schedules (next_run);

-- Events of streamed answers, kept for a while so an interrupted stream can resume.
CREATE TABLE agent_events (
    stream_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    tenant_id   TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    event       TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE INDEX agent_events_created ON agent_events (created_at);
"#,
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
