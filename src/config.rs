//! The service's typed configuration: defaults, then `groundwork.toml`, then environment
//! variables `GROUNDWORK__SECTION__KEY` (for example `GROUNDWORK__SERVER__BIND=0.0.0.0:8080`).
//!
//! Owns parsing and validation only; it must never open files other than the config file or
//! start anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Errors while reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable does not fit the schema.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything `groundwork serve` and the CLI read at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder holding everything the service persists (database, stored uploads, indexes).
    pub data_dir: PathBuf,
    /// HTTP server.
    pub server: ServerConfig,
    /// Local embedding model.
    pub embed: EmbedConfig,
    /// Upload limits and the ingest pipeline.
    pub ingest: IngestConfig,
    /// Default chunking of new knowledge bases.
    pub chunking: ChunkingConfig,
    /// Search limits.
    pub search: SearchConfig,
    /// Durable workflows (ingest, reindex, folder sync).
    pub workflow: WorkflowConfig,
    /// Folder sources.
    pub sources: SourcesConfig,
    /// The model gateway.
    pub gateway: crate::gateway::GatewayConfig,
    /// Agents.
    pub agents: crate::agent::AgentsConfig,
    /// Requests and model tokens per minute, per key and per tenant.
    pub rate_limits: RateLimitConfig,
    /// Where records live: the data directory's SQLite file, or a PostgreSQL database.
    pub store: StoreConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data/.groundwork/store"),
            server: ServerConfig::default(),
            embed: EmbedConfig::default(),
            ingest: IngestConfig::default(),
            chunking: ChunkingConfig::default(),
            search: SearchConfig::default(),
            workflow: WorkflowConfig::default(),
            sources: SourcesConfig::default(),
            gateway: crate::gateway::GatewayConfig::default(),
            agents: crate::agent::AgentsConfig::default(),
            rate_limits: RateLimitConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

/// The store. Without a URL, records live in SQLite under `data_dir`; with a PostgreSQL URL
/// they live in that database (blobs included) and `data_dir` keeps only the search indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database` (or libpq's `key=value` form); empty for
    /// SQLite.
    pub url: String,
    /// PostgreSQL connections kept at most by this process.
    pub pool_size: u32,
    /// Milliseconds after which PostgreSQL cancels a statement (0: never).
    pub statement_timeout_ms: u64,
    /// Milliseconds to wait for a connection (at start-up: for the database to come up).
    pub connect_timeout_ms: u64,
    /// PEM file of the certificate authorities that sign the database's certificate (default:
    /// the system's roots). Setting it, or `sslmode=require` in the URL, encrypts connections.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that authenticate clients by certificate.
    pub tls_client_cert: Option<PathBuf>,
    /// PEM private key of `tls_client_cert`.
    pub tls_client_key: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 16,
            statement_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
        }
    }
}

impl StoreConfig {
    /// Whether records live in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        !self.url.is_empty()
    }
}

/// Workflow engine sizing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    /// Runs executing at once over all types.
    pub workers: usize,
    /// Ingest runs (one per upload request) executing at once.
    pub ingest_concurrency: usize,
    /// Reindex runs executing at once.
    pub reindex_concurrency: usize,
    /// Folder syncs executing at once.
    pub sync_concurrency: usize,
    /// How long a replica's claim on a run holds without renewal (renewed every third of
    /// it): the longest a run waits after its replica died before another takes it over.
    pub lease_secs: f64,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            ingest_concurrency: 2,
            reindex_concurrency: 1,
            sync_concurrency: 1,
            lease_secs: 15.0,
        }
    }
}

/// Where folder sources may point.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Directories under which sources may be registered. Empty: any directory, but only
    /// while the server runs without API keys (loopback demo mode).
    pub allowed_roots: Vec<PathBuf>,
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Without API keys only loopback addresses are accepted.
    pub bind: SocketAddr,
    /// Base URL other replicas reach this one at (`http://10.0.0.5:8080`); default: `http://`
    /// and the address listened on, the host name for a wildcard address.
    pub advertise: Option<String>,
    /// Seconds in-flight requests get to finish at shutdown.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            advertise: None,
            shutdown_grace_secs: 30,
        }
    }
}

