//! Knowledge bases: create, list, read, change (their rerank stage) and delete a tenant's
//! knowledge bases (deleting one drops its documents, chunks, index and the bytes no one else
//! references).

use crate::store::{ChunkingStamp, Kb, KbRerank, KbStats, NewKb, Scope, Section};

use super::{Principal, Result, Service, ServiceError};

/// Settings of a new knowledge base.
#[derive(Debug, Clone, Default)]
pub struct CreateKb {
    /// Unique within the tenant: letters, digits, `-`, `_`, `.`; not a UUID.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Model name or id; must be the loaded embedder.
    pub embedding_model: Option<String>,
    /// Chunking; the configured default when absent.
    pub chunking: Option<ChunkingStamp>,
    /// Its own rerank stage (else `search.rerank`).
    pub rerank: Option<KbRerank>,
}

/// A knowledge base with its counters.
#[derive(Debug, Clone)]
pub struct KbView {
    /// The knowledge base.
    pub kb: Kb,
    /// Its counters.
    pub stats: KbStats,
}

fn valid_kb_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && uuid::Uuid::parse_str(name).is_err()
}

impl Service {
    pub(super) fn kb(&self, p: &Principal, kb: &str) -> Result<Kb> {
        Ok(self.core.store.get_kb(&p.tenant_id, kb)?)
    }

    /// Creates a knowledge base.
    pub fn create_kb(&self, p: &Principal, req: CreateKb) -> Result<KbView> {
        p.require(Scope::Write)?;
        if !valid_kb_name(&req.name) {
            return Err(ServiceError::Invalid(format!(
                "knowledge base name `{}` must be 1-64 letters, digits, `-`, `_` or `.` (and not a UUID)",
                req.name
            )));
        }
        let (embedder, model_source) = match &req.embedding_model {
            Some(spec) => {
                let r = self.core.models.resolve(spec)?;
                (r.embedder, r.source)
            }
            None => (self.core.models.default_model().clone(), None),
        };
        let defaults = self.core.config.chunking;
        let chunking = req.chunking.unwrap_or(ChunkingStamp {
            max_tokens: defaults.max_tokens as u32,
            overlap_tokens: defaults.overlap_tokens as u32,
        });
        let chunking = super::workflows::validate_chunking(chunking, embedder.as_ref())?;
        if let Some(r) = &req.rerank {
            self.validate_rerank(&r.model, r.candidates.map(|c| c as usize))?;
        }
        let kb = self.core.store.create_kb(&NewKb {
            tenant_id: p.tenant_id.clone(),
            name: req.name,
            description: req.description,
            embedding_model: embedder.model_id().to_owned(),
            model_source,
            dimension: embedder.dimension() as u32,
            chunking,
            rerank: req.rerank,
        })?;
        self.core.indexes.open(&kb, self.core.store.as_ref())?;
        Ok(KbView {
            kb,
            stats: KbStats::default(),
        })
    }

    /// The caller's knowledge bases.
    pub fn list_kbs(&self, p: &Principal) -> Result<Vec<KbView>> {
        p.require(Scope::Read)?;
        self.core
            .store
            .list_kbs(&p.tenant_id)?
            .into_iter()
            .map(|kb| {
                let stats = self.core.store.kb_stats(&kb.id)?;
                Ok(KbView { kb, stats })
            })
            .collect()
    }

    /// Ids of the caller's knowledge bases (no counters: cheap enough for every chat turn).
    pub fn kb_ids(&self, p: &Principal) -> Result<Vec<String>> {
        p.require(Scope::Read)?;
        Ok(self
            .core
            .store
            .list_kbs(&p.tenant_id)?
            .into_iter()
            .map(|kb| kb.id)
            .collect())
    }

    /// One knowledge base by id or name.
    pub fn get_kb(&self, p: &Principal, kb: &str) -> Result<KbView> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        let stats = self.core.store.kb_stats(&kb.id)?;
        Ok(KbView { kb, stats })
    }

    /// Sets (or, with `None`, clears) a knowledge base's own rerank stage.
    pub fn set_kb_rerank(
        &self,
        p: &Principal,
        kb: &str,
        rerank: Option<KbRerank>,
    ) -> Result<KbView> {
        p.require(Scope::Write)?;
        let kb = self.kb(p, kb)?;
        if let Some(r) = &rerank {
            self.validate_rerank(&r.model, r.candidates.map(|c| c as usize))?;
        }
        let kb = self.core.store.set_kb_rerank(&kb.id, rerank.as_ref())?;
        let stats = self.core.store.kb_stats(&kb.id)?;
        Ok(KbView { kb, stats })
    }

    /// A rerank stage names a model the gateway answers and a candidate count it takes.
    pub(super) fn validate_rerank(&self, model: &str, candidates: Option<usize>) -> Result<()> {
        if !self.core.gateway.knows_model(model) {
            return Err(ServiceError::Invalid(format!(
                "rerank: `{model}` is no gateway route, alias or provider/model"
            )));
        }
        let max = crate::gateway::MAX_RERANK_DOCUMENTS;
        if candidates.is_some_and(|n| n == 0 || n > max) {
            return Err(ServiceError::Invalid(format!(
                "rerank candidates must be within 1..={max}"
            )));
        }
        Ok(())
    }

    /// Deletes a knowledge base with everything in it.
    pub fn delete_kb(&self, p: &Principal, kb: &str) -> Result<()> {
        p.require(Scope::Admin)?;
        let kb = self.kb(p, kb)?;
        let index = self.core.indexes.get(&kb.id).ok();
        let _order = index.as_ref().map(|i| i.write_order());
        let orphaned = {
            let _blobs = self.core.store.enter(Section::Blobs)?;
            let orphaned = self.core.store.delete_kb(&kb.id)?;
            for sha in &orphaned {
                let _ = self.core.blobs.remove(sha);
            }
            orphaned
        };
        self.core.indexes.remove(&kb.id);
        tracing::info!(kb = %kb.name, blobs_removed = orphaned.len(), "knowledge base deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_names_are_restricted() {
        assert!(valid_kb_name("guide-v2.1_x"));
        assert!(!valid_kb_name("has space"));
        assert!(!valid_kb_name(""));
        assert!(!valid_kb_name(&uuid::Uuid::now_v7().to_string()));
    }
}
