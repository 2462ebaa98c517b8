//! Knowledge bases, their chunking and counters, API key scopes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an API key may do (each scope includes the ones before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Chunk size settings stored with a knowledge base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkingStamp {
    /// Most tokens per chunk (8 up to the model's limit: 254 for the default).
    #[schema(minimum = 8, maximum = 254)]
    pub max_tokens: u32,
    /// Tokens repeated between neighbouring chunks (at most half a chunk; more is cut to that).
    pub overlap_tokens: u32,
}

/// A knowledge base.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// Its own rerank stage (searches that do not say otherwise use it; none: the configured
    /// `search.rerank`, if any).
    pub rerank: Option<KbRerank>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A knowledge base's rerank stage.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KbRerank {
    /// Gateway route (or `provider/model`) of a cross-encoder or rerank API.
    #[schema(pattern = r"\S")]
    pub model: String,
    /// Candidates handed to it (default `search.rerank_candidates`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub candidates: Option<u32>,
}

impl From<crate::store::KbRerank> for KbRerank {
    fn from(r: crate::store::KbRerank) -> Self {
        Self {
            model: r.model,
            candidates: r.candidates,
        }
    }
}

impl From<KbRerank> for crate::store::KbRerank {
    fn from(r: KbRerank) -> Self {
        Self {
            model: r.model,
            candidates: r.candidates,
        }
    }
}

/// Counters of one knowledge base.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// A knowledge base with its counters.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KbView {
    /// The knowledge base.
    #[serde(flatten)]
    pub kb: Kb,
    /// Its counters.
    pub stats: KbStats,
}

impl From<crate::store::ChunkingStamp> for ChunkingStamp {
    fn from(r: crate::store::ChunkingStamp) -> Self {
        Self {
            max_tokens: r.max_tokens,
            overlap_tokens: r.overlap_tokens,
        }
    }
}

impl From<ChunkingStamp> for crate::store::ChunkingStamp {
    fn from(r: ChunkingStamp) -> Self {
        Self {
            max_tokens: r.max_tokens,
            overlap_tokens: r.overlap_tokens,
        }
    }
}

impl From<crate::store::Kb> for Kb {
    fn from(r: crate::store::Kb) -> Self {
        Self {
            id: r.id,
            tenant_id: r.tenant_id,
            name: r.name,
            description: r.description,
            embedding_model: r.embedding_model,
            dimension: r.dimension,
            chunking: r.chunking.into(),
            index_seq: r.index_seq,
            generation: r.generation,
            model_source: r.model_source,
            rerank: r.rerank.map(Into::into),
            created_at: r.created_at,
        }
    }
}

impl From<crate::store::KbStats> for KbStats {
    fn from(r: crate::store::KbStats) -> Self {
        Self {
            queued: r.queued,
            processing: r.processing,
            ready: r.ready,
            failed: r.failed,
            chunks: r.chunks,
            bytes: r.bytes,
            stale: r.stale,
        }
    }
}

impl From<crate::store::Scope> for Scope {
    fn from(r: crate::store::Scope) -> Self {
        match r {
            crate::store::Scope::Read => Scope::Read,
            crate::store::Scope::Infer => Scope::Infer,
            crate::store::Scope::Write => Scope::Write,
            crate::store::Scope::Admin => Scope::Admin,
        }
    }
}

impl From<Scope> for crate::store::Scope {
    fn from(r: Scope) -> Self {
        match r {
            Scope::Read => crate::store::Scope::Read,
            Scope::Infer => crate::store::Scope::Infer,
            Scope::Write => crate::store::Scope::Write,
            Scope::Admin => crate::store::Scope::Admin,
        }
    }
}

impl From<crate::service::KbView> for KbView {
    fn from(v: crate::service::KbView) -> Self {
        Self {
            kb: v.kb.into(),
            stats: v.stats.into(),
        }
    }
}
