//! The `ingest` workflow type: the service's side of the [pipeline](crate::ingest::pipeline)
//! — it supplies the pipeline's [`Host`] (store, bytes, catalog, models, accounting) and
//! registers the run with the workflow engine.

use std::sync::{Arc, Weak};
use std::time::Instant;

use serde_json::Value;

use super::{Core, ServiceError};
use crate::embed::Embedder;
use crate::error::Classify;
use crate::index::Catalog;
use crate::ingest::isolate::Isolation;
use crate::ingest::pipeline::{cancel_ingest, run_ingest, Host, IngestInput, Limits};
use crate::store::{BlobStore, Kb, Store};
use crate::workflow::{Ctx, Handler, Interrupt, StepError};

/// A step error from the service's (retryable when the service error is).
pub(super) fn step_error(e: ServiceError) -> StepError {
    if e.is_retryable() {
        StepError::retryable(e.code(), e.to_string())
    } else {
        StepError::fatal(e.code(), e.to_string())
    }
}

impl Host for Core {
    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    fn blobs(&self) -> &dyn BlobStore {
        self.blobs.as_ref()
    }

    fn catalog(&self) -> &Catalog {
        &self.indexes
    }

    fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    fn limits(&self) -> Limits {
        Limits {
            max_extracted_chars: self.config.ingest.max_extracted_chars,
            embed_batch_chunks: self.config.ingest.embed_batch_chunks,
        }
    }

    fn embedder_for(&self, kb: &Kb) -> Result<Arc<dyn Embedder>, StepError> {
        self.models.for_kb(kb).map_err(step_error)
    }

    fn embed(
        &self,
        tenant_id: &str,
        embedder: &dyn Embedder,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, StepError> {
        let started = Instant::now();
        let vectors = self
            .gateway
            .embed_internal(tenant_id, "ingest", embedder, texts)
            .map_err(|e| step_error(e.into()))?;
        self.stats.add_chunks(tenant_id, texts.len() as u64);
        metrics::counter!("groundwork_embedded_texts_total", "kind" => "chunk")
            .increment(texts.len() as u64);
        metrics::histogram!("groundwork_embed_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(vectors)
    }

    fn remove_blobs(&self, shas: &[String]) {
        Core::remove_blobs(self, shas);
    }
}

/// The `ingest` workflow type.
pub struct IngestFlow(pub Weak<Core>);

/// The core behind a handler, unless the service is gone.
pub fn upgrade(core: &Weak<Core>) -> Result<Arc<Core>, Interrupt> {
    core.upgrade().ok_or(Interrupt::Stopping)
}

impl Handler for IngestFlow {
    fn kind(&self) -> &'static str {
        super::WorkflowKind::Ingest.as_str()
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value, Interrupt> {
        let core = upgrade(&self.0)?;
        let input: IngestInput = ctx.input()?;
        run_ingest(ctx, core.as_ref(), &input)
    }

    fn cancelled(&self, wf: &crate::store::WorkflowRecord) {
        let Some(core) = self.0.upgrade() else { return };
        if let Ok(input) = serde_json::from_value::<IngestInput>(wf.input.clone()) {
            cancel_ingest(core.as_ref(), &input);
        }
    }
}
