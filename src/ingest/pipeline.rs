//! The ingest pipeline as durable workflow steps: each document goes `extract` → `chunk` →
//! `embed/N` (one step per batch of chunks, its vectors persisted) → `publish` (store commit
//! and index update in one ordered step), or `stage` (chunks of a generation being built, for
//! a reindex) instead of `publish`.
//!
//! A document becomes searchable only at `publish`, all at once. A killed process resumes at
//! the first unfinished step: bytes are never re-read once extracted and batches already
//! embedded are never embedded again. [`run_ingest`] takes an upload's documents through in
//! order; a document that fails for good is marked `failed` with the step's error and its
//! siblings carry on.
//!
//! Works through a [`Host`] (the service) for storage, the catalog, models and accounting;
//! must never decide who may upload, nor register workflows.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::isolate::Isolation;
use super::{extract, Chunk, Chunker, ChunkingOptions, ExtractOptions, Extracted, IngestError};
use crate::backoff::Backoff;
use crate::embed::Embedder;
use crate::index::{Catalog, NewPoint, PointMeta};
use crate::store::{
    BlobStore, ChunkRow, ChunkingStamp, Document, DocumentStatus, Extraction, Kb, OcrPageRecord,
    Publish, Store, StoreError,
};
use crate::workflow::{Ctx, Interrupt, StepError, StepOptions};

/// What the pipeline works with, supplied by the service that runs it.
pub trait Host {
    /// KBs, documents, chunks and vectors.
    fn store(&self) -> &dyn Store;
    /// Uploaded bytes.
    fn blobs(&self) -> &dyn BlobStore;
    /// The per-KB indexes.
    fn catalog(&self) -> &Catalog;
    /// How extraction is isolated.
    fn isolation(&self) -> &Isolation;
    /// Size limits and batch sizes.
    fn limits(&self) -> Limits;
    /// The embedder of a KB's serving generation.
    fn embedder_for(&self, kb: &Kb) -> Result<Arc<dyn Embedder>, StepError>;
    /// Embeds passages on behalf of `tenant_id` (accounted and logged by the host).
    fn embed(
        &self,
        tenant_id: &str,
        embedder: &dyn Embedder,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, StepError>;
    /// Removes stored bytes no document references any more.
    fn remove_blobs(&self, shas: &[String]);
}

/// The pipeline's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Characters an extracted text may hold.
    pub max_extracted_chars: usize,
    /// Chunks per `embed/N` step.
    pub embed_batch_chunks: usize,
}

/// Input of an `ingest` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestInput {
    /// Knowledge base.
    pub kb_id: String,
    /// Documents, in upload order.
    pub documents: Vec<String>,
}

/// Output of a document's `chunk` step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunked {
    /// Pages (PDF).
    pub pages: Option<u32>,
    /// Extraction warnings.
    pub warnings: Vec<String>,
    /// What read the text, and which pages OCR recognised.
    #[serde(default)]
    pub extraction: Extraction,
    /// The chunks in order.
    pub chunks: Vec<Chunk>,
}

/// Output of an `embed/N` step: the batch's vectors as little-endian f32, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vectors {
    /// Vector length.
    pub dimension: usize,
    /// Vectors, concatenated.
    pub data: String,
}

impl Vectors {
    fn encode(vectors: &[Vec<f32>]) -> Self {
        let dimension = vectors.first().map_or(0, Vec::len);
        let mut bytes = Vec::with_capacity(vectors.len() * dimension * 4);
        for v in vectors {
            bytes.extend_from_slice(bytemuck::cast_slice(v));
        }
        Self {
            dimension,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    fn decode(&self) -> Result<Vec<Vec<f32>>, Interrupt> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| {
                Interrupt::failed(
                    "embed",
                    "bad_output",
                    format!("stored vectors unreadable: {e}"),
                )
            })?;
        let flat = crate::util::f32s_from_le(&bytes);
        if self.dimension == 0 {
            return Ok(Vec::new());
        }
        Ok(flat.chunks(self.dimension).map(<[f32]>::to_vec).collect())
    }
}

/// What a document's run ended with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Finished {
    /// Chunks made searchable (or staged).
    pub chunks: usize,
}

/// How a document's steps end.
pub enum Finish<'a> {
    /// Publish into the serving generation (upload).
    Publish,
    /// Stage chunks for a generation being built (reindex).
    Stage {
        /// The generation.
        generation: u64,
        /// Chunking of that generation.
        chunking: ChunkingStamp,
        /// Model of that generation.
        embedder: &'a Arc<dyn Embedder>,
    },
}

