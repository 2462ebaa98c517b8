//! Reindexing as a durable workflow: a knowledge base's documents are re-chunked and
//! re-embedded (another model, even of another dimension, or another chunk size) into the
//! next index generation while searches keep using the serving one; then, under the KB's write
//! lock, the generation is switched in one store transaction and the new in-memory index is
//! installed in the same step. The old generation's chunks are deleted by that transaction and
//! its index files replaced by the next save. A crash at any point resumes: documents already
//! staged are not embedded again, and a switch that committed is recognised.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ingest::upgrade;
use super::{Core, ServiceError};
use crate::backoff::Backoff;
use crate::error::Classify;
use crate::index::IndexStamp;
use crate::ingest::pipeline::{process_document, Finish};
use crate::store::{ChunkingStamp, GenerationSwitch, Kb, StoreError, WorkflowRecord};
use crate::workflow::{Ctx, Handler, Interrupt, StepError, StepOptions};

/// Input of a `reindex` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReindexInput {
    /// Knowledge base.
    pub kb_id: String,
    /// Model to switch to (see `Models::resolve`); the current one when absent.
    pub embedding_model: Option<String>,
    /// Chunking to switch to; the current one when absent.
    pub chunking: Option<ChunkingStamp>,
    /// Wait for an `approve` event before switching.
    #[serde(default)]
    pub approve_swap: bool,
}

/// Output of the `plan` step: what the new generation is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Generation being built.
    pub generation: u64,
    /// Its model id.
    pub embedding_model: String,
    /// Folder of that model (`None`: the default model).
    pub model_source: Option<String>,
    /// Vector length.
    pub dimension: u32,
    /// Its chunking.
    pub chunking: ChunkingStamp,
}

/// Rounds of "stage what is missing, then try to switch" before giving up (documents keep
/// arriving faster than they can be staged).
const MAX_ROUNDS: usize = 20;

/// The `reindex` workflow type.
pub struct ReindexFlow(pub Weak<Core>);

impl Handler for ReindexFlow {
    fn kind(&self) -> &'static str {
        super::WorkflowKind::Reindex.as_str()
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value, Interrupt> {
        let core = upgrade(&self.0)?;
        let input: ReindexInput = ctx.input()?;
        let kb = core
            .store
            .kb_by_id(&input.kb_id)
            .map_err(|e| Interrupt::failed("plan", "gone", e))?;
        let plan: Plan = ctx.step("plan", &StepOptions::default(), |_| {
            make_plan(&core, &kb, &input)
        })?;
        let switched = |core: &Core| -> Result<bool, Interrupt> {
            Ok(core.store.kb_by_id(&kb.id)?.generation >= plan.generation)
        };
        if switched(&core)? {
            return Ok(json!({ "generation": plan.generation, "switched": true }));
        }
        let embedder = {
            let probe = crate::store::Kb {
                embedding_model: plan.embedding_model.clone(),
                model_source: plan.model_source.clone(),
                ..kb.clone()
            };
            core.models
                .for_kb(&probe)
                .map_err(|e| Interrupt::failed("plan", "model_unavailable", e))?
        };
        let mut tally = Tally::default();
        for round in 0..MAX_ROUNDS {
            let missing = core
                .store
                .documents_missing_generation(&kb.id, plan.generation)?;
            let total_now = tally.documents + missing.len();
            for doc in &missing {
                let finish = Finish::Stage {
                    generation: plan.generation,
                    chunking: plan.chunking,
                    embedder: &embedder,
                };
                let f =
                    process_document(ctx, core.as_ref(), &kb, doc, finish, &format!("r{round}/"))?;
                tally.documents += 1;
                tally.chunks += f.chunks;
                ctx.progress(json!({
                    "phase": "embedding", "documents": total_now, "done": tally.documents,
                    "chunks": tally.chunks, "generation": plan.generation
                }))?;
            }
            if input.approve_swap {
                ctx.progress(tally.json("awaiting_approval"))?;
                ctx.wait_for_event("approve", Duration::from_secs(7 * 24 * 3600))?;
            }
            if let Some(seq) = build_and_swap(ctx, &core, &kb, &plan, round, &tally)? {
                ctx.progress(tally.json("switched"))?;
                tracing::info!(kb = %kb.name, generation = plan.generation, seq, chunks = tally.chunks, "reindex switched generation");
                return Ok(json!({
                    "generation": plan.generation, "documents": tally.documents,
                    "chunks": tally.chunks, "switched": true
                }));
            }
            if switched(&core)? {
                return Ok(json!({ "generation": plan.generation, "switched": true }));
            }
        }
        Err(Interrupt::failed(
            "swap",
            "busy",
            "documents kept arriving faster than they could be reindexed",
        ))
    }

