//! Retrieval evaluation on BEIR-format data sets.
//!
//! Owns reading a BEIR folder ([`beir`]), the ranking metrics ([`metrics`]) and the evaluation
//! run ([`run`]): embed the corpus (cached on disk, keyed by model and corpus content), index it
//! in a [`Collection`], run every query in each mode and score the rankings.
//!
//! Must never tune anything on the data it reports: parameters come from the caller.

pub mod answers;
pub mod beir;
pub mod metrics;

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::embed::{EmbedError, Embedder};
use crate::index::collection::NewPoint;
use crate::index::{
    Collection, CollectionOptions, Filter, IndexError, IndexStamp, PointMeta, SearchMode,
    SearchRequest,
};
use crate::util::sha256_hex;
use beir::Dataset;
use metrics::Scores;

/// Errors of an evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The data set folder is missing files or holds malformed lines.
    #[error("data set: {0}")]
    Dataset(String),
    /// Embedding failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// Indexing or searching failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The embedding cache could not be written.
    #[error("embedding cache {path}: {source}")]
    Cache {
        /// The cache file.
        path: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// What to evaluate.
pub struct EvalConfig {
    /// BEIR folder.
    pub dataset: PathBuf,
    /// Qrels split (`train`, `dev`, `test`).
    pub split: String,
    /// Modes to run.
    pub modes: Vec<SearchMode>,
    /// Where corpus embeddings are cached.
    pub cache_dir: PathBuf,
    /// Index settings.
    pub options: CollectionOptions,
    /// Called with (done, total) while the corpus is embedded.
    pub progress: Option<Box<dyn Fn(usize, usize) + Send + Sync>>,
}

/// Metrics and timings of one mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// Dense, BM25 or hybrid.
    pub mode: SearchMode,
    /// Its retrieval metrics.
    #[serde(flatten)]
    pub scores: Scores,
    /// Mean query latency (embedding the query included for dense and hybrid), milliseconds.
    pub query_ms_mean: f64,
    /// 99th-percentile query latency, milliseconds.
    pub query_ms_p99: f64,
}

/// A whole evaluation run.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Data set name.
    pub dataset: String,
    /// Qrels split.
    pub split: String,
    /// Embedding model id.
    pub model: String,
    /// The encoder's arithmetic (`f32` or `int8`).
    pub precision: crate::embed::Precision,
    /// Corpus size.
    pub documents: usize,
    /// Judged queries.
    pub queries: usize,
    /// Seconds spent embedding the corpus (0 when served from the cache).
    pub embed_seconds: f64,
    /// Whether the corpus embeddings came from the cache.
    pub embeddings_cached: bool,
    /// Seconds spent building the index (graph and BM25).
    pub build_seconds: f64,
    /// One report per mode, in the order asked.
    pub modes: Vec<ModeReport>,
}

/// Runs the evaluation.
pub fn run(config: &EvalConfig, embedder: &dyn Embedder) -> Result<EvalReport> {
    let data = Dataset::load(&config.dataset, &config.split)?;
    let texts: Vec<String> = data.corpus.iter().map(|d| d.passage()).collect();
    let (vectors, embed_seconds, cached) = corpus_vectors(config, embedder, &data, &texts)?;

    let started = Instant::now();
    let stamp = IndexStamp {
        model_id: embedder.model_id().to_owned(),
        dimension: embedder.dimension(),
    };
    let mut collection = Collection::new(stamp, config.options);
    let points: Vec<NewPoint<'_>> = data
        .corpus
        .iter()
        .zip(vectors)
        .zip(&texts)
        .enumerate()
        .map(|(i, ((doc, vector), text))| NewPoint {
            meta: PointMeta {
                chunk_id: i as u64,
                document_id: doc.id.clone(),
                kb: "eval".into(),
                metadata: Default::default(),
            },
            vector,
            text,
        })
        .collect();
    collection.upsert(embedder.model_id(), points)?;
    let build_seconds = started.elapsed().as_secs_f64();

    let queries: Vec<&beir::Query> = data.judged_queries().collect();
    let query_texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
    let embed_started = Instant::now();
    let query_vectors = embedder.embed(&query_texts)?;
    let query_embed_ms = embed_started.elapsed().as_secs_f64() * 1e3 / queries.len().max(1) as f64;

    let filter = Filter::default();
    let mut modes = Vec::new();
    for &mode in &config.modes {
        let mut runs = Vec::with_capacity(queries.len());
        let mut latencies = Vec::with_capacity(queries.len());
        for (q, v) in queries.iter().zip(&query_vectors) {
            let t = Instant::now();
            let hits = collection.search(&SearchRequest {
                vector: Some(v),
                text: &q.text,
                k: 100,
                mode,
                filter: &filter,
            })?;
            let mut ms = t.elapsed().as_secs_f64() * 1e3;
            if mode != SearchMode::Bm25 {
                ms += query_embed_ms;
            }
            latencies.push(ms);
            let ranked: Vec<&str> = hits
                .iter()
                .map(|h| data.corpus[h.chunk_id as usize].id.as_str())
                .collect();
            runs.push((q.id.as_str(), ranked));
        }
        latencies.sort_by(f64::total_cmp);
        modes.push(ModeReport {
            mode,
            scores: metrics::evaluate(&runs, &data.qrels),
            query_ms_mean: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
            query_ms_p99: metrics::percentile(&latencies, 0.99),
        });
    }
    Ok(EvalReport {
        dataset: config.dataset.display().to_string(),
        split: config.split.clone(),
        model: embedder.model_id().to_owned(),
        precision: embedder.precision(),
        documents: data.corpus.len(),
        queries: queries.len(),
        embed_seconds,
        embeddings_cached: cached,
        build_seconds,
        modes,
    })
}

