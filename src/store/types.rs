//! Records the store reads and writes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An isolated owner of knowledge bases (and later agents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Stable id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// What a key may do. `Admin` implies `Write`, which implies `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read knowledge bases, documents, jobs; search.
    Read,
    /// Everything `read` allows, plus model calls that spend: chat completions, embeddings,
    /// agent chat (a key for a chat front end).
    Infer,
    /// Everything `infer` allows, plus creating knowledge bases, uploading and deleting
    /// documents, configuring agents.
    Write,
    /// Delete knowledge bases.
    Admin,
}

impl Scope {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Infer => "infer",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "read" => Some(Scope::Read),
            "infer" => Some(Scope::Infer),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// A key about to be stored.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Public part of the key, used to look it up.
    pub key_id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Free label.
    pub name: String,
    /// SHA-256 of the whole secret key, hex.
    pub secret_hash: String,
    /// Granted scopes.
    pub scopes: Vec<Scope>,
}

/// A stored key (never the secret itself).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRecord {
    /// Public part of the key.
    pub key_id: String,
    /// Owning tenant's id.
    pub tenant_id: String,
    /// Owning tenant's name.
    pub tenant_name: String,
    /// Free label.
    pub name: String,
    /// SHA-256 of the whole secret key, hex.
    #[serde(skip)]
    pub secret_hash: String,
    /// Granted scopes.
    pub scopes: Vec<Scope>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When the key was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Chunk size settings stored with a knowledge base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkingStamp {
    /// Most tokens per chunk (8 up to the model's limit: 254 for the default).
    pub max_tokens: u32,
    /// Tokens repeated between neighbouring chunks (at most half a chunk; more is cut to that).
    pub overlap_tokens: u32,
}

/// A knowledge base about to be created.
#[derive(Debug, Clone)]
pub struct NewKb {
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique within the tenant.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Id of the embedding model its vectors come from.
    pub embedding_model: String,
    /// Folder of that model when it is not the server's default.
    pub model_source: Option<String>,
    /// Vector length of that model.
    pub dimension: u32,
    /// How its documents are chunked.
    pub chunking: ChunkingStamp,
    /// Its own rerank stage.
    pub rerank: Option<KbRerank>,
}

/// A knowledge base's own rerank stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KbRerank {
    /// Gateway route (or `provider/model`) of the reranker.
    pub model: String,
    /// Candidates handed to it (`search.rerank_candidates` when absent).
    pub candidates: Option<u32>,
}

impl KbRerank {
    /// From the two columns that hold it.
    pub fn from_columns(model: Option<String>, candidates: Option<i64>) -> Option<Self> {
        model.map(|model| Self {
            model,
            candidates: candidates.map(|c| c as u32),
        })
    }
}

/// A knowledge base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kb {
    /// Stable id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique within the tenant.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Id of the embedding model its vectors come from.
    pub embedding_model: String,
    /// Vector length.
    pub dimension: u32,
    /// How its documents are chunked.
    pub chunking: ChunkingStamp,
    /// Bumped by every change to its searchable content.
    pub index_seq: u64,
    /// Index generation serving searches (a reindex builds the next one beside it).
    pub generation: u64,
    /// Local folder the embedding model was loaded from, when not the server's default.
    pub model_source: Option<String>,
    /// Its own rerank stage (else `search.rerank`).
    pub rerank: Option<KbRerank>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// Counters of one knowledge base.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KbStats {
    /// Documents waiting.
    pub queued: u64,
    /// Documents being processed.
    pub processing: u64,
    /// Searchable documents.
    pub ready: u64,
    /// Documents that could not be ingested.
    pub failed: u64,
    /// Searchable chunks.
    pub chunks: u64,
    /// Bytes of searchable documents.
    pub bytes: u64,
    /// Ready documents whose chunks were made with another model or chunking than the
    /// knowledge base's (a reindex brings them up to date).
    pub stale: u64,
}

/// Where a document is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentStatus {
    /// Accepted, waiting for a worker.
    Queued,
    /// Being extracted, chunked, embedded or indexed.
    Processing,
    /// Searchable.
    Ready,
    /// Could not be ingested; `error` says why.
    Failed,
}

impl DocumentStatus {
    /// Lower-case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Queued => "queued",
            DocumentStatus::Processing => "processing",
            DocumentStatus::Ready => "ready",
            DocumentStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(DocumentStatus::Queued),
            "processing" => Some(DocumentStatus::Processing),
            "ready" => Some(DocumentStatus::Ready),
            "failed" => Some(DocumentStatus::Failed),
            _ => None,
        }
    }
}