/// Local embedder settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedConfig {
    /// Sentence-transformers model folder; default `models/all-MiniLM-L6-v2`.
    pub model: Option<PathBuf>,
    /// Passages per forward pass.
    pub batch_size: usize,
    /// Other models a reindex may switch a knowledge base to, by name → folder.
    pub models: std::collections::BTreeMap<String, PathBuf>,
    /// Arithmetic of the encoder: `auto` (int8 where the CPU has VNNI, else f32), `int8` or
    /// `f32` (bit-for-bit the sentence-transformers vectors).
    pub precision: crate::embed::Precision,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            model: None,
            batch_size: 32,
            models: Default::default(),
            precision: Default::default(),
        }
    }
}

/// Upload limits and pipeline sizing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest accepted file, bytes.
    pub max_file_bytes: u64,
    /// Most files in one upload request.
    pub max_files_per_request: usize,
    /// Documents accepted but not finished before uploads are refused with 429.
    pub queue_capacity: usize,
    /// Seconds one binary document (PDF, Office file, e-book) may take to parse, OCR aside
    /// (each PDF engine run has this bound).
    pub pdf_timeout_secs: u64,
    /// Address-space limit of the extractor process (and the programs it runs), MiB.
    pub pdf_memory_mib: u64,
    /// OCR of images and of PDF pages without text (`[ingest.ocr]`).
    pub ocr: crate::ingest::ocr::OcrSettings,
    /// Chunks per embedding step (each step's vectors are persisted before the next).
    pub embed_batch_chunks: usize,
    /// Most characters of extracted text one document may hold; a longer one fails with
    /// `too_long` before it is chunked.
    pub max_extracted_chars: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 100 * 1024 * 1024,
            max_files_per_request: 64,
            queue_capacity: 1024,
            pdf_timeout_secs: 60,
            pdf_memory_mib: 2048,
            ocr: crate::ingest::ocr::OcrSettings::default(),
            embed_batch_chunks: 64,
            max_extracted_chars: 10_000_000,
        }
    }
}

/// Default chunking of new knowledge bases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkingConfig {
    /// Most tokens per chunk.
    pub max_tokens: usize,
    /// Tokens repeated between neighbouring chunks.
    pub overlap_tokens: usize,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self {
            max_tokens: 254,
            overlap_tokens: 32,
        }
    }
}

/// Search limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Results when the request does not say.
    pub default_top_k: usize,
    /// Most results one request may ask for.
    pub max_top_k: usize,
    /// Longest query, bytes.
    pub max_query_bytes: usize,
    /// Rerank every search with this gateway route (or `provider/model`) unless the request
    /// says otherwise: a cross-encoder or rerank API orders the fused candidates.
    pub rerank: Option<String>,
    /// Candidates the index hands the reranker (at least the results asked for).
    pub rerank_candidates: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            default_top_k: 10,
            max_top_k: 100,
            max_query_bytes: 8192,
            rerank: None,
            rerank_candidates: 50,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (`path`, or `groundwork.toml` if it exists), then
    /// `GROUNDWORK__*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError::Invalid(format!(
                        "config file {} does not exist",
                        p.display()
                    )));
                }
                fig = fig.merge(Toml::file(p));
            }
            None => fig = fig.merge(Toml::file("groundwork.toml")),
        }
        fig = fig.merge(Env::prefixed("GROUNDWORK__").split("__"));
        let config: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.ingest.max_file_bytes == 0 {
            return bad("ingest.max_file_bytes must be positive");
        }
        if self.ingest.max_extracted_chars == 0 {
            return bad("ingest.max_extracted_chars must be positive");
        }
        if self.ingest.max_files_per_request == 0 {
            return bad("ingest.max_files_per_request must be positive");
        }
        if self.ingest.queue_capacity == 0 {
            return bad("ingest.queue_capacity must be positive");
        }
        if self.ingest.embed_batch_chunks == 0 {
            return bad("ingest.embed_batch_chunks must be positive");
        }
        let w = &self.workflow;
        if w.workers == 0
            || w.ingest_concurrency == 0
            || w.reindex_concurrency == 0
            || w.sync_concurrency == 0
        {
            return bad("workflow.workers and workflow.*_concurrency must be positive");
        }
        if !(w.lease_secs >= 1.0 && w.lease_secs <= 3600.0) {
            return bad("workflow.lease_secs must be between 1 and 3600");
        }
        if self.store.is_postgres() {
            let url = &self.store.url;
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.contains("host="))
            {
                return bad(
                    "store.url must be a PostgreSQL URL (postgres://…) or empty for SQLite",
                );
            }
            if self.store.pool_size == 0 {
                return bad("store.pool_size must be positive");
            }
        }
        if let Some(url) = &self.server.advertise {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                return bad("server.advertise must be a base URL (http://host:port)");
            }
        }
        if self.embed.batch_size == 0 {
            return bad("embed.batch_size must be positive");
        }
        if self.chunking.max_tokens < 8
            || self.chunking.overlap_tokens * 2 > self.chunking.max_tokens
        {
            return bad("chunking.max_tokens must be at least 8 and twice the overlap");
        }
        self.gateway.validate().map_err(ConfigError::Invalid)?;
        self.agents
            .defaults
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("agents.defaults: {e}")))?;
        self.agents
            .grounding
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("agents: {e}")))?;
        if self.search.max_top_k == 0 || self.search.default_top_k > self.search.max_top_k {
            return bad("search.default_top_k must be at most search.max_top_k (> 0)");
        }
        if !(1..=1000).contains(&self.search.rerank_candidates) {
            return bad("search.rerank_candidates must be within 1..=1000");
        }
        Ok(())
    }

    /// The embedding model folder, resolved against `root` when not configured.
    pub fn model_dir(&self, root: &Path) -> PathBuf {
        self.embed
            .model
            .clone()
            .unwrap_or_else(|| crate::embed::ModelDir::default_path(root))
    }
}