fn extract_options() -> StepOptions {
    StepOptions {
        max_attempts: 2,
        backoff: Backoff::Constant { delay_ms: 500 },
        timeout: None,
    }
}

fn quick_options() -> StepOptions {
    StepOptions {
        max_attempts: 5,
        backoff: Backoff::Exponential {
            base_ms: 200,
            max_ms: 10_000,
        },
        timeout: None,
    }
}

/// A step error from a store error (a vanished row is `gone`, for good).
pub fn store_step_error(e: StoreError) -> StepError {
    match e {
        StoreError::NotFound { .. } => StepError::fatal("gone", e.to_string()),
        e if e.is_retryable() => StepError::retryable("store_busy", e.to_string()),
        e => StepError::fatal("store_error", e.to_string()),
    }
}

/// A document read and chunked, waiting for its vectors.
struct Prepared {
    doc: Document,
    chunked: Chunked,
    /// Step names are `{prefix}{doc id}/…`.
    prefix: String,
    embedder: Arc<dyn Embedder>,
    chunking: ChunkingStamp,
}

/// A document's id and how its run ended.
type Outcome = (String, Result<Finished, Interrupt>);

/// What [`prepare`] found.
enum Prepare {
    /// The document's last step is recorded.
    Done(Finished),
    /// Extracted and chunked.
    Chunked(Box<Prepared>),
}

fn last_step(prefix: &str, doc: &Document, finish: &Finish<'_>) -> String {
    format!(
        "{prefix}{}/{}",
        doc.id,
        match finish {
            Finish::Publish => "publish",
            Finish::Stage { .. } => "stage",
        }
    )
}

/// The `extract` and `chunk` steps of one document.
fn prepare(
    ctx: &mut Ctx<'_>,
    host: &dyn Host,
    kb: &Kb,
    doc: &Document,
    finish: &Finish<'_>,
    prefix: &str,
) -> Result<Prepare, Interrupt> {
    let name = |s: &str| format!("{prefix}{}/{s}", doc.id);
    let last = last_step(prefix, doc, finish);
    if let Some(done) = ctx.done::<Finished>(&last) {
        return Ok(Prepare::Done(done));
    }
    let (embedder, chunking) = match finish {
        Finish::Publish => (
            host.embedder_for(kb)
                .map_err(|e| Interrupt::failed(&last, &e.code, e.message))?,
            kb.chunking,
        ),
        Finish::Stage {
            embedder, chunking, ..
        } => ((*embedder).clone(), *chunking),
    };
    let is_upload = matches!(finish, Finish::Publish);
    let extracted: Extracted = ctx.step(&name("extract"), &extract_options(), |_| {
        extract_text(host, doc, is_upload)
    })?;
    let chunked: Chunked = ctx.step(&name("chunk"), &quick_options(), |_| {
        chunk_text(embedder.as_ref(), chunking, doc, &extracted)
    })?;
    Ok(Prepare::Chunked(Box::new(Prepared {
        doc: doc.clone(),
        chunked,
        prefix: prefix.to_owned(),
        embedder,
        chunking,
    })))
}

