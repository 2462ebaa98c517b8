//! Retrieval evaluation on BEIR-format data sets.
//!
//! Owns reading a BEIR folder ([`beir`]), the ranking metrics ([`metrics`]) and the evaluation
//! run ([`run`]): embed the corpus (cached on disk, keyed by model and corpus content), index it
//! in a [`Collection`], run every query in each mode and score the rankings — and, given a
//! cross-encoder, the same rankings with their top candidates reranked.
//!
//! Must never tune anything on the data it reports: parameters come from the caller.

pub mod answers;
pub mod beir;
pub mod metrics;

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::embed::{CrossEncoder, EmbedError, Embedder};
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
    /// Also rerank each mode's top candidates with this cross-encoder.
    pub rerank: Option<RerankEval>,
}

/// The rerank stage of an evaluation.
pub struct RerankEval {
    /// The cross-encoder.
    pub model: std::sync::Arc<CrossEncoder>,
    /// Candidates of each ranking it orders (the rest keep their places after them).
    pub candidates: usize,
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
    /// This mode's ranking with its top candidates reranked (when a reranker was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reranked: Option<RerankedReport>,
}

/// A mode's ranking after the rerank stage.
#[derive(Debug, Clone, Serialize)]
pub struct RerankedReport {
    /// The cross-encoder.
    pub model: String,
    /// Candidates reranked per query.
    pub candidates: usize,
    /// Metrics of the reranked ranking.
    #[serde(flatten)]
    pub scores: Scores,
    /// nDCG@10 reranked minus nDCG@10 of the mode alone.
    pub ndcg_at_10_change: f64,
    /// Mean time the reranker took per query, milliseconds.
    pub rerank_ms_mean: f64,
    /// 99th-percentile of that time, milliseconds.
    pub rerank_ms_p99: f64,
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
        let mut reranked_runs = Vec::new();
        let mut rerank_ms = Vec::new();
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
            let ranked: Vec<usize> = hits.iter().map(|h| h.chunk_id as usize).collect();
            if let Some(r) = &config.rerank {
                let t = Instant::now();
                let order = rerank_order(r, &q.text, &ranked, &texts)?;
                rerank_ms.push(t.elapsed().as_secs_f64() * 1e3);
                let ids = order.iter().map(|&i| data.corpus[i].id.as_str()).collect();
                reranked_runs.push((q.id.as_str(), ids));
            }
            let ids = ranked.iter().map(|&i| data.corpus[i].id.as_str()).collect();
            runs.push((q.id.as_str(), ids));
        }
        latencies.sort_by(f64::total_cmp);
        rerank_ms.sort_by(f64::total_cmp);
        let scores = metrics::evaluate(&runs, &data.qrels);
        let reranked = config.rerank.as_ref().map(|r| {
            let after = metrics::evaluate(&reranked_runs, &data.qrels);
            RerankedReport {
                model: r.model.model_id().to_owned(),
                candidates: r.candidates,
                ndcg_at_10_change: after.ndcg_at_10 - scores.ndcg_at_10,
                scores: after,
                rerank_ms_mean: rerank_ms.iter().sum::<f64>() / rerank_ms.len().max(1) as f64,
                rerank_ms_p99: metrics::percentile(&rerank_ms, 0.99),
            }
        });
        modes.push(ModeReport {
            mode,
            scores,
            query_ms_mean: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
            query_ms_p99: metrics::percentile(&latencies, 0.99),
            reranked,
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

/// `ranked` (corpus indexes, best first) with its first `candidates` in the cross-encoder's
/// order for `query`, the rest after them as they were.
fn rerank_order(
    r: &RerankEval,
    query: &str,
    ranked: &[usize],
    texts: &[String],
) -> Result<Vec<usize>> {
    let n = r.candidates.min(ranked.len());
    let passages: Vec<&str> = ranked[..n].iter().map(|&i| texts[i].as_str()).collect();
    let scores = r.model.score(query, &passages)?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    Ok(order
        .into_iter()
        .map(|i| ranked[i])
        .chain(ranked[n..].iter().copied())
        .collect())
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
        if let Some(r) = &m.reranked {
            out.push_str(&format!(
                "{:<8}  {:>7.4}  {:>9.4}  {:>10.4}  {:>6.4}  {:>8.2} / {:.2}  (rerank of top {}; nDCG@10 {:+.4})\n",
                "+rerank",
                r.scores.ndcg_at_10,
                r.scores.recall_at_10,
                r.scores.recall_at_100,
                r.scores.mrr_at_10,
                r.rerank_ms_mean,
                r.rerank_ms_p99,
                r.candidates,
                r.ndcg_at_10_change,
            ));
        }
    }
    if let Some(r) = report.modes.iter().find_map(|m| m.reranked.as_ref()) {
        out.push_str(&format!(
            "\nreranker {} (its own time per query)\n",
            r.model
        ));
    }
    out
}
