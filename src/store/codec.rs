//! What the SQL stores share: how ids are made, how JSON and vectors are kept in columns, and
//! the column lists their queries read (in the order their row readers expect). The SQL that
//! differs between SQLite and PostgreSQL stays with each store.

use super::StoreError;

/// A new record id (time-ordered UUIDv7).
pub(super) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Stored JSON this version cannot read.
pub(super) fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Database(format!("stored JSON is unreadable: {e}"))
}

/// A vector as it is stored: little-endian `f32`s.
pub(super) fn vector_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// Columns of `kbs`.
pub(super) const KB_COLS: &str = "id, tenant_id, name, description, embedding_model, dimension, \
    chunk_max_tokens, chunk_overlap_tokens, index_seq, created_at, generation, model_source, \
    rerank_model, rerank_candidates";

/// Columns of `documents`.
pub(super) const DOC_COLS: &str = "id, kb_id, job_id, name, media_type, size, sha256, status, \
    error_code, error, metadata, chunk_count, pages, warnings, replaces, created_at, updated_at, \
    embedding_model, chunk_max_tokens, chunk_overlap_tokens, extraction, password";

/// An API key with its tenant's name.
pub(super) const KEY_SELECT: &str = "SELECT k.key_id, k.tenant_id, t.name, k.name, \
    k.secret_hash, k.scopes, k.created_at, k.revoked_at FROM api_keys k \
    JOIN tenants t ON t.id = k.tenant_id";

/// A chunk with its document's name.
pub(super) const CHUNK_SELECT: &str = "SELECT c.id, c.document_id, d.name, c.ordinal, \
    c.start_offset, c.end_offset, c.text, c.tokens, c.page_start, c.page_end, c.heading_path, \
    c.hash, c.context, c.ocr_confidence FROM chunks c JOIN documents d ON d.id = c.document_id";