/// `embed/N` steps named `{name}/embed/N` over `texts`, `embed_batch_chunks` at a time.
fn embed_steps(
    ctx: &mut Ctx<'_>,
    host: &dyn Host,
    kb: &Kb,
    embedder: &dyn Embedder,
    name: &str,
    texts: &[std::borrow::Cow<'_, str>],
) -> Result<Vec<Vec<f32>>, Interrupt> {
    let batch = host.limits().embed_batch_chunks.max(1);
    let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
    for (i, part) in texts.chunks(batch).enumerate() {
        let out: Vectors = ctx.step(&format!("{name}/embed/{i}"), &quick_options(), |_| {
            fail::fail_point!("ingest::embed", |_| Err(StepError::fatal(
                "injected",
                "failpoint"
            )));
            let texts: Vec<&str> = part.iter().map(|t| t.as_ref()).collect();
            host.embed(&kb.tenant_id, embedder, &texts)
                .map(|v| Vectors::encode(&v))
        })?;
        vectors.extend(out.decode()?);
    }
    Ok(vectors)
}

/// The `publish` (or `stage`) step of a prepared document with its vectors.
fn complete(
    ctx: &mut Ctx<'_>,
    host: &dyn Host,
    kb: &Kb,
    p: &Prepared,
    finish: &Finish<'_>,
    mut vectors: Vec<Vec<f32>>,
) -> Result<Finished, Interrupt> {
    let last = last_step(&p.prefix, &p.doc, finish);
    let finished: Finished = match finish {
        Finish::Publish => ctx.step(&last, &quick_options(), |_| {
            publish(
                host,
                kb,
                &p.doc,
                (p.embedder.model_id(), p.chunking),
                &p.chunked,
                &mut vectors,
            )?;
            Ok(Finished {
                chunks: p.chunked.chunks.len(),
            })
        })?,
        Finish::Stage { generation, .. } => ctx.step(&last, &quick_options(), |_| {
            let rows = chunk_rows(&p.chunked.chunks, &vectors);
            let staged = host
                .store()
                .stage_chunks(&p.doc.id, *generation, &rows)
                .map_err(store_step_error)?;
            Ok(Finished {
                chunks: staged.map_or(0, |ids| ids.len()),
            })
        })?,
    };
    ctx.forget(&format!("{}{}/", p.prefix, p.doc.id), &last)?;
    Ok(finished)
}

/// Takes one document through extract → chunk → embed batches → publish (or stage).
pub fn process_document(
    ctx: &mut Ctx<'_>,
    host: &dyn Host,
    kb: &Kb,
    doc: &Document,
    finish: Finish<'_>,
    prefix: &str,
) -> Result<Finished, Interrupt> {
    let p = match prepare(ctx, host, kb, doc, &finish, prefix)? {
        Prepare::Done(f) => return Ok(f),
        Prepare::Chunked(p) => p,
    };
    let texts: Vec<std::borrow::Cow<'_, str>> =
        p.chunked.chunks.iter().map(Chunk::embed_text).collect();
    let vectors = embed_steps(
        ctx,
        host,
        kb,
        p.embedder.as_ref(),
        &format!("{prefix}{}", doc.id),
        &texts,
    )?;
    drop(texts);
    complete(ctx, host, kb, &p, &finish, vectors)
}

/// A document of an embedding group.
enum Member {
    /// Read and chunked, to embed and publish.
    Pending(Box<Prepared>),
    /// Published already (by an attempt of this run before a restart): its chunks keep
    /// their places in the group, so the group and its recorded steps stay the same.
    Published { id: String, chunks: usize },
}

impl Member {
    fn id(&self) -> &str {
        match self {
            Member::Pending(p) => &p.doc.id,
            Member::Published { id, .. } => id,
        }
    }

    fn chunks(&self) -> usize {
        match self {
            Member::Pending(p) => p.chunked.chunks.len(),
            Member::Published { chunks, .. } => *chunks,
        }
    }
}

/// Embeds the chunks of consecutive documents together — full batches even when each
/// document is small — then publishes the pending ones in order. The steps are named after
/// the members (`group-{hash}-{chunks}/embed/N`); members are chosen by a rule that sees the
/// same documents and chunk counts after a restart, so a resumed run finds them. Results are
/// for the pending members, in order; an embed failure fails each of them.
fn embed_and_publish_group(
    ctx: &mut Ctx<'_>,
    host: &dyn Host,
    kb: &Kb,
    group: Vec<Member>,
) -> Result<Vec<Outcome>, Interrupt> {
    let ids: Vec<&str> = group.iter().map(Member::id).collect();
    let total: usize = group.iter().map(Member::chunks).sum();
    let name = format!(
        "group-{}-{total}",
        &crate::util::sha256_hex(ids.join("\n").as_bytes())[..16]
    );
    let Some(embedder) = group.iter().find_map(|m| match m {
        Member::Pending(p) => Some(p.embedder.clone()),
        Member::Published { .. } => None,
    }) else {
        // Every member was published before a restart.
        ctx.forget(&format!("{name}/"), "")?;
        return Ok(Vec::new());
    };
    // A published member's chunks are only placeholders: its batches were recorded before
    // any member was published.
    let texts: Vec<std::borrow::Cow<'_, str>> = group
        .iter()
        .flat_map(|m| -> Box<dyn Iterator<Item = std::borrow::Cow<'_, str>>> {
            match m {
                Member::Pending(p) => Box::new(p.chunked.chunks.iter().map(Chunk::embed_text)),
                Member::Published { chunks, .. } => {
                    Box::new(std::iter::repeat_n(std::borrow::Cow::Borrowed(""), *chunks))
                }
            }
        })
        .collect();
    let embedded = embed_steps(ctx, host, kb, embedder.as_ref(), &name, &texts);
    drop(texts);
    let pending = group.iter().filter_map(|m| match m {
        Member::Pending(p) => Some(p),
        Member::Published { .. } => None,
    });
    let mut vectors = match embedded {
        Ok(v) => v.into_iter(),
        Err(Interrupt::Failed(f)) => {
            return Ok(pending
                .map(|p| (p.doc.id.clone(), Err(Interrupt::Failed(f.clone()))))
                .collect())
        }
        Err(other) => return Err(other),
    };
    let mut out = Vec::new();
    for m in &group {
        let mine: Vec<Vec<f32>> = vectors.by_ref().take(m.chunks()).collect();
        let Member::Pending(p) = m else { continue };
        match complete(ctx, host, kb, p, &Finish::Publish, mine) {
            Err(e) if !matches!(e, Interrupt::Failed(_)) => return Err(e),
            result => out.push((p.doc.id.clone(), result)),
        }
    }
    ctx.forget(&format!("{name}/"), "")?;
    Ok(out)
}

