//! Retrieval benchmarks, written as JSON to `bench-results/retrieval.json` and compared with the
//! Python peers (sentence-transformers, hnswlib) by `benches/run.sh` in the same run.
//!
//! Measures: embedding throughput on 512 passages of 200–250 words; chunking MB/s on the Rust
//! book; index build vectors/s and search QPS / p50 / p99 / recall@10 at several `ef` on 10k and
//! 100k vectors (real SciFact embeddings plus seeded noisy copies), one and two threads.
//! The vectors, queries and passages are written beside the results so the peers read the same.
//!
//! `cargo bench --bench retrieval [-- --quick]` (quick: 10k only, fewer passages).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod support;

use groundwork::embed::{BertEmbedder, EmbedOptions, Embedder, Int8Kernel, Precision};
use groundwork::index::dense::{DenseIndex, HnswParams};
use groundwork::index::points::{Filter, PointMeta, Points};
use groundwork::ingest::extract::{Extracted, Heading};
use groundwork::ingest::{Chunker, ChunkingOptions, MediaType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::{json, Value};
use support::{percentile, root};

fn out_dir() -> PathBuf {
    let dir = root().join("bench-results");
    std::fs::create_dir_all(&dir).expect("bench-results");
    dir
}

/// 200–250-word passages: SciFact abstracts cut to a seeded length (synthetic text without
/// the shared data).
fn passages(n: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(42);
    let corpus = root().join("../shared/eval/scifact/corpus.jsonl");
    let mut words: Vec<String> = Vec::new();
    if let Ok(text) = std::fs::read_to_string(corpus) {
        for line in text.lines().take(4000) {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                words.extend(
                    v["text"]
                        .as_str()
                        .unwrap_or("")
                        .split_whitespace()
                        .map(str::to_owned),
                );
            }
        }
    }
    if words.len() < 1000 {
        let vocab =
            "the index stores vectors of passages and the model embeds text into them while \
                     queries retrieve the nearest neighbours by cosine similarity over the graph"
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>();
        words = (0..100_000)
            .map(|i| vocab[(i * 7 + i / 3) % vocab.len()].clone())
            .collect();
    }
    (0..n)
        .map(|_| {
            let len = rng.random_range(200..=250);
            let start = rng.random_range(0..words.len() - len);
            words[start..start + len].join(" ")
        })
        .collect()
}

fn bench_embedding(quick: bool) -> Value {
    let model = root().join("models/all-MiniLM-L6-v2");
    let texts = passages(if quick { 128 } else { 512 });
    std::fs::write(
        out_dir().join("passages.json"),
        serde_json::to_vec(&texts).expect("json"),
    )
    .expect("write passages");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut runs = Vec::new();
    // f32 on the GEMM kernels, then int8 on every integer kernel this CPU has (the fastest is
    // the default; the others are the fallbacks of CPUs without it).
    let mut configs: Vec<(Precision, Option<Int8Kernel>, usize)> =
        vec![(Precision::F32, None, 1), (Precision::F32, None, 2)];
    let kernels = Int8Kernel::available();
    // The portable loop is the reference of the tests, not a kernel any x86-64 CPU runs.
    for (i, kernel) in kernels
        .into_iter()
        .filter(|k| *k != Int8Kernel::Portable)
        .enumerate()
    {
        if i == 0 {
            configs.push((Precision::Int8, Some(kernel), 1));
        }
        configs.push((Precision::Int8, Some(kernel), 2));
    }
    let mut exact: Vec<Vec<f32>> = Vec::new();
    for (precision, kernel, concurrent) in configs {
        let options = EmbedOptions {
            batch_size: 32,
            max_seq_length: None,
            concurrent_batches: concurrent,
            precision,
            int8_kernel: kernel,
            ..EmbedOptions::default()
        };
        let embedder =
            BertEmbedder::load(&model, options).expect("load model (run models/fetch.py)");
        embedder.embed(&refs[..32]).expect("warm-up");
        let mut rates = Vec::new();
        let mut vectors = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            vectors = embedder.embed(&refs).expect("embed");
            rates.push(refs.len() as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let name = kernel.map_or("f32", Int8Kernel::name);
        let mut run = json!({"precision": precision, "kernel": name,
            "concurrent_batches": concurrent, "passages_per_s": rates[1], "runs": rates});
        if precision == Precision::F32 {
            exact = vectors;
        } else {
            let cos: Vec<f64> = exact
                .iter()
                .zip(&vectors)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum())
                .collect();
            let min = cos.iter().copied().fold(1.0, f64::min);
            let mean = cos.iter().sum::<f64>() / cos.len() as f64;
            run["cosine_to_f32"] = json!({"min": min, "mean": mean});
        }
        eprintln!(
            "embedding, {name}, {concurrent} concurrent batch(es): {:.1} passages/s",
            rates[1]
        );
        runs.push(run);
    }
    let tokens: usize = {
        let embedder = BertEmbedder::load(&model, EmbedOptions::default()).expect("load");
        refs.iter()
            .map(|t| embedder.tokenizer().count(t).unwrap_or(0).min(254) + 2)
            .sum()
    };
    json!({"passages": refs.len(), "mean_tokens": tokens as f64 / refs.len() as f64, "batch_size": 32, "configs": runs})
}

