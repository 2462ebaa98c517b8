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