/// The `extract` step: the stored bytes to text, in the isolated worker; a text longer
/// than the limit fails before it is persisted as the step's result.
fn extract_text(host: &dyn Host, doc: &Document, is_upload: bool) -> Result<Extracted, StepError> {
    if is_upload {
        host.store()
            .mark_processing(&doc.id)
            .map_err(store_step_error)?;
    }
    fail::fail_point!("ingest::extract", |_| Err(StepError::fatal(
        "injected",
        "failpoint"
    )));
    let bytes = host.blobs().get(&doc.sha256).map_err(|e| {
        StepError::retryable("blob_unreadable", format!("stored upload unreadable: {e}"))
    })?;
    let options = ExtractOptions {
        isolation: host.isolation().clone(),
        password: doc.password.clone(),
    };
    let extracted = extract(&bytes, Some(&doc.name), &options).map_err(|e| match e {
        IngestError::Worker(_) | IngestError::Crashed(_) => {
            StepError::retryable(e.code(), e.to_string())
        }
        e => StepError::fatal(e.code(), e.to_string()),
    })?;
    let limit = host.limits().max_extracted_chars;
    let chars = extracted.text.chars().count();
    if chars > limit {
        let e = IngestError::TooLong { chars, limit };
        return Err(StepError::fatal(e.code(), e.to_string()));
    }
    Ok(extracted)
}

/// The `chunk` step: the text cut into chunks by the embedder's tokenizer.
fn chunk_text(
    embedder: &dyn Embedder,
    chunking: ChunkingStamp,
    doc: &Document,
    extracted: &Extracted,
) -> Result<Chunked, StepError> {
    let options = ChunkingOptions::new(
        chunking.max_tokens as usize,
        chunking.overlap_tokens as usize,
    );
    let chunks = Chunker::new(embedder.tokenizer(), options).chunk(&doc.id, extracted);
    if chunks.is_empty() {
        return Err(StepError::fatal(
            "no_text",
            "the document holds no text to index",
        ));
    }
    Ok(Chunked {
        pages: (extracted.page_count() > 0).then_some(extracted.page_count() as u32),
        warnings: extracted.warnings.clone(),
        extraction: Extraction {
            engine: extracted.engine.clone(),
            ocr_pages: extracted
                .ocr_pages
                .iter()
                .map(|p| OcrPageRecord {
                    page: p.page,
                    confidence: p.confidence,
                })
                .collect(),
        },
        chunks,
    })
}

fn chunk_rows<'a>(chunks: &'a [Chunk], vectors: &'a [Vec<f32>]) -> Vec<ChunkRow<'a>> {
    chunks
        .iter()
        .zip(vectors)
        .map(|(chunk, vector)| ChunkRow {
            ordinal: chunk.ordinal,
            start: chunk.start as u64,
            end: chunk.end as u64,
            text: &chunk.text,
            tokens: chunk.tokens as u32,
            pages: chunk.pages,
            heading_path: &chunk.heading_path,
            hash: &chunk.hash,
            context: &chunk.context,
            ocr_confidence: chunk.ocr_confidence,
            vector,
        })
        .collect()
}

