//! From uploaded bytes to citeable chunks.
//!
//! Owns media-type detection ([`detect`]), text extraction ([`extract`]: text formats in
//! process; PDFs (two engines and OCR), images, Office files and e-books in an isolated child
//! process run by [`isolate`]) and token-aware, table-aware chunking ([`chunk`]).
//!
//! Must never embed, index or persist anything: it returns text and chunk boundaries, and every
//! failure is a per-document [`IngestError`], never a panic or a hang of the caller.

mod builder;
pub mod chunk;
mod csv;
pub mod detect;
pub mod extract;
mod extracted;
mod heading;
mod html;
pub mod isolate;
mod layout;
mod markdown;
pub mod ocr;
mod office;
pub mod pdf;
pub mod pipeline;
pub mod poppler;
mod rtf;
mod text;
mod tool;

pub use chunk::{Chunk, Chunker, ChunkingOptions};
pub use detect::MediaType;
pub use extract::{extract, ExtractOptions, Extracted, Heading, OcrPage, Table};

/// Why one document could not be turned into text. Each is final for that document's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The bytes are of a type we do not read (images, archives, other binaries).
    #[error("unsupported content: {0}")]
    Unsupported(String),
    /// The PDF is encrypted and no (or a wrong) password was supplied.
    #[error("the PDF is encrypted: supply its password to extract it")]
    Encrypted,
    /// The file is damaged or not what it claims to be.
    #[error("malformed {kind}: {detail}")]
    Malformed {
        /// What the file claims to be (`PDF`, `UTF-8 text`…).
        kind: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Extraction ran past its time bound and was stopped.
    #[error("extraction did not finish within {seconds} s and was stopped")]
    Timeout {
        /// The bound.
        seconds: u64,
    },
    /// Extraction needed more memory than allowed and was stopped.
    #[error("extraction exceeded its memory limit of {mib} MiB")]
    MemoryLimit {
        /// The bound.
        mib: u64,
    },
    /// The isolated extractor died without an answer.
    #[error("the extractor crashed: {0}")]
    Crashed(String),
    /// Extraction worked but found no text at all (for example a scanned PDF without OCR).
    #[error("no text could be extracted")]
    NoText,
    /// The extracted text is longer than the configured bound.
    #[error("the document holds {chars} characters of text; the limit is {limit} (ingest.max_extracted_chars)")]
    TooLong {
        /// Characters extracted.
        chars: usize,
        /// The bound.
        limit: usize,
    },
    /// The extractor process could not be started (a deployment problem, not the document's).
    #[error("could not run the extractor: {0}")]
    Worker(String),
}

impl IngestError {
    /// A short stable code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Unsupported(_) => "unsupported_media_type",
            IngestError::Encrypted => "encrypted",
            IngestError::Malformed { .. } => "malformed",
            IngestError::Timeout { .. } => "extraction_timeout",
            IngestError::MemoryLimit { .. } => "extraction_memory_limit",
            IngestError::Crashed(_) => "extractor_crashed",
            IngestError::NoText => "no_text",
            IngestError::TooLong { .. } => "too_long",
            IngestError::Worker(_) => "extractor_unavailable",
        }
    }

    /// Whether trying the same bytes again could succeed (only a deployment problem can).
    pub fn is_retryable(&self) -> bool {
        matches!(self, IngestError::Worker(_))
    }
}
