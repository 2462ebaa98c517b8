//! Groundwork's integration tests: one binary, driven through the public API and the real
//! `groundwork` executable, on the real default models (`python3 models/fetch.py`).
//!
//! Modules:
//! - `architecture`: house rules read from the source (no import cycle between files);
//! - `common`: paths to the models, the shared data sets and the built binary;
//! - `embedder`: the candle embedder against sentence-transformers' reference vectors;
//! - `extraction`: isolated PDF extraction on generated, hostile and shared PDFs;
//! - `chunking`: chunk invariants with the model's real tokenizer;
//! - `formats`: every document a team has, over HTTP — Office and e-book files made by their
//!   real writers, scans read by OCR, encrypted PDFs, hostile archives, tables whose header
//!   travels with every chunk of rows;
//! - `index`: persistence, tombstones, compaction, filters proven against brute force;
//! - `eval_cli`: `groundwork eval` end to end on a small BEIR folder the test writes;
//! - `server`: a real `groundwork serve` child process on a loopback port, and a client;
//! - `service_api`: the knowledge-base service over HTTP and through the CLI;
//! - `fake_llm`: fake OpenAI and Anthropic upstreams on loopback, scripted to fail;
//! - `gateway`: the model gateway (retries, fallback, streams, cache, budgets, guardrails,
//!   logs, the local SmolLM2 model, the official `openai` Python client);
//! - `agents`: agents over HTTP, SSE and WebSocket — durable state, isolation, concurrent
//!   patches, tasks and schedules across a crash, grounded chat with checked citations (fake
//!   frontier model and the local SmolLM2), resumable streams;
//! - `grounding`: answers true to the documents — generated sentences verified (an invented
//!   sentence unsupported, dropped under `strict`), extractive answers on the seeded guide;
//! - `local_model`: the local chat model's reused KV cache changes no answer;
//! - `mcp`: the MCP server with the official MCP Python SDK — every tool, documents as
//!   resources, errors, tenants and scopes;
//! - `limits`: promises under pressure (issue 14), a test per broken promise — budgets under
//!   200 concurrent calls, bounded chunks and documents, per-file upload results, the `infer`
//!   scope, agent configs and tenants' status, one error vocabulary, rate limits, and the
//!   OpenAPI document against schemathesis;
//! - `rerank`: the local cross-encoder against candle's reference BERT, rerank APIs through
//!   the gateway on a fake upstream (order, costs, cache, fallback, budget), the rerank stage
//!   of searches and agents, `POST /v1/rerank`;
//! - `store_pg`: the PostgreSQL store on servers of its own — verified TLS, sections that
//!   exclude across processes, a database crash in the middle of an ingest;
//! - `ui`: the chat UI — the live document list, suggested questions, conversations searched,
//!   renamed and deleted, answers stopped; the page in headless Chromium at 1400 and 390 px
//!   (drag-and-drop uploads, Markdown answers, citations, stop, axe-core);
//! - `workflows`: durable ingest, crash recovery (SIGKILL at fail points), reindexing while
//!   searching, a model of another dimension, folder sources on a schedule.

mod agents;
mod architecture;
mod chunking;
mod common;
mod embedder;
mod eval_cli;
mod extraction;
mod fake_llm;
mod formats;
mod gateway;
mod grounding;
mod index;
mod limits;
mod local_model;
mod mcp;
mod rerank;
mod server;
mod service_api;
mod store_pg;
mod ui;
mod workflows;
