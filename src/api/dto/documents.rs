//! Documents, their chunks, search hits, ingest jobs and upload receipts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::kbs::ChunkingStamp;

/// Where a document is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    #[schema(value_type = Object)]
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
    /// What read its text (once ready): `pdf-extract`, `pdftotext`, `tesseract` (`+`-joined
    /// when its pages differ), `docx`, `pptx`, `calamine`, `odt`, `epub`, `rtf`, `csv`,
    /// `markdown`, `html`, `text`.
    pub engine: Option<String>,
    /// Whether any of its text was recognised by OCR.
    pub ocr: bool,
    /// The pages OCR recognised, with Tesseract's mean word confidence (0–100).
    pub ocr_pages: Vec<OcrPage>,
    /// Upload time.
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: DateTime<Utc>,
}

/// A page whose text OCR produced.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct OcrPage {
    /// 1-based page (1 for a one-page image).
    pub page: u32,
    /// Mean word confidence, 0–100.
    pub confidence: f32,
}

/// A stored chunk.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChunkRecord {
    /// Stable id (also the index's point id).
    #[serde(rename = "chunk_id")]
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
    /// The header row (and caption) of the table whose rows the chunk holds, repeated so the
    /// rows can be read; not part of `text` (which is exactly the cited span). Absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_header: Option<String>,
    /// Whether its text was recognised by OCR.
    pub ocr: bool,
    /// Mean OCR word confidence (0–100) of its pages, when OCR'd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocr_confidence: Option<f32>,
}

/// A document that failed inside a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// What happened to one uploaded file.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Position of the file in the request, from 0.
    pub index: usize,
    /// The document (new, or the existing one with identical bytes).
    pub document_id: String,
    /// Its name.
    pub name: String,
    /// Its status now.
    pub status: DocumentStatus,
    /// True when identical bytes were already in the knowledge base (nothing re-embedded).
    pub existing: bool,
    /// The document this one replaces once ready.
    pub replaces: Option<String>,
}

/// Answer to an upload.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    /// The job tracking the new documents.
    pub job_id: String,
    /// One entry per admitted file (queued, or `existing` for identical bytes), in request order.
    pub documents: Vec<Accepted>,
    /// One entry per refused file, in request order.
    pub refused: Vec<crate::service::Refused>,
}

impl From<crate::store::DocumentStatus> for DocumentStatus {
    fn from(r: crate::store::DocumentStatus) -> Self {
        match r {
            crate::store::DocumentStatus::Queued => DocumentStatus::Queued,
            crate::store::DocumentStatus::Processing => DocumentStatus::Processing,
            crate::store::DocumentStatus::Ready => DocumentStatus::Ready,
            crate::store::DocumentStatus::Failed => DocumentStatus::Failed,
        }
    }
}

impl From<DocumentStatus> for crate::store::DocumentStatus {
    fn from(r: DocumentStatus) -> Self {
        match r {
            DocumentStatus::Queued => crate::store::DocumentStatus::Queued,
            DocumentStatus::Processing => crate::store::DocumentStatus::Processing,
            DocumentStatus::Ready => crate::store::DocumentStatus::Ready,
            DocumentStatus::Failed => crate::store::DocumentStatus::Failed,
        }
    }
}

impl From<crate::store::Document> for Document {
    fn from(r: crate::store::Document) -> Self {
        Self {
            id: r.id,
            kb_id: r.kb_id,
            job_id: r.job_id,
            name: r.name,
            media_type: r.media_type,
            size: r.size,
            sha256: r.sha256,
            status: r.status.into(),
            error_code: r.error_code,
            error: r.error,
            metadata: r.metadata,
            chunk_count: r.chunk_count,
            pages: r.pages,
            warnings: r.warnings,
            replaces: r.replaces,
            embedding_model: r.embedding_model,
            chunking: r.chunking.map(Into::into),
            engine: r.extraction.as_ref().map(|e| e.engine.clone()),
            ocr: r
                .extraction
                .as_ref()
                .is_some_and(|e| !e.ocr_pages.is_empty()),
            ocr_pages: r
                .extraction
                .iter()
                .flat_map(|e| &e.ocr_pages)
                .map(|p| OcrPage {
                    page: p.page,
                    confidence: p.confidence,
                })
                .collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<crate::store::ChunkRecord> for ChunkRecord {
    fn from(r: crate::store::ChunkRecord) -> Self {
        Self {
            id: r.id,
            document_id: r.document_id,
            document_name: r.document_name,
            ordinal: r.ordinal,
            start: r.start,
            end: r.end,
            text: r.text,
            tokens: r.tokens,
            page_start: r.page_start,
            page_end: r.page_end,
            heading_path: r.heading_path,
            hash: r.hash,
            table_header: (!r.context.is_empty()).then_some(r.context),
            ocr: r.ocr_confidence.is_some(),
            ocr_confidence: r.ocr_confidence,
        }
    }
}

impl From<crate::store::JobError> for JobError {
    fn from(r: crate::store::JobError) -> Self {
        Self {
            document_id: r.document_id,
            name: r.name,
            code: r.code,
            message: r.message,
        }
    }
}

impl From<crate::store::Job> for Job {
    fn from(r: crate::store::Job) -> Self {
        Self {
            id: r.id,
            kb_id: r.kb_id,
            total: r.total,
            queued: r.queued,
            processing: r.processing,
            ready: r.ready,
            failed: r.failed,
            chunks_embedded: r.chunks_embedded,
            errors: r.errors.into_iter().map(Into::into).collect(),
            created_at: r.created_at,
        }
    }
}

impl From<crate::service::Accepted> for Accepted {
    fn from(a: crate::service::Accepted) -> Self {
        Self {
            index: a.index,
            document_id: a.document_id,
            name: a.name,
            status: a.status.into(),
            existing: a.existing,
            replaces: a.replaces,
        }
    }
}

impl From<crate::service::Receipt> for Receipt {
    fn from(r: crate::service::Receipt) -> Self {
        Self {
            job_id: r.job_id,
            documents: r.documents.into_iter().map(Into::into).collect(),
            refused: r.refused,
        }
    }
}

/// One search result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// Score of the mode (cosine for dense, BM25, or fused RRF).
    pub score: f32,
    /// Cosine similarity of the chunk to the query (dense and hybrid searches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    /// The reranker's relevance (reranked searches; they are in its order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
    /// The chunk.
    #[serde(flatten)]
    pub chunk: ChunkRecord,
}

impl From<crate::service::SearchHit> for SearchHit {
    fn from(h: crate::service::SearchHit) -> Self {
        Self {
            score: h.score,
            similarity: h.similarity,
            rerank_score: h.rerank_score,
            chunk: h.chunk.into(),
        }
    }
}
