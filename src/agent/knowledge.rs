//! What an agent needs of the knowledge bases, as a narrow port: the caller's knowledge bases,
//! a search, and embeddings with a knowledge base's model.
//!
//! The agent runtime depends on this trait only; the composition root (`crate::app`)
//! implements it over the knowledge-base service. It must never name the service: that would
//! bring back the agent → service → config → agent loop. Its methods block (storage, models);
//! the runtime calls them on blocking threads.

use super::Result;
use crate::index::SearchMode;
use crate::principal::Principal;
use crate::store::ChunkRecord;

/// A knowledge base the caller may search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnowledgeBase {
    /// Its id.
    pub id: String,
    /// Its name (unique within the tenant).
    pub name: String,
}

/// One passage found.
#[derive(Debug, Clone)]
pub struct Passage {
    /// The knowledge base it was found in (id).
    pub kb_id: String,
    /// Score of the search mode (cosine, BM25 or fused).
    pub score: f32,
    /// Cosine similarity to the query (dense and hybrid searches).
    pub similarity: Option<f32>,
    /// The chunk.
    pub chunk: ChunkRecord,
}

/// The knowledge bases as an agent sees them. Every call is checked against `p` by the
/// implementation (tenant and scopes); its failures are its own errors, carried as
/// [`super::AgentError::Knowledge`].
pub trait Knowledge: Send + Sync + 'static {
    /// The caller's knowledge bases.
    fn knowledge_bases(&self, p: &Principal) -> Result<Vec<KnowledgeBase>>;

    /// Up to `top_k` passages of `kb` (id or name) for `query`.
    fn search(
        &self,
        p: &Principal,
        kb: &str,
        query: &str,
        top_k: usize,
        mode: SearchMode,
    ) -> Result<Vec<Passage>>;

    /// Embeddings of `texts` with `kb`'s model (one vector per text, normalised).
    fn embed(&self, p: &Principal, kb: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}