/// Test support: every TOML block of a guide page parses and validates, so the documentation
/// cannot drift from the configuration types.
#[cfg(test)]
pub(crate) fn assert_guide_blocks_are_valid(guide: &str) -> Vec<Config> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(guide))
        .unwrap_or_else(|e| panic!("{guide}: {e}"));
    let blocks: Vec<&str> = text
        .split("```toml")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(
        blocks.len() >= 2,
        "{guide} has fewer than two TOML examples"
    );
    blocks
        .into_iter()
        .map(|block| {
            let config: Config = Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(block))
                .extract()
                .unwrap_or_else(|e| panic!("{e}\n{block}"));
            config.validate().unwrap_or_else(|e| panic!("{e}\n{block}"));
            config
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's test harness fixes the error type
    fn env_overrides_file_and_unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "groundwork.toml",
                "data_dir = \"/tmp/x\"\n[server]\nbind = \"127.0.0.1:9000\"\n",
            )?;
            jail.set_env("GROUNDWORK__INGEST__MAX_FILE_BYTES", "1234");
            assert_eq!(
                Config::load(None)
                    .map_err(|e| e.to_string())?
                    .embed
                    .precision,
                crate::embed::Precision::Auto
            );
            jail.set_env("GROUNDWORK__EMBED__PRECISION", "f32");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.embed.precision, crate::embed::Precision::F32);
            assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(c.server.bind.port(), 9000);
            assert_eq!(c.ingest.max_file_bytes, 1234);
            jail.set_env("GROUNDWORK__INGEST__MAX_FILE_BYTE", "1");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn validation_catches_nonsense() {
        let mut c = Config::default();
        c.search.default_top_k = 1000;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        for (url, ok) in [
            ("http://10.0.0.5:8081", true),
            ("https://gw-2.internal", true),
            ("10.0.0.5:8081", false),
            ("http://", false),
        ] {
            c.server.advertise = Some(url.into());
            assert_eq!(c.validate().is_ok(), ok, "{url}");
        }
    }
}

/// `[rate_limits]` (enforced by `service::ratelimit`): 0 turns a limit off (the default: a self-hosted service starts open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per minute per API key.
    pub key_rpm: u64,
    /// Requests per minute per tenant (all its keys together).
    pub tenant_rpm: u64,
    /// Model tokens per minute per API key (prompt bound + `max_tokens`, refunded to what was
    /// billed when the call ends).
    pub key_tpm: u64,
    /// Model tokens per minute per tenant.
    pub tenant_tpm: u64,
}
