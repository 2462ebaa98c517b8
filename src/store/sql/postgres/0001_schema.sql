-- The whole schema of the PostgreSQL store, as of SQLite migration 0005 (the two stores hold
-- the same records; `groundwork migrate` copies one into the other). Integers are BIGINT and
-- times TIMESTAMPTZ throughout; JSON is kept as the text the service wrote.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);

CREATE TABLE kbs (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    description     TEXT,
    embedding_model TEXT NOT NULL,
    dimension       BIGINT NOT NULL,
    chunk_max_tokens     BIGINT NOT NULL,
    chunk_overlap_tokens BIGINT NOT NULL,
    index_seq       BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    generation      BIGINT NOT NULL DEFAULT 0,
    model_source    TEXT,
    UNIQUE (tenant_id, name)
);

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kb_id           TEXT NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
    chunks_embedded BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    kb_id       TEXT NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
    job_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'ready', 'failed')),
    error_code  TEXT,
    error       TEXT,
    metadata    TEXT NOT NULL DEFAULT '{}',
    chunk_count BIGINT NOT NULL DEFAULT 0,
    pages       BIGINT,
    warnings    TEXT NOT NULL DEFAULT '[]',
    replaces    TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    embedding_model      TEXT,
    chunk_max_tokens     BIGINT,
    chunk_overlap_tokens BIGINT,
    extraction  TEXT,
    password    TEXT
);
CREATE INDEX documents_kb_status ON documents (kb_id, status, created_at);
CREATE INDEX documents_kb_name ON documents (kb_id, name);
CREATE INDEX documents_job ON documents (job_id);
CREATE INDEX documents_sha ON documents (sha256);
CREATE INDEX documents_status ON documents (status);
-- Identical bytes are one document per KB (a failed copy aside): enforced here, not by a lock,
-- because several processes may insert at once.
CREATE UNIQUE INDEX documents_kb_content ON documents (kb_id, sha256) WHERE status <> 'failed';

-- Chunk ids are index point ids and must never be reused: an identity never goes back.
CREATE TABLE chunks (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id  TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal      BIGINT NOT NULL,
    start_offset BIGINT NOT NULL,
    end_offset   BIGINT NOT NULL,
    text         TEXT NOT NULL,
    tokens       BIGINT NOT NULL,
    page_start   BIGINT,
    page_end     BIGINT,
    heading_path TEXT NOT NULL,
    hash         TEXT NOT NULL,
    vector       BYTEA NOT NULL,
    generation   BIGINT NOT NULL DEFAULT 0,
    context      TEXT NOT NULL DEFAULT '',
    ocr_confidence REAL
);
CREATE INDEX chunks_generation ON chunks (document_id, generation, ordinal);

-- Stored upload bytes by content hash, in parts of at most 1 MiB written in one transaction
-- (a replica needs nothing but the database).
CREATE TABLE blobs (
    sha256  TEXT NOT NULL,
    part    BIGINT NOT NULL,
    bytes   BYTEA NOT NULL,
    PRIMARY KEY (sha256, part)
);

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
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    wake_at          TIMESTAMPTZ,
    waiting_for      TEXT,
    output           TEXT,
    error            TEXT,
    progress         TEXT NOT NULL DEFAULT '{}',
    runs             BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    UNIQUE (tenant_id, kind, idempotency_key)
);
CREATE INDEX workflows_runnable ON workflows (status, wake_at);
CREATE INDEX workflows_tenant ON workflows (tenant_id, created_at);

CREATE TABLE workflow_steps (
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    position    BIGINT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('running', 'retrying', 'completed', 'failed')),
    attempts    BIGINT NOT NULL DEFAULT 0,
    output      TEXT,
    errors      TEXT NOT NULL DEFAULT '[]',
    wake_at     TIMESTAMPTZ,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (workflow_id, name)
);

-- Events sent to a workflow (approvals and the like), kept until a wait consumes them.
CREATE TABLE workflow_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    consumed    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX workflow_events_wf ON workflow_events (workflow_id, name, consumed);

-- Folders synced into a knowledge base on a schedule.
CREATE TABLE sources (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kb_id        TEXT NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
    path         TEXT NOT NULL,
    schedule     TEXT,
    next_sync_at TIMESTAMPTZ,
    last_sync_at TIMESTAMPTZ,
    last_workflow_id TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (kb_id, path)
);

-- Every model call through the gateway; also the record of settled spend.
CREATE TABLE gateway_calls (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,
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
    latency_ms  DOUBLE PRECISION NOT NULL,
    ttft_ms     DOUBLE PRECISION,
    tokens_in   BIGINT NOT NULL,
    tokens_out  BIGINT NOT NULL,
    cost_usd    DOUBLE PRECISION NOT NULL,
    cache       TEXT NOT NULL,
    guardrails  TEXT NOT NULL,
    stream      BOOLEAN NOT NULL,
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
    bytes       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    last_used   BIGINT NOT NULL
);
CREATE INDEX gateway_cache_lru ON gateway_cache (last_used);

-- Agents: one namespace per (tenant, id); everything below is deleted with its agent.
CREATE TABLE agents (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    config      TEXT NOT NULL,
    state       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE agent_conversations (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    title        TEXT NOT NULL,
    summary      TEXT NOT NULL DEFAULT '',
    summary_upto BIGINT NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_conversations_agent ON agent_conversations (tenant_id, agent_id, updated_at);

CREATE TABLE agent_messages (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES agent_conversations(id) ON DELETE CASCADE,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    citations       TEXT NOT NULL DEFAULT '[]',
    tokens_in       BIGINT NOT NULL DEFAULT 0,
    tokens_out      BIGINT NOT NULL DEFAULT 0,
    cost_usd        DOUBLE PRECISION NOT NULL DEFAULT 0,
    meta            TEXT NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX agent_messages_conversation ON agent_messages (conversation_id, id);

CREATE TABLE agent_tasks (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_at       TIMESTAMPTZ NOT NULL,
    last_error   TEXT,
    result       TEXT,
    schedule_id  TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
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
    next_run    TIMESTAMPTZ,
    last_run    TIMESTAMPTZ,
    runs        BIGINT NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents(tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_schedules_due ON agent_schedules (next_run);

-- Events of streamed answers, kept for a while so an interrupted stream can resume.
CREATE TABLE agent_events (
    stream_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    tenant_id   TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    event       TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE INDEX agent_events_created ON agent_events (created_at);