/// An upload about to be registered.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// Knowledge base.
    pub kb_id: String,
    /// The job it arrived with.
    pub job_id: String,
    /// Name given by the client (display only; never a path).
    pub name: String,
    /// Detected media type.
    pub media_type: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex (also the key of the stored bytes).
    pub sha256: String,
    /// Client metadata (a JSON object).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Password of an encrypted PDF, if the client gave one.
    pub password: Option<String>,
}

/// How a document's text was obtained.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Extraction {
    /// What read the text (`pdf-extract`, `pdftotext+tesseract`, `docx`…).
    pub engine: String,
    /// Pages recognised by OCR and Tesseract's mean word confidence on each (0–100).
    pub ocr_pages: Vec<OcrPageRecord>,
}

/// A page whose text OCR produced.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OcrPageRecord {
    /// 1-based page.
    pub page: u32,
    /// Mean word confidence, 0–100.
    pub confidence: f32,
}

/// A document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Stable id.
    pub id: String,
    /// Knowledge base.
    pub kb_id: String,
    /// The job it arrived with.
    pub job_id: String,
    /// Name given by the client.
    pub name: String,
    /// Detected media type.
    pub media_type: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Where it is in its life.
    pub status: DocumentStatus,
    /// Stable error code when failed.
    pub error_code: Option<String>,
    /// Human-readable reason when failed.
    pub error: Option<String>,
    /// Client metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Chunks once ready.
    pub chunk_count: u64,
    /// Pages (PDF) once ready.
    pub pages: Option<u32>,
    /// Problems that did not stop ingestion.
    pub warnings: Vec<String>,
    /// The document this one replaces when published.
    pub replaces: Option<String>,
    /// Embedding model of its chunks (once ready).
    pub embedding_model: Option<String>,
    /// Chunking of its chunks (once ready).
    pub chunking: Option<ChunkingStamp>,
    /// How its text was obtained (once ready).
    pub extraction: Option<Extraction>,
    /// The password it was uploaded with (encrypted PDFs). Internal: never served.
    pub password: Option<String>,
    /// Upload time.
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: DateTime<Utc>,
}

impl Document {
    /// Metadata as the index's string pairs (strings as is, other scalars as JSON text;
    /// arrays and objects are not filterable and are left out).
    pub fn filter_metadata(&self) -> BTreeMap<String, String> {
        flatten_metadata(&self.metadata)
    }
}

/// String pairs for index filters from a JSON metadata object.
pub fn flatten_metadata(
    metadata: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<String, String> {
    metadata
        .iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k.clone(), s.clone())),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                Some((k.clone(), v.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// Result of [`super::DocumentStore::insert_document`].
#[derive(Debug, Clone)]
pub struct Inserted {
    /// The new or existing document.
    pub document: Document,
    /// False when identical bytes were already in the knowledge base.
    pub created: bool,
}

/// Which documents to list.
#[derive(Debug, Clone, Default)]
pub struct DocumentQuery {
    /// Only this status.
    pub status: Option<DocumentStatus>,
    /// Only ready documents made with another model or chunking than the KB's.
    pub stale: bool,
    /// Skip this many.
    pub offset: u64,
    /// At most this many.
    pub limit: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The page.
    pub items: Vec<T>,
    /// Matches in all pages.
    pub total: u64,
}

/// A chunk with its vector, about to be stored.
#[derive(Debug, Clone)]
pub struct ChunkRow<'a> {
    /// Position in its document.
    pub ordinal: u32,
    /// Byte range in the extracted text.
    pub start: u64,
    /// End of that range.
    pub end: u64,
    /// The text.
    pub text: &'a str,
    /// Tokens by the embedder's tokenizer.
    pub tokens: u32,
    /// First and last page.
    pub pages: Option<(u32, u32)>,
    /// Enclosing headings, outermost first.
    pub heading_path: &'a [String],
    /// SHA-256 of the text, hex.
    pub hash: &'a str,
    /// The table header the chunk repeats (empty when none).
    pub context: &'a str,
    /// Mean OCR confidence of its pages, when OCR'd.
    pub ocr_confidence: Option<f32>,
    /// Embedding.
    pub vector: &'a [f32],
}

/// A finished document, ready to become searchable.
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    /// The document.
    pub document_id: &'a str,
    /// Model the vectors come from.
    pub embedding_model: &'a str,
    /// Chunking the chunks were made with.
    pub chunking: ChunkingStamp,
    /// Pages (PDF).
    pub pages: Option<u32>,
    /// Extraction warnings.
    pub warnings: &'a [String],
    /// How the text was obtained.
    pub extraction: &'a Extraction,
    /// Its chunks in order.
    pub chunks: Vec<ChunkRow<'a>>,
}

