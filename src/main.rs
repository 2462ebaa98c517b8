//! The `groundwork` binary: argument parsing, logging set-up and the command dispatch.
//! All behaviour lives in the library; `anyhow` is used here only.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use groundwork::embed::ModelDir;
use groundwork::index::hybrid::HybridParams;
use groundwork::index::SearchMode;
use groundwork::ingest::isolate;

mod cli;

#[derive(Parser)]
#[command(
    name = "groundwork",
    version,
    about = "Self-hosted knowledge assistant"
)]
struct Cli {
    /// Embedding model folder (sentence-transformers layout).
    #[arg(long, global = true, env = "GROUNDWORK_EMBED_MODEL")]
    model: Option<PathBuf>,
    /// Configuration file (default: `groundwork.toml` when present).
    #[arg(long, global = true, env = "GROUNDWORK_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(cli::LocalArgs),
    /// Ingest files and folders (recursively) into a knowledge base, with a progress bar.
    Ingest {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Knowledge base (created if missing).
        #[arg(long)]
        kb: String,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Search a knowledge base.
    Search {
        /// The question.
        query: String,
        /// Knowledge base.
        #[arg(long)]
        kb: String,
        /// Results.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// dense, bm25 or hybrid.
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Re-embed and/or re-chunk a knowledge base into a new index generation, switched
    /// atomically when complete (search keeps answering meanwhile). `--model` names the new
    /// model (a folder, or a name from `[embed.models]`); the server's default model is not
    /// changed.
    Reindex {
        /// Knowledge base.
        #[arg(long)]
        kb: String,
        /// New chunk size in tokens.
        #[arg(long)]
        chunk_size: Option<u32>,
        /// New overlap in tokens (default: an eighth of the chunk size).
        #[arg(long, requires = "chunk_size")]
        overlap: Option<u32>,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Manage knowledge bases.
    Kb {
        #[command(subcommand)]
        command: cli::KbCommand,
        #[command(flatten)]
        target: cli::Target,
    },
    /// Manage API keys (on the data directory).
    Keys {
        #[command(subcommand)]
        command: cli::KeysCommand,
    },
    /// Copy a whole SQLite deployment (records and uploaded bytes) into PostgreSQL, verifying
    /// row counts and checksums per table; safe to run again.
    Migrate {
        /// The data directory of the deployment to copy (its server stopped).
        #[arg(long)]
        from: PathBuf,
        /// The target database (`postgres://...`); `[store]` options such as TLS apply.
        #[arg(long)]
        to: String,
    },
    /// Evaluate retrieval on a BEIR-format data set.
    Eval {
        /// Folder with corpus.jsonl, queries.jsonl and qrels/.
        #[arg(long)]
        dataset: PathBuf,
        /// Qrels split.
        #[arg(long, default_value = "test")]
        split: String,
        /// Retrieval mode(s).
        #[arg(long, value_enum, default_value = "all")]
        mode: ModeArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Where corpus embeddings are cached.
        #[arg(long, default_value = "data/.groundwork/eval-cache")]
        cache_dir: PathBuf,
        /// RRF rank constant.
        #[arg(long, default_value_t = 60.0)]
        rrf_k: f32,
        /// Weight of the dense ranking in hybrid mode.
        #[arg(long, default_value_t = 1.0)]
        dense_weight: f32,
        /// Weight of the BM25 ranking in hybrid mode.
        #[arg(long, default_value_t = 1.0)]
        bm25_weight: f32,
        /// Arithmetic of the encoder (`auto`, `int8`, `f32`).
        #[arg(long, value_enum, default_value = "auto")]
        precision: PrecisionArg,
        /// Also rerank each mode's top candidates with this cross-encoder folder
        /// (sentence-transformers `CrossEncoder`, BERT-family) and report the nDCG change.
        #[arg(long)]
        rerank: Option<PathBuf>,
        /// Candidates per query the reranker orders.
        #[arg(long, default_value_t = 50)]
        rerank_candidates: usize,
    },
    /// Extract text from files and report what came out (type, pages, characters or error).
    Extract {
        files: Vec<PathBuf>,
        /// Password for encrypted PDFs.
        #[arg(long)]
        password: Option<String>,
        /// Time bound per PDF, seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// One JSON object per file instead of a table.
        #[arg(long)]
        json: bool,
        /// Print the extracted text too.
        #[arg(long)]
        text: bool,
    },
    /// Show how a file is chunked.
    Chunk {
        file: PathBuf,
        #[arg(long, default_value_t = 254)]
        max_tokens: usize,
        #[arg(long, default_value_t = 32)]
        overlap: usize,
    },
    /// Print embeddings of the given texts as JSON.
    Embed { texts: Vec<String> },
    /// Answer quality: ask a SQuAD-style data set's questions through the agent's chat turn.
    EvalAnswers(cli::AnswerArgs),
    /// Internal: the isolated PDF extractor (reads a request on stdin).
    #[command(hide = true)]
    ExtractWorker,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Dense,
    Bm25,
    Hybrid,
    All,
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    Auto,
    Int8,
    F32,
}

impl From<PrecisionArg> for groundwork::embed::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Auto => Self::Auto,
            PrecisionArg::Int8 => Self::Int8,
            PrecisionArg::F32 => Self::F32,
        }
    }
}

