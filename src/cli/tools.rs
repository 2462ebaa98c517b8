//! The offline tools of the binary: `eval` (retrieval quality on a BEIR folder), `extract`,
//! `chunk` and `embed` (one stage of the pipeline on local files, for inspection). They need
//! no data directory and no server; output formatting only, the work is the library's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use groundwork::embed::{BertEmbedder, EmbedOptions, Embedder, ModelDir, Precision};
use groundwork::eval::{self, EvalConfig};
use groundwork::index::dense::HnswParams;
use groundwork::index::hybrid::HybridParams;
use groundwork::index::{CollectionOptions, SearchMode};
use groundwork::ingest::isolate::Isolation;
use groundwork::ingest::{extract, Chunker, ChunkingOptions, ExtractOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// `groundwork eval`: nDCG@10, recall and MRR of each mode on a BEIR folder.
pub fn eval(
    (model, precision): (&Path, Precision),
    (dataset, split): (PathBuf, String),
    modes: Vec<SearchMode>,
    cache_dir: PathBuf,
    fusion: HybridParams,
    json: bool,
    rerank: Option<(PathBuf, usize)>,
) -> anyhow::Result<()> {
    let rerank = match rerank {
        Some((dir, candidates)) => Some(eval::RerankEval {
            model: std::sync::Arc::new(
                groundwork::embed::CrossEncoder::load(&dir)
                    .with_context(|| format!("reranker {}", dir.display()))?,
            ),
            candidates,
        }),
        None => None,
    };
    let embedder = BertEmbedder::load(
        model,
        EmbedOptions {
            precision,
            ..EmbedOptions::default()
        },
    )?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "embedding corpus {bar:40} {pos}/{len} passages · {per_sec} · ETA {eta}",
        )
        .context("progress template")?,
    );
    let progress_bar = bar.clone();
    let config = EvalConfig {
        dataset,
        split,
        modes,
        cache_dir,
        options: CollectionOptions {
            hnsw: HnswParams::default(),
            hybrid: fusion,
            ..CollectionOptions::default()
        },
        progress: Some(Box::new(move |done, total| {
            progress_bar.set_length(total as u64);
            progress_bar.set_position(done as u64);
        })),
        rerank,
    };
    let report = eval::run(&config, &embedder)?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", eval::render_table(&report));
    }
    Ok(())
}

/// `groundwork extract`: each file through the isolated extractor; a line per file.
pub fn extract_files(
    files: &[PathBuf],
    password: Option<String>,
    timeout: Duration,
    json: bool,
    text: bool,
) -> anyhow::Result<()> {
    let mut isolation = Isolation::current_exe()?;
    isolation.timeout = timeout;
    let options = ExtractOptions {
        isolation,
        password,
    };
    let mut out = std::io::stdout().lock();
    for file in files {
        let bytes = fs_err::read(file)?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let result = extract(&bytes, name.as_deref(), &options);
        if json {
            let line = match &result {
                Ok(e) => serde_json::json!({
                    "file": file, "status": "ok", "media_type": e.media_type,
                    "pages": e.page_count(), "chars": e.text.chars().count(),
                    "non_whitespace_chars": e.text.chars().filter(|c| !c.is_whitespace()).count(),
                    "warnings": e.warnings.len(), "engine": e.engine,
                    "ocr_pages": e.ocr_pages.len(), "tables": e.tables.len(),
                }),
                Err(err) => serde_json::json!({
                    "file": file, "status": "error", "code": err.code(), "error": err.to_string(),
                }),
            };
            writeln!(out, "{line}")?;
        } else {
            match &result {
                Ok(e) => writeln!(
                    out,
                    "{}\t{:?}\t{} pages\t{} chars\t{}{}",
                    file.display(),
                    e.media_type,
                    e.page_count(),
                    e.text.chars().count(),
                    e.engine,
                    if e.ocr_pages.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} pages OCR'd)", e.ocr_pages.len())
                    }
                )?,
                Err(err) => writeln!(out, "{}\terror\t{}\t{err}", file.display(), err.code())?,
            }
        }
        if text {
            if let Ok(e) = &result {
                writeln!(out, "{}", e.text)?;
            }
        }
    }
    Ok(())
}

/// `groundwork chunk`: a file's chunks with their offsets, tokens, pages and headings.
pub fn chunk_file(
    model: &Path,
    file: &Path,
    max_tokens: usize,
    overlap: usize,
) -> anyhow::Result<()> {
    let dir = ModelDir::open(model)?;
    let tokenizer = groundwork::embed::TextTokenizer::from_file(
        &dir.path.join("tokenizer.json"),
        dir.max_seq_length,
    )?;
    let bytes = fs_err::read(file)?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let options = ExtractOptions {
        isolation: Isolation::current_exe()?,
        password: None,
    };
    let doc = extract(&bytes, name.as_deref(), &options)?;
    let chunker = Chunker::new(&tokenizer, ChunkingOptions::new(max_tokens, overlap));
    for c in chunker.chunk(&file.display().to_string(), &doc) {
        println!(
            "#{} bytes {}..{} tokens {} pages {:?} path {:?}\n{}\n",
            c.ordinal, c.start, c.end, c.tokens, c.pages, c.heading_path, c.text
        );
    }
    Ok(())
}

/// `groundwork embed`: the vectors of `texts` as JSON.
pub fn embed_texts(model: &Path, texts: &[String]) -> anyhow::Result<()> {
    if texts.is_empty() {
        bail!("give at least one text to embed");
    }
    let embedder = BertEmbedder::load(model, EmbedOptions::default())?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs)?;
    println!(
        "{}",
        serde_json::json!({"model": embedder.model_id(), "vectors": vectors})
    );
    Ok(())
}
