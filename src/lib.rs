//! # Groundwork
//!
//! A self-hosted knowledge assistant: documents go in, are extracted, chunked, embedded locally
//! and indexed; questions come back answered from the best passages.
//!
//! ## Layout
//!
//! Data flows one way, from the edges inwards:
//!
//! ```text
//!   api (axum) / CLI ──► agent ──► service, gateway ──► ingest, embed, index ──► store
//! ```
//!
//! - [`app`]: the composition root — builds every part from the configuration and wires the
//!   agent runtime to the knowledge-base service through the agent's ports.
//! - [`agent`]: addressable agents (one actor per id with a mailbox, evicted when idle) with
//!   durable state, conversations, task queues and schedules, and the grounded chat turn:
//!   follow-up rewriting, hybrid retrieval, numbered sources, streamed answers through the
//!   gateway, checked citations.
//! - [`api`]: HTTP routes and the request/response shapes (store records are converted at
//!   the edge), authentication extractor, the single error → problem+json
//!   mapping, metrics middleware, the OpenAPI description, serving with graceful shutdown.
//! - [`service`]: the use cases (knowledge bases, uploads, documents, search, jobs), tenant and
//!   scope checks, and the workflow handlers (ingest, reindex, sync).
//! - [`workflow`]: the durable workflow engine — named steps with persisted outputs, retries
//!   with backoff, sleeps, events, cancellation, idempotency keys, per-type concurrency — that
//!   runs ingestion, reindexing and folder syncs, resuming them after a crash.
//! - [`gateway`]: every model call — local GGUF chat and embeddings, OpenAI, Anthropic, any
//!   OpenAI-compatible server — through routes with retries, fallback and timeouts, a response
//!   cache, atomic budget reservations, guardrails and a call log; served as the
//!   OpenAI-compatible `/v1/chat/completions`, `/v1/embeddings` and `/v1/models`.
//! - [`store`]: the schema, migrations and repositories behind narrow traits, in SQLite (the
//!   default) or PostgreSQL (`[store] url`); uploaded bytes by content hash; sections that
//!   exclude across processes; `migrate`'s verified copy from one to the other. The source
//!   of truth, vectors included.
//! - [`embed`]: the [`embed::Embedder`] trait and the candle BERT embedder that loads any
//!   sentence-transformers folder (all-MiniLM-L6-v2 by default).
//! - [`ingest`]: turning bytes into text ([`ingest::extract`], PDF parsing isolated in a child
//!   process) and text into token-bounded chunks that keep pages and headings ([`ingest::chunk`]);
//!   the ingest pipeline's durable steps ([`ingest::pipeline`]).
//! - [`index`]: the dense vector index (hnsw_rs graph plus an exact scan), BM25, hybrid fusion,
//!   metadata filters, tombstones and on-disk generations; the catalog of every KB's index kept
//!   in commit order with the store ([`index::catalog`]).
//! - [`error`]: the error kinds every module's error reports, read once by `api` for HTTP.
//! - [`principal`]: the verified caller (tenant, key, scopes) and the scope check.
//! - [`config`]: the typed configuration (defaults → TOML → `GROUNDWORK__*` environment).
//! - [`client`]: a typed client of the HTTP API (CLI `--server` mode, tests, benchmarks).
//! - [`eval`]: BEIR-format retrieval evaluation (nDCG@10, recall@k, MRR@10).
//! - [`backoff`]: the one retry delay policy (constant, linear, exponential; jittered).
//! - [`supervisor`]: owns every background task and thread; shutdown awaits and joins them.
//! - [`clock`]: the one scheduler of periodic jobs (housekeeping, agent schedules).
//! - [`runtime`]: process-wide tuning that the binaries apply at start-up.
//! - `compute` (crate-internal): the numeric kernels both local models run on — GEMM,
//!   element-wise functions, int8 blocks.
//!
//! A request's path: `api` authenticates the caller and decodes the body, then calls one
//! `service` method on a blocking thread; the service checks scopes, reads or writes the store
//! and the in-memory index, and returns typed data or a `ServiceError` that `api` maps to HTTP.
//!
//! Every module owns a `thiserror` error type; `anyhow` is used only by the binary.

pub mod agent;
pub mod api;
pub mod app;
pub mod backoff;
pub mod client;
pub mod clock;
pub(crate) mod compute;
pub mod config;
pub mod embed;
pub mod error;
pub mod eval;
pub mod gateway;
pub mod index;
pub mod ingest;
pub mod principal;
pub mod runtime;
pub mod service;
pub mod store;
pub mod supervisor;
pub mod util;
pub mod workflow;