fn bench_chunking() -> Value {
    let embedder = BertEmbedder::load(
        &root().join("models/all-MiniLM-L6-v2"),
        EmbedOptions::default(),
    )
    .expect("load model");
    let mut docs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root().join("../shared/docs/rust-book")) {
        for e in entries.flatten() {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                docs.push(t);
            }
        }
    }
    if docs.is_empty() {
        docs = passages(400)
            .chunks(4)
            .map(|c| format!("# Doc\n\n{}", c.join("\n\n")))
            .collect();
    }
    let extracted: Vec<Extracted> = docs
        .into_iter()
        .map(|text| {
            let headings: Vec<Heading> = text
                .match_indices("\n#")
                .map(|(i, _)| Heading {
                    level: 2,
                    title: String::new(),
                    offset: i + 1,
                })
                .collect();
            let mut e = Extracted::plain(MediaType::Markdown, text, "markdown");
            e.headings = headings;
            e
        })
        .collect();
    let bytes: usize = extracted.iter().map(|d| d.text.len()).sum();
    let chunker = Chunker::new(embedder.tokenizer(), ChunkingOptions::default());
    let t = Instant::now();
    let chunks: usize = extracted.iter().map(|d| chunker.chunk("d", d).len()).sum();
    let single = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _: usize = extracted
        .par_iter()
        .map(|d| chunker.chunk("d", d).len())
        .sum();
    let parallel = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    eprintln!(
        "chunking: {single:.2} MB/s (1 thread), {parallel:.2} MB/s (2 threads), {chunks} chunks"
    );
    json!({"bytes": bytes, "chunks": chunks, "mb_per_s_1_thread": single, "mb_per_s_2_threads": parallel})
}

/// Base vectors: the SciFact corpus embedded by our model (cached by `groundwork eval`'s cache
/// format under data/.groundwork/bench-cache), or seeded clustered vectors without the data.
fn base_vectors(dim: usize) -> Vec<Vec<f32>> {
    let cache = root().join("data/.groundwork/bench-cache/scifact-corpus.f32");
    if let Ok(bytes) = std::fs::read(&cache) {
        let flat: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        return flat.chunks(dim).map(<[f32]>::to_vec).collect();
    }
    let corpus = root().join("../shared/eval/scifact/corpus.jsonl");
    if let Ok(text) = std::fs::read_to_string(&corpus) {
        let docs: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                format!(
                    "{} {}",
                    v["title"].as_str().unwrap_or(""),
                    v["text"].as_str().unwrap_or("")
                )
            })
            .collect();
        eprintln!(
            "embedding {} SciFact passages once for the ANN benchmark (cached)...",
            docs.len()
        );
        let embedder = BertEmbedder::load(
            &root().join("models/all-MiniLM-L6-v2"),
            EmbedOptions::default(),
        )
        .expect("load model");
        let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs).expect("embed corpus");
        std::fs::create_dir_all(cache.parent().expect("parent")).expect("mkdir");
        let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
        std::fs::write(&cache, bytemuck::cast_slice::<f32, u8>(&flat)).expect("cache");
        return vectors;
    }
    let mut rng = StdRng::seed_from_u64(1);
    let centres: Vec<Vec<f32>> = (0..200)
        .map(|_| unit((0..dim).map(|_| rng.random::<f32>() - 0.5).collect()))
        .collect();
    (0..5000)
        .map(|i| noisy(&centres[i % 200], 0.05, &mut rng))
        .collect()
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    groundwork::embed::l2_normalize(&mut v);
    v
}

/// `v` plus Gaussian-ish noise of per-dimension scale `sigma`, renormalised.
fn noisy(v: &[f32], sigma: f32, rng: &mut StdRng) -> Vec<f32> {
    unit(
        v.iter()
            .map(|x| {
                let g: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 1.732;
                x + sigma * g
            })
            .collect(),
    )
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) {
    let mut f = std::fs::File::create(path).expect("create");
    for r in rows {
        f.write_all(bytemuck::cast_slice(r)).expect("write");
    }
}

