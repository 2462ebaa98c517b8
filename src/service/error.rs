//! The service layer's error: every failure a caller can see, sorted into client mistakes and
//! service trouble. The HTTP mapping lives in `api` and nowhere else.

use serde_json::{Map, Value};

use crate::embed::EmbedError;
use crate::error::{Classify, ErrorKind};
use crate::index::IndexError;
use crate::store::StoreError;
use crate::workflow::WorkflowError;

/// Errors of the knowledge-base service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such resource for this tenant (another tenant's resources are reported the same way).
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// What was looked up.
        kind: &'static str,
        /// The id or name given.
        id: String,
    },
    /// A name is taken.
    #[error("{kind} `{name}` already exists")]
    Conflict {
        /// What collided.
        kind: &'static str,
        /// The taken name.
        name: String,
    },
    /// The request is well-formed but its content is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// An upload is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// An upload is of a type that cannot be ingested.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Every file of an upload was refused; each is listed with its reason.
    #[error("no file of the upload was admitted: {}", refused_summary(.0))]
    AllRefused(Vec<super::Refused>),
    /// Missing or unknown credentials.
    #[error("missing or invalid API key")]
    Unauthenticated,
    /// The key lacks a scope.
    #[error("this API key lacks the `{0}` scope")]
    Forbidden(&'static str),
    /// The ingest queue is full; retry after the given seconds.
    #[error("the ingest queue is full ({queued} documents waiting); retry later")]
    QueueFull {
        /// Documents waiting.
        queued: usize,
        /// Suggested wait, seconds.
        retry_after: u64,
    },
    /// A rate limit of the key or tenant is reached.
    #[error("the {}'s limit of {} {} a minute is reached; retry in {} s", .0.scope, .0.limit, match .0.unit { super::ratelimit::Unit::Requests => "requests", super::ratelimit::Unit::Tokens => "model tokens" }, .0.retry_after_secs)]
    RateLimited(super::ratelimit::Limited),
    /// The service is starting or stopping.
    #[error("the service is {0}")]
    Unavailable(&'static str),
    /// This replica's index of a knowledge base did not reach the sequence number a caller
    /// asked to read at (`min_seq`) in time.
    #[error("the index of knowledge base `{kb}` is at sequence {applied}, not yet {wanted}; retry shortly (another replica may already be there)")]
    IndexBehind {
        /// The knowledge base.
        kb: String,
        /// The sequence this replica's index reflects.
        applied: u64,
        /// The sequence asked for.
        wanted: u64,
    },
    /// Another process (a running server?) holds the data directory.
    #[error("the data directory {} is in use by another process (a running server? use --server URL)", .0.display())]
    Locked(std::path::PathBuf),
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
    /// An index failed.
    #[error(transparent)]
    Index(IndexError),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// A file or thread could not be made or written (`what` names it).
    #[error("{what}: {source}")]
    Io {
        /// The path or thing concerned.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A stored JSON document (a workflow's input) does not read back.
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The workflow engine failed (other than its storage).
    #[error(transparent)]
    Workflow(WorkflowError),
    /// An invariant of the service broke (a bug); the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Classify for ServiceError {
    fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::NotFound { .. } => ErrorKind::NotFound,
            ServiceError::Conflict { .. } => ErrorKind::Conflict,
            ServiceError::Invalid(_) => ErrorKind::Invalid,
            ServiceError::TooLarge(_) => ErrorKind::TooLarge,
            ServiceError::UnsupportedMediaType(_) => ErrorKind::UnsupportedMedia,
            ServiceError::AllRefused(_) => match self.code() {
                "payload_too_large" => ErrorKind::TooLarge,
                "unsupported_media_type" => ErrorKind::UnsupportedMedia,
                _ => ErrorKind::Invalid,
            },
            ServiceError::Unauthenticated => ErrorKind::Unauthenticated,
            ServiceError::Forbidden(_) => ErrorKind::Forbidden,
            ServiceError::QueueFull { .. } | ServiceError::RateLimited(_) => ErrorKind::RateLimited,
            ServiceError::Unavailable(_) | ServiceError::IndexBehind { .. } => {
                ErrorKind::Unavailable
            }
            ServiceError::Store(e) if e.is_retryable() => ErrorKind::Unavailable,
            ServiceError::Embed(EmbedError::Overloaded) => ErrorKind::Unavailable,
            ServiceError::Locked(_)
            | ServiceError::Store(_)
            | ServiceError::Index(_)
            | ServiceError::Embed(_)
            | ServiceError::Io { .. }
            | ServiceError::Json(_)
            | ServiceError::Workflow(_)
            | ServiceError::Internal(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ServiceError::NotFound { .. } => "not_found",
            ServiceError::Conflict { .. } => "conflict",
            ServiceError::Invalid(_) => "invalid_request",
            ServiceError::TooLarge(_) => "payload_too_large",
            ServiceError::UnsupportedMediaType(_) => "unsupported_media_type",
            // One reason shared by every file is the request's; mixed reasons are invalid input.
            ServiceError::AllRefused(r) => match r.first() {
                Some(first) if r.iter().all(|x| x.code == first.code) => {
                    match first.code.as_str() {
                        "payload_too_large" => "payload_too_large",
                        "unsupported_media_type" => "unsupported_media_type",
                        _ => "invalid_request",
                    }
                }
                _ => "invalid_request",
            },
            ServiceError::Unauthenticated => "unauthenticated",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::QueueFull { .. } => "queue_full",
            ServiceError::RateLimited(_) => "rate_limited",
            ServiceError::Unavailable(_) => "unavailable",
            ServiceError::IndexBehind { .. } => "index_behind",
            ServiceError::Locked(_) => "data_dir_locked",
            ServiceError::Store(e) if e.is_retryable() => "store_busy",
            ServiceError::Store(_) => "store_error",
            ServiceError::Index(_) => "index_error",
            ServiceError::Embed(EmbedError::Overloaded) => "embedder_overloaded",
            ServiceError::Embed(_) => "embedding_error",
            ServiceError::Io { .. } => "io_error",
            ServiceError::Json(_) => "stored_json_error",
            ServiceError::Workflow(_) => "workflow_error",
            ServiceError::Internal(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ServiceError::QueueFull { retry_after, .. } => Some(*retry_after),
            ServiceError::RateLimited(l) => Some(l.retry_after_secs),
            ServiceError::Unavailable(_) => Some(5),
            ServiceError::IndexBehind { .. } => Some(1),
            ServiceError::Embed(EmbedError::Overloaded) => Some(1),
            ServiceError::Store(e) if e.is_retryable() => Some(1),
            _ => None,
        }
    }

    fn rate_limit(&self) -> Option<(u64, u64, u64)> {
        match self {
            ServiceError::RateLimited(l) => Some((l.limit, 0, l.retry_after_secs)),
            _ => None,
        }
    }

    fn details(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        match self {
            ServiceError::AllRefused(refused) => {
                extra.insert(
                    "refused".into(),
                    serde_json::to_value(refused).unwrap_or_default(),
                );
            }
            ServiceError::RateLimited(l) => {
                extra.insert("limit".into(), l.limit.into());
                extra.insert("scope".into(), l.scope.into());
            }
            ServiceError::IndexBehind {
                applied, wanted, ..
            } => {
                extra.insert("index_seq".into(), (*applied).into());
                extra.insert("min_seq".into(), (*wanted).into());
            }
            _ => {}
        }
        extra
    }
}

impl ServiceError {
    /// A constructor for `map_err`: an I/O failure concerning `what` (a path, a thread).
    pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ServiceError {
        move |source| ServiceError::Io {
            what: what.to_string(),
            source,
        }
    }
}

impl From<WorkflowError> for ServiceError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::Store(s) => s.into(),
            other => ServiceError::Workflow(other),
        }
    }
}

impl From<IndexError> for ServiceError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::NotLoaded => ServiceError::Unavailable("still loading this knowledge base"),
            IndexError::Store(s) => s.into(),
            other => ServiceError::Index(other),
        }
    }
}

impl From<crate::workflow::schedule::InvalidSchedule> for ServiceError {
    fn from(e: crate::workflow::schedule::InvalidSchedule) -> Self {
        ServiceError::Invalid(e.0)
    }
}

impl From<crate::principal::Forbidden> for ServiceError {
    fn from(e: crate::principal::Forbidden) -> Self {
        ServiceError::Forbidden(e.0)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, id } => ServiceError::NotFound { kind, id },
            StoreError::Conflict { kind, name } => ServiceError::Conflict { kind, name },
            StoreError::Invalid(m) => ServiceError::Invalid(m),
            other => ServiceError::Store(other),
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

fn refused_summary(refused: &[super::Refused]) -> String {
    refused
        .iter()
        .map(|r| r.detail.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}
