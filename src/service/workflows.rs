//! The service's workflow use cases: inspecting, cancelling, retrying and signalling runs,
//! starting reindexes, and managing folder sources. Every call is checked against the
//! caller's tenant (another tenant's runs are "not found").

use chrono::Utc;
use serde_json::Value;

use super::reindex::ReindexInput;
use super::sources::start_sync;
use super::{Principal, Result, Service, ServiceError, WorkflowKind};
use crate::store::{
    ChunkingStamp, NewWorkflow, Page, Scope, Source, StepRecord, WorkflowQuery, WorkflowRecord,
    WorkflowStatus,
};
use crate::workflow::schedule::Schedule;

/// A folder source with the state of its last sync.
#[derive(Debug, Clone)]
pub struct SourceView {
    /// The source.
    pub source: Source,
    /// Its last sync run, while the run is kept.
    pub last_sync: Option<WorkflowRecord>,
}

/// A run with its steps.
#[derive(Debug, Clone)]
pub struct WorkflowView {
    /// The run.
    pub workflow: WorkflowRecord,
    /// Its steps in order (attempts, errors, timings).
    pub steps: Vec<StepRecord>,
}

/// What a reindex switches to.
#[derive(Debug, Clone, Default)]
pub struct ReindexRequest {
    /// Model (default model's name or id, a name from `[embed.models]`, or an absolute
    /// folder); the current one when absent.
    pub embedding_model: Option<String>,
    /// Chunking; the current one when absent.
    pub chunking: Option<ChunkingStamp>,
    /// Wait for an `approve` event before switching.
    pub approve_swap: bool,
    /// Same key → the same run.
    pub idempotency_key: Option<String>,
}

impl Service {
    /// Full rights over a tenant, for the service's own background work.
    pub(super) fn system_principal(&self, tenant_id: &str) -> Principal {
        Principal {
            tenant_id: tenant_id.to_owned(),
            key_id: None,
            scopes: vec![Scope::Read, Scope::Write, Scope::Admin],
        }
    }

