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
//!   main.rs / cli ──► eval, ingest pipeline ──► embed (candle), index (hnsw + bm25) ──► files on disk
//! ```
//!
//! - [`embed`]: the [`embed::Embedder`] trait and the candle BERT embedder that loads any
//!   sentence-transformers folder (all-MiniLM-L6-v2 by default).
//! - [`ingest`]: turning bytes into text ([`ingest::extract`], PDF parsing isolated in a child
//!   process) and text into token-bounded chunks that keep pages and headings ([`ingest::chunk`]).
//! - [`index`]: the dense vector index (hnsw_rs graph plus an exact scan), BM25, hybrid fusion,
//!   metadata filters, tombstones and on-disk generations.
//! - [`eval`]: BEIR-format retrieval evaluation (nDCG@10, recall@k, MRR@10).
//! - [`runtime`]: process-wide tuning that the binaries apply at start-up.
//!
//! Every module owns a `thiserror` error type; `anyhow` is used only by the binary.

pub mod api;
pub mod client;
pub mod config;
pub mod embed;
pub mod eval;
pub mod index;
pub mod ingest;
pub mod runtime;
pub mod service;
pub mod store;
pub mod util;