/// Result of [`super::DocumentStore::publish`].
#[derive(Debug, Clone)]
pub struct Published {
    /// Ids of the new chunks, in order.
    pub chunk_ids: Vec<u64>,
    /// The replaced document and its chunk ids, if one was removed.
    pub replaced: Option<(String, Vec<u64>)>,
    /// The knowledge base's index sequence after the change.
    pub index_seq: u64,
    /// Content hashes no longer referenced by any document.
    pub orphaned: Vec<String>,
}

/// Result of [`super::DocumentStore::delete_document`].
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The document's chunk ids.
    pub chunk_ids: Vec<u64>,
    /// The knowledge base's index sequence after the change.
    pub index_seq: u64,
    /// Content hashes no longer referenced by any document.
    pub orphaned: Vec<String>,
}

/// One section of a document in a knowledge base's serving index: its heading path and how
/// many chunks it has.
#[derive(Debug, Clone, PartialEq)]
pub struct Heading {
    /// The document's name.
    pub document_name: String,
    /// Headings from the outermost down (never empty).
    pub path: Vec<String>,
    /// Chunks under it.
    pub chunks: u64,
}

/// A stored chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    /// Stable id (also the index's point id).
    pub id: u64,
    /// Its document.
    pub document_id: String,
    /// Its document's name.
    pub document_name: String,
    /// Position in the document.
    pub ordinal: u32,
    /// Byte range in the extracted text.
    pub start: u64,
    /// End of that range.
    pub end: u64,
    /// The text.
    pub text: String,
    /// Tokens.
    pub tokens: u32,
    /// First page (PDF).
    pub page_start: Option<u32>,
    /// Last page (PDF).
    pub page_end: Option<u32>,
    /// Enclosing headings, outermost first.
    pub heading_path: Vec<String>,
    /// SHA-256 of the text.
    pub hash: String,
    /// The table header it repeats (empty when none): indexed with the text, not part of it.
    pub context: String,
    /// Mean OCR confidence of its pages, when OCR'd.
    pub ocr_confidence: Option<f32>,
}

/// A chunk as an index needs it.
#[derive(Debug, Clone)]
pub struct StoredPoint {
    /// Chunk id.
    pub chunk_id: u64,
    /// Its document.
    pub document_id: String,
    /// Text for BM25 (the context, if any, then the chunk's text).
    pub text: String,
    /// Embedding.
    pub vector: Vec<f32>,
    /// The document's filterable metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A document that failed inside a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// The document.
    pub document_id: String,
    /// Its name.
    pub name: String,
    /// Stable error code.
    pub code: String,
    /// Reason.
    pub message: String,
}

/// Progress of an ingest job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Stable id.
    pub id: String,
    /// Knowledge base.
    pub kb_id: String,
    /// Documents in the job.
    pub total: u64,
    /// Documents waiting.
    pub queued: u64,
    /// Documents in work.
    pub processing: u64,
    /// Documents searchable.
    pub ready: u64,
    /// Documents failed.
    pub failed: u64,
    /// Chunks embedded and stored so far.
    pub chunks_embedded: u64,
    /// Every failure.
    pub errors: Vec<JobError>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl Job {
    /// Documents that reached an end state.
    pub fn done(&self) -> u64 {
        self.ready + self.failed
    }

    /// Whether every document reached an end state.
    pub fn finished(&self) -> bool {
        self.queued == 0 && self.processing == 0
    }
}

/// What a knowledge base switches to at the end of a reindex.
#[derive(Debug, Clone)]
pub struct GenerationSwitch {
    /// The generation whose chunks become the serving ones.
    pub generation: u64,
    /// Its embedding model id.
    pub embedding_model: String,
    /// Folder the model is loaded from (`None` for the server's default).
    pub model_source: Option<String>,
    /// Vector length.
    pub dimension: u32,
    /// Its chunking.
    pub chunking: ChunkingStamp,
}

/// A connection pool's use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections open (idle or lent out).
    pub open: u32,
    /// Open connections waiting to be lent.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}