/// Corpus embeddings from the cache, or computed and cached. The cache key covers the model id
/// and every passage's text, so any change to either re-embeds.
fn corpus_vectors(
    config: &EvalConfig,
    embedder: &dyn Embedder,
    data: &Dataset,
    texts: &[String],
) -> Result<(Vec<Vec<f32>>, f64, bool)> {
    let dim = embedder.dimension();
    let mut key = embedder.model_id().as_bytes().to_vec();
    if embedder.precision() != crate::embed::Precision::F32 {
        key.extend_from_slice(format!("|{:?}", embedder.precision()).as_bytes());
    }
    for t in texts {
        key.extend_from_slice(t.as_bytes());
        key.push(0);
    }
    let path = config
        .cache_dir
        .join(format!("{}-{}.f32", data.name, &sha256_hex(&key)[..16]));
    if let Ok(bytes) = std::fs::read(&path) {
        if bytes.len() == texts.len() * dim * 4 {
            let flat: Vec<f32> = crate::util::f32s_from_le(&bytes);
            return Ok((flat.chunks(dim).map(<[f32]>::to_vec).collect(), 0.0, true));
        }
    }
    let started = Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    for block in texts.chunks(256) {
        let refs: Vec<&str> = block.iter().map(String::as_str).collect();
        vectors.extend(embedder.embed(&refs)?);
        if let Some(progress) = &config.progress {
            progress(vectors.len(), texts.len());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cache_err = |source| EvalError::Cache {
        path: path.display().to_string(),
        source,
    };
    fs_err::create_dir_all(&config.cache_dir).map_err(cache_err)?;
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    crate::util::write_atomic(&path, bytemuck::cast_slice(&flat)).map_err(cache_err)?;
    Ok((vectors, seconds, false))
}

/// Renders a report as an aligned text table.
pub fn render_table(report: &EvalReport) -> String {
    let mut out = format!(
        "dataset {} split {} · {} documents · {} queries · model {} ({:?})\n\
         corpus embedding {:.1} s{} · index build {:.2} s\n\n",
        report.dataset,
        report.split,
        report.documents,
        report.queries,
        report.model,
        report.precision,
        report.embed_seconds,
        if report.embeddings_cached {
            " (cached)"
        } else {
            ""
        },
        report.build_seconds,
    );
    out.push_str("mode      nDCG@10  recall@10  recall@100  MRR@10  query ms (mean / p99)\n");
    for m in &report.modes {
        out.push_str(&format!(
            "{:<8}  {:>7.4}  {:>9.4}  {:>10.4}  {:>6.4}  {:>8.2} / {:.2}\n",
            format!("{:?}", m.mode).to_lowercase(),
            m.scores.ndcg_at_10,
            m.scores.recall_at_10,
            m.scores.recall_at_100,
            m.scores.mrr_at_10,
            m.query_ms_mean,
            m.query_ms_p99,
        ));
    }
    out
}