fn bench_ann(n: usize, base: &[Vec<f32>], dim: usize) -> Value {
    let mut rng = StdRng::seed_from_u64(n as u64);
    let vectors: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            if i < base.len() {
                base[i].clone()
            } else {
                noisy(&base[i % base.len()], 0.02, &mut rng)
            }
        })
        .collect();
    let queries: Vec<Vec<f32>> = (0..1000)
        .map(|_| noisy(&base[rng.random_range(0..base.len())], 0.02, &mut rng))
        .collect();
    write_f32(&out_dir().join(format!("ann-{n}-vectors.f32")), &vectors);
    write_f32(&out_dir().join(format!("ann-{n}-queries.f32")), &queries);

    let params = HnswParams {
        m: 16,
        ef_construction: 200,
        ef_search: 64,
        exact_threshold: 0,
    };
    let mut points = Points::default();
    for i in 0..n {
        points.push(PointMeta {
            chunk_id: i as u64,
            document_id: String::new(),
            kb: String::new(),
            metadata: Default::default(),
        });
    }
    let mut index = DenseIndex::new(
        dim,
        HnswParams {
            exact_threshold: usize::MAX,
            ..params
        },
    );
    index.append(&vectors, n).expect("append");
    let t = Instant::now();
    let mut index_graph = DenseIndex::new(dim, params);
    index_graph.append(&vectors, n).expect("append");
    let build_s = t.elapsed().as_secs_f64();
    eprintln!(
        "ann {n}: graph built in {build_s:.1} s ({:.0} vectors/s)",
        n as f64 / build_s
    );

    let filter = Filter::default();
    let all: Vec<u32> = (0..n as u32).collect();
    let t = Instant::now();
    let truth: Vec<Vec<u32>> = queries
        .par_iter()
        .map(|q| {
            index
                .exact(q, 10, all.clone())
                .into_iter()
                .map(|h| h.1)
                .collect()
        })
        .collect();
    let exact_qps = queries.len() as f64 / t.elapsed().as_secs_f64();

    let mut sweeps = Vec::new();
    for ef in [16usize, 32, 64, 128, 256] {
        index_graph.set_ef_search(ef);
        let g = &index_graph;
        let mut lat = Vec::with_capacity(queries.len());
        let mut found = 0;
        let t = Instant::now();
        for (q, tr) in queries.iter().zip(&truth) {
            let s = Instant::now();
            let hits = g.search(q, 10, &points, &filter);
            lat.push(s.elapsed().as_secs_f64() * 1e3);
            found += hits.iter().filter(|h| tr.contains(&h.1)).count();
        }
        let qps1 = queries.len() as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _: usize = queries
            .par_iter()
            .map(|q| g.search(q, 10, &points, &filter).len())
            .sum();
        let qps2 = queries.len() as f64 / t.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let recall = found as f64 / (10 * queries.len()) as f64;
        eprintln!("ann {n} ef={ef}: recall@10 {recall:.3}, {qps1:.0} q/s (1 thread), {qps2:.0} q/s (2 threads), p50 {:.3} ms p99 {:.3} ms", percentile(&lat, 0.5), percentile(&lat, 0.99));
        sweeps.push(
            json!({"ef": ef, "recall_at_10": recall, "qps_1_thread": qps1, "qps_2_threads": qps2,
            "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99)}),
        );
    }
    json!({"vectors": n, "dim": dim, "m": 16, "ef_construction": 200, "build_s": build_s,
           "build_vectors_per_s": n as f64 / build_s, "exact_qps_2_threads": exact_qps, "sweep": sweeps})
}

fn main() {
    // `cargo bench` passes `--bench`; anything else after `--` is ours.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench`: measure nothing.
        eprintln!("retrieval benchmark: run it with `cargo bench --bench retrieval`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only embedding|chunking|ann` runs one section.
    let only = support::only(&args);
    let run = |section: &str| only.as_deref().is_none_or(|o| o == section);
    groundwork::runtime::tune_allocator();
    let dim = 384;
    // Sections not rerun keep their last figures.
    support::save_results("retrieval", |results| {
        if run("embedding") {
            results["embedding"] = bench_embedding(quick);
        }
        if run("chunking") {
            results["chunking"] = bench_chunking();
        }
        if run("ann") {
            let base = base_vectors(dim);
            let sizes: &[usize] = if quick { &[10_000] } else { &[10_000, 100_000] };
            results["ann"] = json!(sizes
                .iter()
                .map(|&n| bench_ann(n, &base, dim))
                .collect::<Vec<_>>());
        }
    });
}
