//! The binary's commands: `serve`, `ingest`, `search`, `kb`, `keys`, `migrate`, `eval-answers`, and the
//! offline tools in `tools`. Part of the binary, not the library: argument handling, progress
//! bars and output formatting only.
//!
//! Commands work either on a data directory directly (taking its lock, so never beside a
//! running server) or against a running server (`--server URL`).

mod answers;
mod local;
mod remote;
pub mod tools;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use groundwork::config::Config;
use indicatif::{ProgressBar, ProgressStyle};

pub use answers::{run as eval_answers, AnswerArgs};
pub use local::{serve, LocalArgs};

/// Where a command works.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// Talk to a running server instead of opening the data directory.
    #[arg(long, env = "GROUNDWORK_SERVER")]
    pub server: Option<String>,
    /// API key for `--server` (not needed in demo mode).
    #[arg(long, env = "GROUNDWORK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Tenant to act as when working on the data directory.
    #[arg(long, default_value = groundwork::service::auth::DEMO_TENANT)]
    pub tenant: String,
}

/// `groundwork kb ...`
#[derive(Subcommand, Debug)]
pub enum KbCommand {
    /// List knowledge bases.
    List,
    /// Create a knowledge base.
    Create {
        /// Its name.
        name: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// Chunk size in tokens.
        #[arg(long)]
        chunk_size: Option<u32>,
        /// Tokens repeated between chunks.
        #[arg(long)]
        chunk_overlap: Option<u32>,
    },
    /// Delete a knowledge base and everything in it.
    Delete {
        /// Its name or id.
        name: String,
    },
}

/// `groundwork keys ...` (always on the data directory).
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key; the secret is printed once.
    Create {
        /// Tenant the key belongs to (created if missing).
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: read, write, admin.
        #[arg(long, default_value = "read,write")]
        scopes: String,
        /// Free label.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by its id.
    Revoke {
        /// The key id (the part after `gw_`).
        key_id: String,
    },
}

/// Files under `paths` (directories walked recursively, hidden entries skipped), sorted.
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(
                groundwork::service::sources::list_files(p)
                    .with_context(|| format!("walking {}", p.display()))?,
            );
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            anyhow::bail!("{} is neither a file nor a directory", p.display());
        }
    }
    Ok(files)
}

/// Progress of an ingest as the bar shows it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    /// Documents in the jobs.
    pub total: u64,
    /// Documents ready or failed.
    pub done: u64,
    /// Documents failed.
    pub failed: u64,
    /// Chunks embedded.
    pub chunks: u64,
}

/// A bar over documents showing chunks, rate and ETA.
pub fn ingest_bar(total: u64) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{spinner} {bar:30} {pos}/{len} documents · {msg} · {per_sec} · ETA {eta}",
        )
        .context("progress template")?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}

/// Updates the bar from `p`.
pub fn show(bar: &ProgressBar, p: Progress, started: std::time::Instant) {
    bar.set_length(p.total);
    bar.set_position(p.done);
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    bar.set_message(format!(
        "{} chunks ({:.0}/s) · {} failed",
        p.chunks,
        p.chunks as f64 / secs,
        p.failed
    ));
}

/// A bar over a reindex: documents re-embedded, chunks, phase.
pub fn reindex_bar() -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} {bar:30} {pos}/{len} documents · {msg} · ETA {eta}",
        )
        .context("progress template")?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}

/// Updates a reindex bar from a workflow's JSON; returns the run's status.
pub fn show_workflow(bar: &ProgressBar, wf: &serde_json::Value) -> String {
    let p = &wf["progress"];
    bar.set_length(p["documents"].as_u64().unwrap_or(0));
    bar.set_position(p["done"].as_u64().unwrap_or(0));
    bar.set_message(format!(
        "{} chunks · {}",
        p["chunks"].as_u64().unwrap_or(0),
        p["phase"].as_str().unwrap_or("planning")
    ));
    wf["status"].as_str().unwrap_or("").to_owned()
}