    fn cancelled(&self, wf: &WorkflowRecord) {
        let Some(core) = self.0.upgrade() else { return };
        let Ok(input) = serde_json::from_value::<ReindexInput>(wf.input.clone()) else {
            return;
        };
        let plan = core
            .store
            .steps(&wf.id)
            .ok()
            .and_then(|steps| steps.into_iter().find(|s| s.name == "plan"))
            .and_then(|s| s.output)
            .and_then(|o| serde_json::from_value::<Plan>(o).ok());
        if let Some(plan) = plan {
            if let Err(e) = core.store.drop_generation(&input.kb_id, plan.generation) {
                tracing::warn!(error = %e, "could not drop a cancelled reindex's chunks");
            }
        }
    }
}

/// Documents and chunks a reindex has staged so far.
#[derive(Debug, Default)]
struct Tally {
    documents: usize,
    chunks: usize,
}

impl Tally {
    fn json(&self, phase: &str) -> Value {
        json!({ "phase": phase, "documents": self.documents, "done": self.documents, "chunks": self.chunks })
    }
}

/// The `plan` step: the model and chunking to switch to, and a new generation to stage into.
fn make_plan(core: &Core, kb: &Kb, input: &ReindexInput) -> Result<Plan, StepError> {
    let (model_id, source, dimension) = match &input.embedding_model {
        Some(spec) => {
            let r = core
                .models
                .resolve(spec)
                .map_err(|e| StepError::fatal(e.code(), e.to_string()))?;
            let id = r.embedder.model_id().to_owned();
            (id, r.source, r.embedder.dimension() as u32)
        }
        None => (
            kb.embedding_model.clone(),
            kb.model_source.clone(),
            kb.dimension,
        ),
    };
    let chunking = input.chunking.unwrap_or(kb.chunking);
    let generation = core
        .store
        .begin_generation(&kb.id)
        .map_err(|e| StepError::retryable("store_error", e.to_string()))?;
    Ok(Plan {
        generation,
        embedding_model: model_id,
        model_source: source,
        dimension,
        chunking,
    })
}

/// Builds the new generation's index outside any lock (searches keep running on the serving
/// one; a run resumed after a crash builds it again from stored vectors, which needs no
/// model), then the `swap/N` step. `Some(seq)` once switched.
fn build_and_swap(
    ctx: &mut Ctx<'_>,
    core: &Core,
    kb: &Kb,
    plan: &Plan,
    round: usize,
    tally: &Tally,
) -> Result<Option<u64>, Interrupt> {
    ctx.progress(tally.json("building_index"))?;
    let stamp = IndexStamp {
        model_id: plan.embedding_model.clone(),
        dimension: plan.dimension as usize,
    };
    let mut collection = core
        .indexes
        .build(
            &kb.id,
            &kb.name,
            &stamp,
            Some(plan.generation),
            core.store.as_ref(),
        )
        .map_err(|e| Interrupt::failed("build", "index_error", e))?;
    ctx.checkpoint()?;
    let options = StepOptions {
        max_attempts: 3,
        backoff: Backoff::Constant { delay_ms: 500 },
        timeout: None,
    };
    ctx.step(&format!("swap/{round}"), &options, |_| {
        swap(core, &kb.id, plan, &mut collection)
            .map_err(|e| StepError::fatal(e.code(), e.to_string()))
    })
}

/// Under the KB's write lock: if every ready document has chunks in the new generation,
/// drops from the new index what was deleted meanwhile, switches the store and installs the
/// index. `Ok(None)` when documents arrived that still need staging (another round).
fn swap(
    core: &Core,
    kb_id: &str,
    plan: &Plan,
    collection: &mut crate::index::Collection,
) -> Result<Option<u64>, ServiceError> {
    let index = core.index_of(kb_id)?;
    let order = index.write_order();
    let kb = core.store.kb_by_id(kb_id)?;
    if kb.generation >= plan.generation {
        // Switched by an attempt whose completion was not recorded.
        return Ok(Some(kb.index_seq));
    }
    if !core
        .store
        .documents_missing_generation(kb_id, plan.generation)?
        .is_empty()
    {
        return Ok(None);
    }
    let live: HashSet<u64> = core
        .store
        .generation_chunk_ids(kb_id, plan.generation)?
        .into_iter()
        .collect();
    let gone: Vec<u64> = collection
        .chunk_ids()
        .filter(|id| !live.contains(id))
        .collect();
    if !gone.is_empty() {
        collection.delete_chunks(&gone);
    }
    let built = std::mem::replace(
        collection,
        crate::index::Collection::new(collection.stamp().clone(), Default::default()),
    );
    let switch = GenerationSwitch {
        generation: plan.generation,
        embedding_model: plan.embedding_model.clone(),
        model_source: plan.model_source.clone(),
        dimension: plan.dimension,
        chunking: plan.chunking,
    };
    let seq = index.swap_in(&order, built, || {
        let seq = core.store.switch_generation(kb_id, &switch);
        fail::fail_point!("reindex::swap");
        seq
    });
    let seq = match seq {
        Ok(Some(seq)) => seq,
        Ok(None) => return Ok(Some(kb.index_seq)),
        Err(StoreError::NotFound { .. }) => {
            return Err(ServiceError::NotFound {
                kind: "knowledge base",
                id: kb_id.to_owned(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Some(seq))
}