    fn own_workflow(&self, p: &Principal, id: &str) -> Result<WorkflowRecord> {
        match self.core.store.workflow(id) {
            Ok(wf) if wf.tenant_id == p.tenant_id => Ok(wf),
            Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => Err(ServiceError::NotFound {
                kind: "workflow",
                id: id.to_owned(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A run with its steps.
    pub fn workflow(&self, p: &Principal, id: &str) -> Result<WorkflowView> {
        p.require(Scope::Read)?;
        let workflow = self.own_workflow(p, id)?;
        let steps = self.core.store.steps(id)?;
        Ok(WorkflowView { workflow, steps })
    }

    /// A page of the caller's runs, newest first.
    pub fn list_workflows(
        &self,
        p: &Principal,
        kind: Option<String>,
        status: Option<WorkflowStatus>,
        kb: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<WorkflowRecord>> {
        p.require(Scope::Read)?;
        let subject = match kb {
            Some(kb) => Some(self.kb(p, kb)?.id),
            None => None,
        };
        Ok(self.core.store.list_workflows(&WorkflowQuery {
            tenant_id: p.tenant_id.clone(),
            kind,
            status,
            subject,
            offset,
            limit,
        })?)
    }

    /// Asks a run to stop.
    pub fn cancel_workflow(&self, p: &Principal, id: &str) -> Result<WorkflowRecord> {
        p.require(Scope::Write)?;
        let wf = self.own_workflow(p, id)?;
        if wf.status.is_terminal() {
            return Err(ServiceError::Conflict {
                kind: "finished workflow",
                name: id.to_owned(),
            });
        }
        Ok(self.core.engine.cancel(id)?)
    }

    /// Runs a finished run again from its failed steps.
    pub fn retry_workflow(&self, p: &Principal, id: &str) -> Result<WorkflowRecord> {
        p.require(Scope::Write)?;
        let wf = self.own_workflow(p, id)?;
        let retryable = match wf.status {
            WorkflowStatus::Failed | WorkflowStatus::Cancelled => true,
            // A completed ingest may hold failed documents worth another try.
            WorkflowStatus::Completed => wf.kind == WorkflowKind::Ingest.as_str(),
            _ => false,
        };
        if !retryable {
            return Err(ServiceError::Conflict {
                kind: "workflow that is not failed or cancelled",
                name: id.to_owned(),
            });
        }
        if wf.kind == WorkflowKind::Ingest.as_str() {
            // Failed documents go back to the queue; their failed steps start over.
            let input: crate::ingest::pipeline::IngestInput =
                serde_json::from_value(wf.input.clone())?;
            for doc in input.documents {
                self.core.store.requeue_failed(&doc)?;
            }
        }
        Ok(self.core.engine.retry(id)?)
    }

    /// Sends an event (an approval...) to a run.
    pub fn send_workflow_event(
        &self,
        p: &Principal,
        id: &str,
        name: &str,
        payload: &Value,
    ) -> Result<()> {
        p.require(Scope::Write)?;
        self.own_workflow(p, id)?;
        if name.is_empty() || name.chars().count() > 64 {
            return Err(ServiceError::Invalid(
                "event names are 1-64 characters".into(),
            ));
        }
        Ok(self.core.engine.send_event(id, name, payload)?)
    }

    /// Changes of every run from now on (filter by id); check access with
    /// [`Service::workflow`] first.
    pub fn subscribe_workflows(&self) -> tokio::sync::broadcast::Receiver<crate::workflow::Event> {
        self.core.engine.subscribe()
    }

    /// Starts re-embedding and/or re-chunking a knowledge base into a new index generation.
    /// One reindex per knowledge base at a time.
    pub fn reindex(&self, p: &Principal, kb: &str, req: ReindexRequest) -> Result<WorkflowRecord> {
        p.require(Scope::Admin)?;
        let kb = self.kb(p, kb)?;
        let mut req = req;
        if let Some(c) = req.chunking {
            let embedder = match &req.embedding_model {
                Some(spec) => self.core.models.resolve(spec)?.embedder,
                None => self.core.models.for_kb(&kb)?,
            };
            req.chunking = Some(validate_chunking(c, embedder.as_ref())?);
        } else if let Some(spec) = &req.embedding_model {
            self.core.models.resolve(spec)?;
        }
        let active = self.core.store.list_workflows(&WorkflowQuery {
            tenant_id: p.tenant_id.clone(),
            kind: Some(WorkflowKind::Reindex.as_str().into()),
            subject: Some(kb.id.clone()),
            limit: 100,
            ..Default::default()
        })?;
        if let Some(running) = active.items.iter().find(|w| !w.status.is_terminal()) {
            if req.idempotency_key.is_none() || running.idempotency_key != req.idempotency_key {
                return Err(ServiceError::Conflict {
                    kind: "reindex of this knowledge base",
                    name: running.id.clone(),
                });
            }
        }
        let input = ReindexInput {
            kb_id: kb.id.clone(),
            embedding_model: req.embedding_model,
            chunking: req.chunking,
            approve_swap: req.approve_swap,
        };
        let (wf, _) = self.core.engine.create(NewWorkflow {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: p.tenant_id.clone(),
            kind: WorkflowKind::Reindex.as_str().into(),
            subject: Some(kb.id.clone()),
            idempotency_key: req.idempotency_key,
            input: serde_json::to_value(input)?,
        })?;
        Ok(wf)
    }

    /// Registers a folder synced into a knowledge base (now, then on `schedule`).
    pub fn add_source(
        &self,
        p: &Principal,
        kb: &str,
        path: &str,
        schedule: Option<String>,
    ) -> Result<(Source, String)> {
        p.require(Scope::Admin)?;
        let kb = self.kb(p, kb)?;
        let dir = std::path::Path::new(path);
        if !dir.is_absolute() {
            return Err(ServiceError::Invalid(
                "a source path must be absolute".into(),
            ));
        }
        let roots = &self.core.config.sources.allowed_roots;
        // Refused before the path is looked at: a caller learns nothing about the disk.
        if roots.is_empty() && self.core.demo.is_none() {
            return Err(ServiceError::Forbidden(
                "sources (set sources.allowed_roots to enable folder sources)",
            ));
        }
        let dir = dir.canonicalize().map_err(|_| ServiceError::NotFound {
            kind: "folder",
            id: path.to_owned(),
        })?;
        if !dir.is_dir() {
            return Err(ServiceError::Invalid(format!("{path} is not a directory")));
        }
        if !roots.is_empty()
            && !roots.iter().any(|r| {
                r.canonicalize()
                    .map(|r| dir.starts_with(r))
                    .unwrap_or(false)
            })
        {
            return Err(ServiceError::Invalid(format!(
                "{} is outside sources.allowed_roots",
                dir.display()
            )));
        }
        let parsed = schedule.as_deref().map(Schedule::parse).transpose()?;
        let now = Utc::now();
        let source = self.core.store.create_source(&Source {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: p.tenant_id.clone(),
            kb_id: kb.id.clone(),
            path: dir.display().to_string(),
            next_sync_at: parsed.as_ref().and_then(|s| s.next_after(now)),
            schedule,
            last_sync_at: None,
            last_workflow_id: None,
            created_at: now,
        })?;
        let wf = self.sync_source(p, &kb.id, &source.id)?;
        let source = self.core.store.get_source(&kb.id, &source.id)?;
        Ok((source, wf))
    }

    /// A knowledge base's sources.
    pub fn list_sources(&self, p: &Principal, kb: &str) -> Result<Vec<SourceView>> {
        p.require(Scope::Read)?;
        let kb = self.kb(p, kb)?;
        self.core
            .store
            .list_sources(&kb.id)?
            .into_iter()
            .map(|source| {
                let last_sync = match &source.last_workflow_id {
                    Some(id) => match self.core.store.workflow(id) {
                        Ok(wf) => Some(wf),
                        // Runs are pruned after their retention; the source stays.
                        Err(crate::store::StoreError::NotFound { .. }) => None,
                        Err(e) => return Err(e.into()),
                    },
                    None => None,
                };
                Ok(SourceView { source, last_sync })
            })
            .collect()
    }

    /// Forgets a source (its documents stay).
    pub fn delete_source(&self, p: &Principal, kb: &str, id: &str) -> Result<()> {
        p.require(Scope::Admin)?;
        let kb = self.kb(p, kb)?;
        Ok(self.core.store.delete_source(&kb.id, id)?)
    }

    /// Syncs a source now; returns the sync run's id.
    pub fn sync_source(&self, p: &Principal, kb: &str, id: &str) -> Result<String> {
        p.require(Scope::Write)?;
        let kb = self.kb(p, kb)?;
        let source = self.core.store.get_source(&kb.id, id)?;
        let wf = start_sync(&self.core, &source, None)?;
        self.core
            .store
            .mark_source_synced(&source.id, &wf, Utc::now(), source.next_sync_at)?;
        Ok(wf)
    }
}

/// Checks a chunking against a model's limits; the overlap is at most half a chunk (a larger
/// one is cut to that, and the stored chunking says so).
pub(super) fn validate_chunking(
    c: ChunkingStamp,
    embedder: &dyn crate::embed::Embedder,
) -> Result<ChunkingStamp> {
    let limit = embedder.max_tokens() - embedder.tokenizer().special_tokens();
    if c.max_tokens < 8 || c.max_tokens as usize > limit {
        return Err(ServiceError::Invalid(format!(
            "chunking.max_tokens must be within 8..={limit}"
        )));
    }
    Ok(ChunkingStamp {
        max_tokens: c.max_tokens,
        overlap_tokens: c.overlap_tokens.min(c.max_tokens / 2),
    })
}