impl ModeArg {
    fn modes(self) -> Vec<SearchMode> {
        match self {
            ModeArg::Dense => vec![SearchMode::Dense],
            ModeArg::Bm25 => vec![SearchMode::Bm25],
            ModeArg::Hybrid => vec![SearchMode::Hybrid],
            ModeArg::All => vec![SearchMode::Bm25, SearchMode::Dense, SearchMode::Hybrid],
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings, and Groundwork's own info).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,groundwork=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::ExtractWorker = cli.command {
        let code = isolate::run_worker(std::io::stdin().lock(), std::io::stdout().lock());
        std::process::exit(code);
    }
    groundwork::runtime::tune_allocator();
    init_logging();
    let model_dir = || -> anyhow::Result<PathBuf> {
        Ok(match &cli.model {
            Some(p) => p.clone(),
            None => ModelDir::default_path(&std::env::current_dir()?),
        })
    };
    let config = || {
        cli::load_config(
            cli.config.as_deref(),
            cli.data_dir.as_deref(),
            cli.model.as_deref(),
        )
    };
    // Fault injection for the crash tests (`FAILPOINTS=name=action`); a no-op unless built
    // with fail points (test builds).
    let _failpoints = fail::FailScenario::setup();
    match cli.command {
        Command::Serve(args) => cli::serve(config()?, args)?,
        Command::EvalAnswers(args) => cli::eval_answers(config()?, args)?,
        Command::Ingest {
            ref paths,
            ref kb,
            ref target,
        } => cli::run_ingest(config()?, target, kb, paths)?,
        Command::Search {
            ref query,
            ref kb,
            top_k,
            ref mode,
            json,
            ref target,
        } => cli::run_search(config()?, target, kb, query, top_k, mode, json)?,
        Command::Kb {
            command,
            ref target,
        } => cli::run_kb(config()?, target, command)?,
        Command::Reindex {
            ref kb,
            chunk_size,
            overlap,
            ref target,
        } => {
            // `--model` names the reindex's target here, not the server's default model.
            let config = cli::load_config(cli.config.as_deref(), cli.data_dir.as_deref(), None)?;
            let chunking = chunk_size.map(|n| (n, overlap.unwrap_or(n / 8)));
            cli::run_reindex(config, target, kb, cli.model.as_deref(), chunking)?
        }
        Command::Keys { command } => cli::run_keys(config()?, command)?,
        Command::Migrate { from, to } => cli::migrate(config()?, &from, to)?,
        Command::Eval {
            dataset,
            split,
            mode,
            json,
            cache_dir,
            rrf_k,
            dense_weight,
            bm25_weight,
            precision,
            rerank,
            rerank_candidates,
        } => {
            let modes = mode.modes();
            let fusion = HybridParams {
                rrf_k,
                dense_weight,
                bm25_weight,
                ..HybridParams::default()
            };
            cli::tools::eval(
                (&model_dir()?, precision.into()),
                (dataset, split),
                modes,
                cache_dir,
                fusion,
                json,
                rerank.map(|dir| (dir, rerank_candidates)),
            )?
        }
        Command::Extract {
            files,
            password,
            timeout,
            json,
            text,
        } => cli::tools::extract_files(&files, password, Duration::from_secs(timeout), json, text)?,
        Command::Chunk {
            file,
            max_tokens,
            overlap,
        } => cli::tools::chunk_file(&model_dir()?, &file, max_tokens, overlap)?,
        Command::Embed { texts } => cli::tools::embed_texts(&model_dir()?, &texts)?,
        Command::ExtractWorker => unreachable!("handled above"),
    }
    Ok(())
}