/// Ends a reindex: prints the outcome, fails on a failed run.
pub fn finish_reindex(
    bar: &ProgressBar,
    wf: &serde_json::Value,
    started: Instant,
) -> anyhow::Result<()> {
    bar.finish();
    match wf["status"].as_str() {
        Some("completed") => {
            println!(
                "reindexed: generation {}, {} documents, {} chunks in {:.1} s",
                wf["output"]["generation"],
                wf["output"]["documents"].as_u64().unwrap_or(0),
                wf["output"]["chunks"].as_u64().unwrap_or(0),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        other => anyhow::bail!(
            "reindex {}: {}",
            other.unwrap_or("?"),
            wf["error"].as_str().unwrap_or("no error recorded")
        ),
    }
}

/// `groundwork reindex`.
pub fn run_reindex(
    config: Config,
    target: &Target,
    kb: &str,
    model: Option<&Path>,
    chunking: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    let model = match model {
        Some(m) if m.is_dir() => Some(std::fs::canonicalize(m)?.display().to_string()),
        Some(m) => Some(m.display().to_string()),
        None => None,
    };
    match &target.server {
        Some(url) => remote::reindex(url, target.api_key.clone(), kb, model, chunking),
        None => local::reindex(config, &target.tenant, kb, model, chunking),
    }
}

/// Reads the configuration, applying the global overrides.
pub fn load_config(
    path: Option<&Path>,
    data_dir: Option<&Path>,
    model: Option<&Path>,
) -> anyhow::Result<Config> {
    let mut config = Config::load(path)?;
    if let Some(d) = data_dir {
        config.data_dir = d.to_owned();
    }
    if let Some(m) = model {
        config.embed.model = Some(m.to_owned());
    }
    Ok(config)
}

/// Runs a command that may go local or remote.
pub fn run_kb(config: Config, target: &Target, cmd: KbCommand) -> anyhow::Result<()> {
    match &target.server {
        Some(url) => remote::kb(url, target.api_key.clone(), cmd),
        None => local::kb(config, &target.tenant, cmd),
    }
}

/// `groundwork ingest`.
pub fn run_ingest(
    config: Config,
    target: &Target,
    kb: &str,
    paths: &[PathBuf],
) -> anyhow::Result<()> {
    let files = collect_files(paths)?;
    if files.is_empty() {
        anyhow::bail!("no files found");
    }
    match &target.server {
        Some(url) => remote::ingest(url, target.api_key.clone(), kb, &files),
        None => local::ingest(config, &target.tenant, kb, &files),
    }
}

/// `groundwork search`.
pub fn run_search(
    config: Config,
    target: &Target,
    kb: &str,
    query: &str,
    top_k: usize,
    mode: &str,
    json: bool,
) -> anyhow::Result<()> {
    let answer = match &target.server {
        Some(url) => remote::search(url, target.api_key.clone(), kb, query, top_k, mode)?,
        None => local::search(config, &target.tenant, kb, query, top_k, mode)?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    if results.is_empty() {
        println!("no results");
    }
    for (i, r) in results.iter().enumerate() {
        let pages = match (r["page_start"].as_u64(), r["page_end"].as_u64()) {
            (Some(a), Some(b)) if a == b => format!(" p.{a}"),
            (Some(a), Some(b)) => format!(" pp.{a}-{b}"),
            _ => String::new(),
        };
        let headings: Vec<&str> = r["heading_path"]
            .as_array()
            .map(|a| a.iter().filter_map(|h| h.as_str()).collect())
            .unwrap_or_default();
        let text = r["text"].as_str().unwrap_or_default();
        let snippet: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let snippet: String = snippet.chars().take(240).collect();
        println!(
            "{}. [{:.4}] {}{}{}\n   {}\n",
            i + 1,
            r["score"].as_f64().unwrap_or_default(),
            r["document_name"].as_str().unwrap_or_default(),
            pages,
            if headings.is_empty() {
                String::new()
            } else {
                format!(" › {}", headings.join(" › "))
            },
            snippet
        );
    }
    Ok(())
}

/// `groundwork keys`.
pub fn run_keys(config: Config, cmd: KeysCommand) -> anyhow::Result<()> {
    local::keys(config, cmd)
}

/// `groundwork migrate --from DATA_DIR --to URL`: a bar over rows, then a line per table.
pub fn migrate(mut config: Config, from: &Path, to: String) -> anyhow::Result<()> {
    use groundwork::store::copy::Progress as Copy;
    config.store.url = to;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} rows · {msg} · ETA {eta}")
            .context("progress template")?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let reports = groundwork::app::migrate(from, &config, &mut |p| match p {
        Copy::Total(n) => bar.set_length(n),
        Copy::Table(t) => bar.set_message(t),
        Copy::Rows(n) => bar.inc(n),
        Copy::Blobs(n) => {
            bar.set_message("blobs");
            bar.inc_length(n);
        }
    });
    bar.finish_and_clear();
    let reports = reports?;
    println!(
        "{:<20} {:>10} {:>10} {:>10}  checksum",
        "table", "source", "target", "inserted"
    );
    for r in &reports {
        println!(
            "{:<20} {:>10} {:>10} {:>10}  {}",
            r.table, r.source_rows, r.target_rows, r.inserted, r.checksum
        );
    }
    let inserted: u64 = reports.iter().map(|r| r.inserted).sum();
    let rows: u64 = reports.iter().map(|r| r.source_rows).sum();
    eprintln!(
        "verified: {rows} rows in {} tables match (counts and checksums); {inserted} inserted in {:.1} s",
        reports.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
