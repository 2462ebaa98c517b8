//! The composition root: the one place that puts the parts together.
//!
//! Owns the wiring between modules that must not know each other — today the agent runtime
//! and the knowledge-base service, joined here through the agent's [`Knowledge`] port. It must
//! never hold logic of its own beyond translating between ports: a use case belongs to its
//! service, a rule to its engine.

use std::sync::Arc;

use crate::agent::{AgentError, Agents, Knowledge, KnowledgeBase, Passage};
use crate::config::Config;
use crate::embed::Embedder;
use crate::error::Foreign;
use crate::index::SearchMode;
use crate::ingest::isolate::Isolation;
use crate::principal::Principal;
use crate::service::{SearchParams, Service, ServiceError};
use crate::supervisor::Supervisor;

/// The agent runtime over `service`: its knowledge bases, its gateway, its store and the
/// `[agents]` configuration. Start it with [`Agents::start`] inside a tokio runtime.
pub fn agents(service: &Service) -> Agents {
    Agents::new(
        Arc::new(ServiceKnowledge(service.clone())),
        service.gateway().clone(),
        service.agent_store(),
        service.config().agents.clone(),
        service.supervisor().clone(),
    )
}

/// Opens the knowledge-base service on `config` with a new [`Supervisor`] owning its
/// background work (stopped by [`Service::shutdown`] and the supervisor's own shutdown).
pub fn open(
    config: Config,
    embedder: Arc<dyn Embedder>,
    isolation: Isolation,
) -> Result<Service, ServiceError> {
    Service::open(config, embedder, isolation, Supervisor::new())
}

/// The knowledge-base service seen through the agent's port. Its errors pass through whole
/// (kind, code, details), so an agent's caller sees exactly what a direct caller would.
struct ServiceKnowledge(Service);

fn foreign(e: ServiceError) -> AgentError {
    AgentError::Knowledge(Foreign(Box::new(e)))
}

impl Knowledge for ServiceKnowledge {
    fn knowledge_bases(&self, p: &Principal) -> Result<Vec<KnowledgeBase>, AgentError> {
        Ok(self
            .0
            .list_kbs(p)
            .map_err(foreign)?
            .into_iter()
            .map(|v| KnowledgeBase {
                id: v.kb.id,
                name: v.kb.name,
            })
            .collect())
    }

    fn search(
        &self,
        p: &Principal,
        kb: &str,
        query: &str,
        top_k: usize,
        mode: SearchMode,
    ) -> Result<Vec<Passage>, AgentError> {
        let params = SearchParams {
            query: query.to_owned(),
            top_k: Some(top_k),
            mode,
            ..SearchParams::default()
        };
        let (kb_id, hits) = self.0.search(p, kb, &params).map_err(foreign)?;
        Ok(hits
            .into_iter()
            .map(|h| Passage {
                kb_id: kb_id.clone(),
                score: h.score,
                similarity: h.similarity,
                chunk: h.chunk,
            })
            .collect())
    }

    fn embed(&self, p: &Principal, kb: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>, AgentError> {
        self.0.embed_for_kb(p, kb, "agent", texts).map_err(foreign)
    }
}