/// Commits a document's chunks and vectors, then makes them searchable, under the KB's write
/// lock (the document it replaces leaves the index in the same step). Idempotent: a document
/// already published is left as is.
fn publish(
    host: &dyn Host,
    kb: &Kb,
    doc: &Document,
    (model, chunking): (&str, ChunkingStamp),
    chunked: &Chunked,
    vectors: &mut Vec<Vec<f32>>,
) -> Result<(), StepError> {
    let index = host
        .catalog()
        .get(&kb.id)
        .map_err(|e| StepError::retryable("index_unavailable", e.to_string()))?;
    let order = index.write_order();
    // The serving generation's settings, read under the lock: a reindex that switched while
    // this document was embedded must not receive vectors of the old settings.
    let kb = host.store().kb_by_id(&kb.id).map_err(store_step_error)?;
    if kb.embedding_model != model || kb.chunking != chunking {
        return Err(StepError::fatal(
            "conflict",
            format!(
                "a reindex switched the settings of knowledge base `{}` while this document \
                 was processed; upload it again",
                kb.name
            ),
        ));
    }
    let published = {
        let rows = chunk_rows(&chunked.chunks, vectors);
        match host.store().publish(&Publish {
            document_id: &doc.id,
            embedding_model: &kb.embedding_model,
            chunking: kb.chunking,
            pages: chunked.pages,
            warnings: &chunked.warnings,
            extraction: &chunked.extraction,
            chunks: rows,
        }) {
            Ok(p) => p,
            // Published by an attempt whose completion was not recorded (the process died
            // in between): its chunks are in the store, the index is rebuilt from it.
            Err(StoreError::Conflict { .. }) => return Ok(()),
            Err(e) => return Err(store_step_error(e)),
        }
    };
    fail::fail_point!("ingest::publish");
    let metadata: BTreeMap<String, String> = doc.filter_metadata();
    let indexed: Vec<std::borrow::Cow<'_, str>> =
        chunked.chunks.iter().map(Chunk::embed_text).collect();
    let points = chunked
        .chunks
        .iter()
        .zip(&indexed)
        .zip(std::mem::take(vectors))
        .zip(&published.chunk_ids)
        .map(|(((_, text), vector), &id)| NewPoint {
            meta: PointMeta {
                chunk_id: id,
                document_id: doc.id.clone(),
                kb: kb.id.clone(),
                metadata: metadata.clone(),
            },
            vector,
            text,
        })
        .collect();
    let removed = published
        .replaced
        .as_ref()
        .map(|(_, ids)| ids.as_slice())
        .unwrap_or(&[]);
    // Changes other replicas committed just before this one go in first, in order (a rebuild
    // instead takes this one in too).
    host.catalog()
        .bring_up(
            &kb.id,
            &index,
            &order,
            host.store(),
            Some(published.index_seq - 1),
        )
        .map_err(|e| StepError::retryable("index_error", e.to_string()))?;
    if index.applied_seq() < published.index_seq {
        index
            .apply(
                &order,
                &kb.embedding_model,
                removed,
                points,
                published.index_seq,
            )
            .map_err(|e| StepError::fatal("index_error", e.to_string()))?;
    }
    drop(order);
    host.remove_blobs(&published.orphaned);
    metrics::counter!("groundwork_ingest_documents_total", "status" => "ready").increment(1);
    metrics::counter!("groundwork_ingest_chunks_total").increment(chunked.chunks.len() as u64);
    Ok(())
}

/// Takes an upload's documents through the pipeline in order (an `ingest` run's body).
/// Returns the run's counts; a document that fails for good is marked `failed`.
pub fn run_ingest(
    ctx: &mut Ctx<'_>,
    host: &dyn Host,
    input: &IngestInput,
) -> Result<Value, Interrupt> {
    let store = host.store();
    let kb = match store.kb_by_id(&input.kb_id) {
        Ok(kb) => kb,
        Err(StoreError::NotFound { .. }) => {
            return Ok(
                json!({ "documents": input.documents.len(), "skipped": input.documents.len() }),
            )
        }
        Err(e) => return Err(e.into()),
    };
    let total = input.documents.len();
    let mut counts = Counts::default();
    let batch = host.limits().embed_batch_chunks.max(1);
    let mut record = |ctx: &mut Ctx<'_>, id: &str, outcome: Result<Finished, Interrupt>| {
        match outcome {
            Ok(f) => {
                counts.ready += 1;
                counts.chunks += f.chunks;
            }
            Err(Interrupt::Failed(f)) if f.code == "gone" => counts.skipped += 1,
            Err(Interrupt::Failed(f)) => {
                counts.failed += 1;
                tracing::warn!(document = %id, step = %f.step, code = %f.code, message = %f.message, "document failed");
                metrics::counter!("groundwork_ingest_documents_total", "status" => "failed")
                    .increment(1);
                store.mark_failed(id, &f.code, &f.message)?;
            }
            Err(other) => return Err(other),
        }
        ctx.progress(counts.json(total))?;
        Ok::<Value, Interrupt>(counts.json(total))
    };
    // Documents are read and chunked one by one; their chunks are embedded in groups of about
    // a batch, so many small documents still make full batches. A group is closed before a
    // document that would take it past a batch (unless it is empty) and once it holds a batch:
    // the embedder then gets whole batches, not a full one and a sliver.
    let mut group: Vec<Member> = Vec::new();
    let mut group_chunks = 0;
    let mut last = Counts::default().json(total);
    for (n, id) in input.documents.iter().enumerate() {
        let doc = match store.get_document(&kb.id, id) {
            Ok(d) => Some(d),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        // A published document keeps its place in its group (see `Member::Published`).
        let published = |chunks| Member::Published {
            id: id.clone(),
            chunks,
        };
        // What the document adds to the group, and its outcome when already settled.
        let (member, outcome) = match doc {
            // Deleted or superseded before its turn.
            None => (None, Some(Err(Interrupt::failed(id, "gone", "")))),
            // Published, by this run or by an attempt whose completion was never recorded
            // (the process died between the commit and the step record).
            Some(doc) if doc.status == DocumentStatus::Ready => {
                let chunks = doc.chunk_count as usize;
                (Some(published(chunks)), Some(Ok(Finished { chunks })))
            }
            Some(doc) if doc.status == DocumentStatus::Failed => (
                None,
                Some(Err(Interrupt::failed(
                    id,
                    doc.error_code.as_deref().unwrap_or_default(),
                    doc.error.as_deref().unwrap_or_default(),
                ))),
            ),
            Some(doc) => match prepare(ctx, host, &kb, &doc, &Finish::Publish, "") {
                Ok(Prepare::Done(f)) => (Some(published(f.chunks)), Some(Ok(f))),
                Ok(Prepare::Chunked(p)) => (Some(Member::Pending(p)), None),
                Err(e) => (None, Some(Err(e))),
            },
        };
        let mut settled = Vec::new();
        if member
            .as_ref()
            .is_some_and(|m| !group.is_empty() && group_chunks + m.chunks() > batch)
        {
            settled = embed_and_publish_group(ctx, host, &kb, std::mem::take(&mut group))?;
            group_chunks = 0;
        }
        if let Some(outcome) = outcome {
            settled.push((id.clone(), outcome));
        }
        if let Some(m) = member {
            group_chunks += m.chunks();
            group.push(m);
        }
        if !group.is_empty() && (group_chunks >= batch || n + 1 == total) {
            settled.extend(embed_and_publish_group(
                ctx,
                host,
                &kb,
                std::mem::take(&mut group),
            )?);
            group_chunks = 0;
        }
        for (id, outcome) in settled {
            last = record(ctx, &id, outcome)?;
        }
    }
    // A sequence number at which every document of the run is searchable: read after the
    // last publish, for a client's read-your-writes (`min_seq`) on any replica.
    if let Value::Object(out) = &mut last {
        match store.kb_by_id(&kb.id) {
            Ok(now) => {
                out.insert("index_seq".into(), now.index_seq.into());
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(last)
}

/// An `ingest` run's counts so far.
#[derive(Debug, Default)]
struct Counts {
    ready: usize,
    failed: usize,
    skipped: usize,
    chunks: usize,
}

impl Counts {
    fn json(&self, documents: usize) -> Value {
        json!({
            "documents": documents, "ready": self.ready, "failed": self.failed,
            "skipped": self.skipped, "chunks": self.chunks
        })
    }
}

/// Marks the documents of a cancelled `ingest` run failed.
pub fn cancel_ingest(host: &dyn Host, input: &IngestInput) {
    for id in &input.documents {
        if let Err(e) =
            host.store()
                .mark_failed(id, "cancelled", "the ingest workflow was cancelled")
        {
            tracing::warn!(document = %id, error = %e, "could not mark a cancelled document");
        }
    }
}
