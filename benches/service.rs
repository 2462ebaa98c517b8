//! Service benchmarks through the real HTTP server (in-process axum on a loopback port, driven
//! by the project's HTTP client), written to `bench-results/service.json`.
//!
//! - ingest: the Rust book (`../shared/docs/rust-book`) uploaded end to end (HTTP, stored bytes,
//!   extraction, chunking, embedding, SQLite, index) — chunks/s and MB/s — and, in the same run,
//!   the embedder alone on exactly the same chunk texts; the ratio is what the service keeps of
//!   the model's throughput. The same for 1,000 one-paragraph documents (SciFact abstracts).
//! - search: a knowledge base of at least 50k chunks (SciFact abstracts plus the Rust book, cut
//!   into short chunks so that building it takes minutes, cached in
//!   `data/.groundwork/bench-cache/`), searched by a closed-loop load generator at concurrency
//!   1, 8 and 32: p50/p90/p99 latency and requests/s, in hybrid (query embedding included) and
//!   bm25 mode.
//!
//!   Then hybrid at concurrency 8 idle and beside 8 clients uploading without pause into
//!   another knowledge base (p99 during ingest over idle).
//! - reindex: the Rust book ingested, then reindexed to 128-token chunks while 4 clients search
//!   it without pause: the reindex's duration, and how many searches failed or came back empty
//!   during it (the goal is 0), with their latency.
//!
//! - cold: `groundwork serve` from start to listening on a 100k-chunk knowledge base.
//! - stores: the same work on SQLite and on PostgreSQL (a throwaway server from `tests/pg.sh`,
//!   on loopback, fsync on) in one run — the Rust book ingested (chunks/s), hybrid and bm25
//!   search on it at concurrency 8 (req/s, p99), agent state writes at concurrency 16
//!   (writes/s, p99) — and PostgreSQL's ratio to SQLite for each.
//!
//! - replicas: `groundwork serve` processes (this build) over one throwaway PostgreSQL — the
//!   Rust book uploaded one file per request to 1 replica, then round-robin to 3 fresh ones
//!   (chunks/s, and each replica's own embedded chunks), hybrid search at concurrency 8 on
//!   1 vs spread over 3 (req/s, p50/p99); and the coordination itself: no-op workflow runs
//!   claimed and released through the store by 1 and by 3 claimers (claims/s, claim p50/p99).
//!   All replicas share this machine's cores, so 3 replicas show the cost of coordination,
//!   not the gain of more machines (see deploy/README.md for the note on 10 and 100).
//!
//! `cargo bench --bench service [-- --quick] [-- --only ingest|search|cold|reindex|stores|replicas]`;
//! each run updates its sections of the JSON file.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use groundwork::client::{Client, FilePart};
use groundwork::config::Config;
use groundwork::embed::{BertEmbedder, EmbedOptions, Embedder, Precision};
use groundwork::ingest::isolate::Isolation;
use groundwork::ingest::{extract, Chunker, ChunkingOptions, ExtractOptions};
use groundwork::service::Service;
use serde_json::{json, Value};

use support::{cpu_flags, percentile, root};

struct Running {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(service: Service) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let agents = groundwork::app::agents(&service);
        let _ = groundwork::api::serve(service, agents, listener, async move {
            let _ = rx.await;
        })
        .await;
    });
    Running { url, stop, task }
}

async fn stop(r: Running) {
    let _ = r.stop.send(());
    let _ = r.task.await;
}

fn open(data_dir: &Path, embedder: Arc<dyn Embedder>) -> Service {
    open_on(data_dir, "", embedder)
}

/// A service on `data_dir` keeping its records in SQLite there (`store_url` empty) or in the
/// PostgreSQL database at `store_url`.
fn open_on(data_dir: &Path, store_url: &str, embedder: Arc<dyn Embedder>) -> Service {
    let mut config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    config.store.url = store_url.to_owned();
    let isolation = Isolation::with_program(PathBuf::from(env!("CARGO_BIN_EXE_groundwork")));
    groundwork::app::open(config, embedder, isolation).expect("open service")
}

async fn wait_jobs(client: &Client, jobs: &[String]) -> u64 {
    loop {
        let mut chunks = 0;
        let mut finished = true;
        for id in jobs {
            let j = client.job(id).await.expect("job");
            chunks += j["chunks_embedded"].as_u64().unwrap_or(0);
            finished &= j["finished"].as_bool().unwrap_or(false);
        }
        if finished {
            return chunks;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn upload_all(client: &Client, kb: &str, files: Vec<FilePart>) -> Vec<String> {
    let mut jobs = Vec::new();
    let mut files = files.into_iter().peekable();
    while files.peek().is_some() {
        let group: Vec<FilePart> = files.by_ref().take(64).collect();
        let r = client.upload(kb, &group, None).await.expect("upload");
        jobs.push(r["job_id"].as_str().expect("job").to_owned());
    }
    jobs
}

fn rust_book() -> Vec<PathBuf> {
    let dir = root().join("../shared/docs/rust-book");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("../shared/docs/rust-book is needed for this benchmark")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

async fn bench_ingest(embedder: Arc<dyn Embedder>, quick: bool) -> Value {
    let mut files = rust_book();
    if quick {
        files.truncate(20);
    }
    let parts: Vec<FilePart> = files
        .iter()
        .map(|f| FilePart::read(f).expect("read"))
        .collect();
    let book = ingest_vs_embedder(embedder.clone(), "the Rust book", parts).await;
    // One-paragraph documents: SciFact abstracts, one file each.
    let corpus = std::fs::read_to_string(root().join("../shared/eval/scifact/corpus.jsonl"))
        .expect("../shared/eval/scifact is needed for this benchmark");
    let paragraphs: Vec<FilePart> = corpus
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .take(if quick { 200 } else { 1_000 })
        .map(|v| FilePart {
            name: format!("{}.txt", v["_id"].as_str().unwrap_or_default()),
            bytes: v["text"].as_str().unwrap_or_default().as_bytes().to_vec(),
        })
        .collect();
    let small = ingest_vs_embedder(embedder, "one-paragraph documents", paragraphs).await;
    let mut out = book;
    out["one_paragraph_documents"] = small;
    out
}

/// Uploads `parts` end to end through HTTP (stored bytes, extraction, chunking, embedding,
/// SQLite, index) and, in the same run, embeds exactly the same chunk texts with the embedder
/// alone in batches of 64; the ratio is what the service keeps of the model's throughput.
async fn ingest_vs_embedder(
    embedder: Arc<dyn Embedder>,
    what: &str,
    parts: Vec<FilePart>,
) -> Value {
    let bytes: usize = parts.iter().map(|p| p.bytes.len()).sum();
    let tokenizer = embedder.tokenizer();
    let chunker = Chunker::new(tokenizer, ChunkingOptions::default());
    let options = ExtractOptions {
        isolation: Isolation::with_program(PathBuf::from(env!("CARGO_BIN_EXE_groundwork"))),
        password: None,
    };
    let mut texts = Vec::new();
    for p in &parts {
        let doc = extract(&p.bytes, Some(&p.name), &options).expect("extract");
        texts.extend(chunker.chunk("d", &doc).into_iter().map(|c| c.text));
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embed_only = || {
        let cpu = cpu_seconds();
        let started = Instant::now();
        for batch in refs.chunks(64) {
            embedder.embed(batch).expect("embed");
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{what}, embedding only: {} chunks in {secs:.1} s = {:.1} chunks/s, {:.2} cores busy",
            texts.len(),
            texts.len() as f64 / secs,
            (cpu_seconds() - cpu) / secs
        );
        secs
    };
    let embed_before = embed_only();
    let dir = tempfile::tempdir().expect("tempdir");
    let service = open(dir.path(), embedder.clone());
    let running = start(service).await;
    let client = Client::new(&running.url, None).expect("client");
    client.create_kb("ingest").await.expect("kb");
    let files = parts.len();
    let cpu = cpu_seconds();
    let started = Instant::now();
    let jobs = upload_all(&client, "ingest", parts).await;
    let chunks = wait_jobs(&client, &jobs).await;
    let secs = started.elapsed().as_secs_f64();
    let cores = (cpu_seconds() - cpu) / secs;
    stop(running).await;
    // Embedding alone once more: the baseline is the mean of a run before and one after, so
    // a machine that speeds up or slows down during the benchmark does not bias the ratio.
    let embed_secs = (embed_before + embed_only()) / 2.0;
    let embed_rate = texts.len() as f64 / embed_secs;
    let rate = chunks as f64 / secs;
    eprintln!(
        "{what}, end to end: {chunks} chunks from {files} files ({:.2} MB) in {secs:.1} s = {rate:.1} chunks/s; ratio {:.3}",
        bytes as f64 / 1e6,
        rate / embed_rate
    );
    eprintln!("{what}, end to end: {cores:.2} cores busy");
    json!({
        "files": files, "bytes": bytes, "chunks": chunks,
        "e2e_seconds": secs, "e2e_chunks_per_s": rate, "e2e_mb_per_s": bytes as f64 / 1e6 / secs,
        "embed_only_chunks": texts.len(), "embed_only_seconds": embed_secs,
        "embed_only_chunks_per_s": embed_rate, "ratio": rate / embed_rate,
    })
}

/// CPU time this process has used (user + system, all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid `rusage`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Picks the largest chunk size that cuts `docs` into at least `target` chunks.
fn chunk_size_for(
    embedder: &dyn Embedder,
    docs: &[(String, String)],
    target: usize,
) -> (u32, usize) {
    let mut last = (16, 0);
    for size in [96u32, 64, 48, 40, 32, 24, 16] {
        let chunker = Chunker::new(embedder.tokenizer(), ChunkingOptions::new(size as usize, 0));
        let n: usize = docs
            .iter()
            .map(|(name, text)| {
                let opts = ExtractOptions {
                    isolation: Isolation::with_program(PathBuf::from(env!(
                        "CARGO_BIN_EXE_groundwork"
                    ))),
                    password: None,
                };
                extract(text.as_bytes(), Some(name), &opts)
                    .map(|d| chunker.chunk("d", &d).len())
                    .unwrap_or(0)
            })
            .sum();
        eprintln!("chunk size {size}: {n} chunks");
        last = (size, n);
        if n >= target {
            return last;
        }
    }
    last
}

async fn build_search_kb(
    embedder: Arc<dyn Embedder>,
    dir: &Path,
    target: usize,
) -> (Running, Client) {
    let marker = dir.join("BUILT");
    let fresh = !marker.is_file();
    if fresh && dir.exists() {
        std::fs::remove_dir_all(dir).expect("clear partial bench KB");
    }
    let service = open(dir, embedder.clone());
    let running = start(service).await;
    let client = Client::new(&running.url, None).expect("client");
    if fresh {
        let mut docs: Vec<(String, String)> = Vec::new();
        let corpus = std::fs::read_to_string(root().join("../shared/eval/scifact/corpus.jsonl"))
            .expect("../shared/eval/scifact is needed for this benchmark");
        for line in corpus.lines() {
            let v: Value = serde_json::from_str(line).expect("corpus line");
            docs.push((
                format!("scifact-{}.txt", v["_id"].as_str().unwrap_or_default()),
                format!(
                    "{}\n\n{}",
                    v["title"].as_str().unwrap_or_default(),
                    v["text"].as_str().unwrap_or_default()
                ),
            ));
        }
        for f in rust_book() {
            docs.push((
                f.file_name().expect("name").to_string_lossy().into_owned(),
                std::fs::read_to_string(&f).expect("read"),
            ));
        }
        let (size, n) = chunk_size_for(embedder.as_ref(), &docs, target);
        eprintln!(
            "building the search KB: {} documents at {size} tokens per chunk = {n} chunks",
            docs.len()
        );
        client
            .post::<Value>(
                "/v1/kbs",
                &json!({ "name": "bench", "chunking": { "max_tokens": size, "overlap_tokens": 0 } }),
            )
            .await
            .expect("kb");
        let parts = docs
            .into_iter()
            .map(|(name, text)| FilePart {
                name,
                bytes: text.into_bytes(),
            })
            .collect();
        let started = Instant::now();
        let jobs = upload_all(&client, "bench", parts).await;
        let chunks = wait_jobs(&client, &jobs).await;
        eprintln!(
            "built: {chunks} chunks in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        std::fs::write(&marker, chunks.to_string()).expect("marker");
    }
    (running, client)
}

async fn load(
    client: &Client,
    kb: &'static str,
    queries: &[String],
    concurrency: usize,
    mode: &str,
    secs: f64,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let queries = Arc::new(queries.to_vec());
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let queries = queries.clone();
        let mode = mode.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = worker * 7919;
            while Instant::now() < deadline {
                let q = &queries[i % queries.len()];
                i += 1;
                let t = Instant::now();
                match client.search(kb, q, 10, &mode).await {
                    Ok(r) if r["results"].as_array().is_some_and(|a| !a.is_empty()) => {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0)
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("load task");
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let row = json!({
        "mode": mode, "concurrency": concurrency, "requests": all.len(), "errors_or_empty": errors,
        "rps": all.len() as f64 / elapsed,
        "p50_ms": percentile(&all, 0.5), "p90_ms": percentile(&all, 0.9), "p99_ms": percentile(&all, 0.99),
        "mean_ms": all.iter().sum::<f64>() / all.len().max(1) as f64,
    });
    eprintln!("{row}");
    row
}

async fn bench_search(embedder: Arc<dyn Embedder>, quick: bool) -> Value {
    let target = if quick { 5_000 } else { 50_000 };
    let dir = root().join(format!("data/.groundwork/bench-cache/service-kb-{target}"));
    let (running, client) = build_search_kb(embedder, &dir, target).await;
    let kb: Value = client.get("/v1/kbs/bench").await.expect("kb");
    let chunks = kb["stats"]["chunks"].as_u64().unwrap_or(0);
    let queries: Vec<String> =
        std::fs::read_to_string(root().join("../shared/eval/scifact/queries.jsonl"))
            .expect("queries")
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["text"].as_str().map(str::to_owned))
            .collect();
    let secs = if quick { 5.0 } else { 20.0 };
    // Warm-up (page cache, allocator, connection pool).
    load(&client, "bench", &queries, 4, "hybrid", 2.0).await;
    let mut rows = Vec::new();
    for mode in ["hybrid", "bm25"] {
        for c in [1, 8, 32] {
            rows.push(load(&client, "bench", &queries, c, mode, secs).await);
        }
    }
    let during_ingest = search_during_ingest(&client, &queries, secs).await;
    stop(running).await;
    json!({ "kb_chunks": chunks, "seconds_per_level": secs, "rows": rows,
            "during_ingest": during_ingest })
}

/// Hybrid search at concurrency 8 alone, then beside 8 clients uploading Rust-book chapters
/// without pause into another knowledge base of the same server: latency under a heavy ingest
/// against idle, in the same run.
async fn search_during_ingest(client: &Client, queries: &[String], secs: f64) -> Value {
    let idle = load(client, "bench", queries, 8, "hybrid", secs).await;
    client.create_kb("bench-ingest").await.expect("kb");
    let files = Arc::new(rust_book());
    let stop_uploads = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut uploaders = Vec::new();
    for u in 0..8usize {
        let (client, files, stop_uploads) = (client.clone(), files.clone(), stop_uploads.clone());
        uploaders.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut i = u;
            while !stop_uploads.load(std::sync::atomic::Ordering::Relaxed) {
                let f = &files[i % files.len()];
                i += 8;
                // A unique last line, so no upload is a duplicate of an earlier one.
                let mut bytes = std::fs::read(f).expect("read");
                bytes.extend_from_slice(format!("\n\nCopy {u}-{i}.\n").as_bytes());
                let part = FilePart {
                    name: format!("{u}-{i}.md"),
                    bytes,
                };
                if client.upload("bench-ingest", &[part], None).await.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    // Let the ingest queue fill before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy = load(client, "bench", queries, 8, "hybrid", secs).await;
    stop_uploads.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut uploads = 0;
    for u in uploaders {
        uploads += u.await.expect("uploader");
    }
    let kb: Value = client.get("/v1/kbs/bench-ingest").await.expect("kb");
    // Its queued uploads must not resume in the next run on the cached knowledge base.
    client
        .delete("/v1/kbs/bench-ingest")
        .await
        .expect("delete kb");
    let ratio =
        busy["p99_ms"].as_f64().unwrap_or(f64::NAN) / idle["p99_ms"].as_f64().unwrap_or(f64::NAN);
    eprintln!("search p99 during ingest / idle: {ratio:.2}");
    json!({
        "idle": idle, "during_ingest": busy, "p99_ratio": ratio,
        "uploads_accepted": uploads,
        "chunks_ingested_meanwhile": kb["stats"]["chunks"],
    })
}

/// `groundwork serve` from start to listening on a knowledge base of 100k chunks (5k with
/// `--quick`): the saved index is loaded, not rebuilt. Median of three starts.
async fn bench_cold_start(embedder: Arc<dyn Embedder>, quick: bool) -> Value {
    let target = if quick { 5_000 } else { 100_000 };
    let dir = root().join(format!("data/.groundwork/bench-cache/service-kb-{target}"));
    let (running, client) = build_search_kb(embedder, &dir, target).await;
    let kb: Value = client.get("/v1/kbs/bench").await.expect("kb");
    stop(running).await;
    let mut secs = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_groundwork"))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("GROUNDWORK__DATA_DIR", &dir)
            .current_dir(root())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("groundwork serve");
        let stdout = child.stdout.take().expect("stdout");
        let listening = std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(Result::ok)
            .any(|l| l.starts_with("listening on"));
        secs.push(started.elapsed().as_secs_f64());
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            listening,
            "groundwork serve did not start on {}",
            dir.display()
        );
    }
    secs.sort_by(f64::total_cmp);
    eprintln!(
        "cold start with {} chunks: {:.2} s",
        kb["stats"]["chunks"], secs[1]
    );
    json!({ "kb_chunks": kb["stats"]["chunks"], "serve_to_listening_s": secs[1], "runs_s": secs })
}

async fn bench_reindex(embedder: Arc<dyn Embedder>, quick: bool) -> Value {
    let mut files = rust_book();
    if quick {
        files.truncate(20);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let service = open(dir.path(), embedder);
    let running = start(service).await;
    let client = Client::new(&running.url, None).expect("client");
    client.create_kb("bench").await.expect("kb");
    let parts: Vec<FilePart> = files
        .iter()
        .map(|f| FilePart::read(f).expect("read"))
        .collect();
    let jobs = upload_all(&client, "bench", parts).await;
    let before = wait_jobs(&client, &jobs).await;
    let queries: Vec<String> = [
        "how do I spawn a thread",
        "what is ownership",
        "borrowing rules for references",
        "pattern matching on enums",
        "error handling with Result",
        "writing tests with cargo test",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let stop_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut searchers = Vec::new();
    for worker in 0..4 {
        let client = client.clone();
        let queries = queries.clone();
        let stop_flag = stop_flag.clone();
        searchers.push(tokio::spawn(async move {
            let (mut lat, mut failed, mut empty) = (Vec::new(), 0u64, 0u64);
            let mut i = worker;
            while !stop_flag.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                match client
                    .search("bench", &queries[i % queries.len()], 10, "hybrid")
                    .await
                {
                    Ok(r) if r["results"].as_array().is_some_and(|a| !a.is_empty()) => {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0)
                    }
                    Ok(_) => empty += 1,
                    Err(e) => {
                        eprintln!("search failed during reindex: {e}");
                        failed += 1
                    }
                }
                i += 1;
            }
            (lat, failed, empty)
        }));
    }
    let started = Instant::now();
    let wf: Value = client
        .post(
            "/v1/kbs/bench/reindex",
            &json!({ "chunking": { "max_tokens": 128, "overlap_tokens": 16 } }),
        )
        .await
        .expect("reindex");
    let id = wf["id"].as_str().expect("id").to_owned();
    let wf = loop {
        let wf: Value = client
            .get(&format!("/v1/workflows/{id}"))
            .await
            .expect("wf");
        if matches!(
            wf["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            break wf;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    // Keep searching a moment after the switch too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_flag.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut lat, mut failed, mut empty) = (Vec::new(), 0, 0);
    for t in searchers {
        let (l, f, e) = t.await.expect("searcher");
        lat.extend(l);
        failed += f;
        empty += e;
    }
    lat.sort_by(f64::total_cmp);
    let kb: Value = client.get("/v1/kbs/bench").await.expect("kb");
    stop(running).await;
    let row = json!({
        "files": files.len(), "chunks_before": before, "chunks_after": kb["stats"]["chunks"],
        "status": wf["status"], "reindex_seconds": secs,
        "chunks_per_s": kb["stats"]["chunks"].as_f64().unwrap_or(0.0) / secs,
        "searches_during": lat.len() as u64 + failed + empty,
        "searches_failed": failed, "searches_empty": empty,
        "search_p50_ms": percentile(&lat, 0.5), "search_p99_ms": percentile(&lat, 0.99),
    });
    eprintln!("reindex: {row}");
    row
}

/// A throwaway PostgreSQL (`tests/pg.sh`), stopped and removed on drop.
struct Postgres {
    dir: PathBuf,
    url: String,
}

impl Postgres {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("groundwork-bench-pg-{}", std::process::id()));
        let out = std::process::Command::new(root().join("tests/pg.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("tests/pg.sh");
        assert!(
            out.status.success(),
            "tests/pg.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        Self { dir, url }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(root().join("tests/pg.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// Questions about the Rust book for the store comparison's searches.
const BOOK_QUESTIONS: [&str; 12] = [
    "how do I spawn a thread and wait for it",
    "what is ownership and why does Rust need it",
    "borrowing rules for mutable references",
    "how do I read a file into a string",
    "what does the question mark operator do",
    "difference between String and &str",
    "how to define a trait with a default method",
    "iterators and closures performance",
    "sending values between threads with channels",
    "what is a smart pointer like Box",
    "how do lifetimes prevent dangling references",
    "how do I publish my own crate",
];

/// Agent state writes (JSON Merge Patch, each answered after its commit) from `clients`
/// concurrent clients over 200 agents for `secs` seconds.
async fn state_writes(url: &str, clients: usize, secs: f64) -> Value {
    let http = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, next, url) = (http.clone(), next.clone(), url.to_owned());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let t = Instant::now();
                    let res = http
                        .patch(format!("{url}/v1/agents/a-{}/state", k % 200))
                        .json(&json!({ "last": k }))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            lat.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("writer");
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let row = json!({
        "concurrency": clients, "writes": all.len(), "errors": errors,
        "writes_per_s": all.len() as f64 / elapsed,
        "p50_ms": percentile(&all, 0.5), "p99_ms": percentile(&all, 0.99),
    });
    eprintln!("agent state writes: {row}");
    row
}

/// The same ingest, searches and agent writes on SQLite and on PostgreSQL in one run.
async fn bench_stores(embedder: Arc<dyn Embedder>, quick: bool) -> Value {
    let pg = Postgres::start();
    let mut files = rust_book();
    if quick {
        files.truncate(20);
    }
    let secs = if quick { 3.0 } else { 10.0 };
    let queries: Vec<String> = BOOK_QUESTIONS.iter().map(|q| q.to_string()).collect();
    let mut out = json!({ "cpu_flags": cpu_flags(), "files": files.len(),
                          "search_seconds": secs, "postgres": "15, loopback TCP, fsync on" });
    for (store, url) in [("sqlite", ""), ("postgres", pg.url.as_str())] {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = open_on(dir.path(), url, embedder.clone());
        let running = start(service).await;
        let client = Client::new(&running.url, None).expect("client");
        client.create_kb("bench").await.expect("kb");
        let parts: Vec<FilePart> = files
            .iter()
            .map(|f| FilePart::read(f).expect("read"))
            .collect();
        let started = Instant::now();
        let jobs = upload_all(&client, "bench", parts).await;
        let chunks = wait_jobs(&client, &jobs).await;
        let ingest_secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{store}: ingest {chunks} chunks in {ingest_secs:.1} s = {:.1} chunks/s",
            chunks as f64 / ingest_secs
        );
        load(&client, "bench", &queries, 4, "hybrid", 1.0).await;
        let hybrid = load(&client, "bench", &queries, 8, "hybrid", secs).await;
        let bm25 = load(&client, "bench", &queries, 8, "bm25", secs).await;
        let writes = state_writes(&running.url, 16, secs).await;
        stop(running).await;
        out[store] = json!({
            "chunks": chunks, "ingest_seconds": ingest_secs,
            "ingest_chunks_per_s": chunks as f64 / ingest_secs,
            "hybrid": hybrid, "bm25": bm25, "agent_state_writes": writes,
        });
    }
    let ratio = |path: &[&str]| {
        let get = |store: &str| {
            path.iter()
                .fold(&out[store], |v, k| &v[*k])
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        get("postgres") / get("sqlite")
    };
    let ratios = json!({
        "ingest_chunks_per_s": ratio(&["ingest_chunks_per_s"]),
        "hybrid_rps": ratio(&["hybrid", "rps"]),
        "hybrid_p99": ratio(&["hybrid", "p99_ms"]),
        "bm25_rps": ratio(&["bm25", "rps"]),
        "bm25_p99": ratio(&["bm25", "p99_ms"]),
        "agent_writes_per_s": ratio(&["agent_state_writes", "writes_per_s"]),
    });
    eprintln!("postgres / sqlite: {ratios}");
    out["postgres_over_sqlite"] = ratios;
    out
}

/// Status of a replica (`/v1/status` in demo mode: the instance's counters included).
async fn replica_status(http: &reqwest::Client, url: &str) -> Value {
    http.get(format!("{url}/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

/// Starts `n` `groundwork serve` processes of this build on the PostgreSQL at `store_url`.
fn serve_replicas(n: usize, store_url: &str, dir: &Path) -> Vec<(support::Proc, String)> {
    (0..n)
        .map(|i| {
            let data = dir.join(format!("r{i}"));
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_groundwork"));
            cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
                .arg(&data)
                .arg("--model")
                .arg(root().join("models/all-MiniLM-L6-v2"))
                .env("GROUNDWORK__STORE__URL", store_url)
                // The ingest limit counts all replicas: two runs each, as deploy/ sets it.
                .env(
                    "GROUNDWORK__WORKFLOW__INGEST_CONCURRENCY",
                    (2 * n).to_string(),
                )
                .env("RUST_LOG", "warn");
            let (proc, url) =
                support::spawn_until(cmd, "listening on ", &dir.join(format!("r{i}.log")), 120);
            (proc, url)
        })
        .collect()
}

/// One configuration of the replicas bench: `n` fresh replicas on a fresh database, the book
/// uploaded round-robin one file per request, then searched from 8 clients spread over them.
async fn replicas_run(n: usize, files: &[PathBuf], secs: f64) -> Value {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas = serve_replicas(n, &pg.url, dir.path());
    let clients: Vec<Client> = replicas
        .iter()
        .map(|(_, url)| Client::new(url, None).expect("client"))
        .collect();
    clients[0].create_kb("book").await.expect("kb");
    let started = Instant::now();
    let mut jobs = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let part = FilePart::read(f).expect("read");
        let r = clients[i % n]
            .upload("book", &[part], None)
            .await
            .expect("upload");
        jobs.push(r["job_id"].as_str().expect("job").to_owned());
    }
    let chunks = wait_jobs(&clients[0], &jobs).await;
    let ingest_secs = started.elapsed().as_secs_f64();
    let http = reqwest::Client::new();
    let mut per_replica = Vec::new();
    for (_, url) in &replicas {
        let status = replica_status(&http, url).await;
        let embedded = status["instance"]["chunks_embedded"].as_u64().unwrap_or(0);
        per_replica.push(json!({
            "chunks_embedded": embedded,
            "chunks_per_s": embedded as f64 / ingest_secs,
        }));
    }
    eprintln!(
        "{n} replica(s): ingest {chunks} chunks in {ingest_secs:.1} s = {:.1} chunks/s; per replica {per_replica:?}",
        chunks as f64 / ingest_secs
    );
    // Every replica's index has the whole book before the searches start: a search with the
    // knowledge base's `index_seq` as `min_seq` waits until the replica reached it.
    let kb: Value = clients[0].get("/v1/kbs/book").await.expect("kb");
    let seq = kb["index_seq"].as_u64().expect("index_seq");
    for (_, url) in &replicas {
        let res = http
            .post(format!("{url}/v1/kbs/book/search"))
            .json(&json!({"query": "ownership", "min_seq": seq}))
            .send()
            .await
            .expect("search");
        assert!(res.status().is_success(), "{}", res.status());
    }
    let queries: Vec<String> = BOOK_QUESTIONS.iter().map(|q| q.to_string()).collect();
    // 8 clients, spread evenly over the replicas.
    let deadline_secs = secs;
    let mut loads = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let share = 8 / n + usize::from(i < 8 % n);
        let (c, q) = (c.clone(), queries.clone());
        loads.push(tokio::spawn(async move {
            load(&c, "book", &q, share, "hybrid", deadline_secs).await
        }));
    }
    let (mut requests, mut rps, mut errors) = (0u64, 0.0, 0u64);
    let mut p99s = Vec::new();
    let mut p50s = Vec::new();
    for l in loads {
        let row = l.await.expect("load");
        requests += row["requests"].as_u64().unwrap_or(0);
        rps += row["rps"].as_f64().unwrap_or(0.0);
        errors += row["errors_or_empty"].as_u64().unwrap_or(0);
        p50s.push(row["p50_ms"].as_f64().unwrap_or(f64::NAN));
        p99s.push(row["p99_ms"].as_f64().unwrap_or(f64::NAN));
    }
    drop(replicas);
    json!({
        "replicas": n, "chunks": chunks, "ingest_seconds": ingest_secs,
        "ingest_chunks_per_s": chunks as f64 / ingest_secs, "per_replica": per_replica,
        "search": {"mode": "hybrid", "concurrency": 8, "requests": requests, "rps": rps,
                   "errors_or_empty": errors,
                   "p50_ms_worst_replica": p50s.iter().copied().fold(f64::NAN, f64::max),
                   "p99_ms_worst_replica": p99s.iter().copied().fold(f64::NAN, f64::max)},
    })
}

/// Claims/s of no-op workflow runs through the store: `runs` runs created, then claimed (up
/// to 8 at a time) and released by `claimers` threads, one connection pool each — the engine's
/// coordination cost without any work.
fn claim_rate(url: &str, claimers: usize, runs: usize) -> Value {
    use groundwork::store::{
        ClaimRequest, NewWorkflow, PgOptions, PgStore, TenantStore, WorkflowStatus, WorkflowStore,
    };
    let stores: Vec<Arc<PgStore>> = (0..claimers)
        .map(|_| {
            Arc::new(
                PgStore::connect(&PgOptions {
                    url: url.to_owned(),
                    pool_size: 2,
                    ..PgOptions::default()
                })
                .expect("connect"),
            )
        })
        .collect();
    let tenant = stores[0].ensure_tenant("bench").expect("tenant").id;
    let batch = uuid::Uuid::new_v4().to_string();
    for i in 0..runs {
        stores[0]
            .create_workflow(&NewWorkflow {
                id: format!("{batch}-{i}"),
                tenant_id: tenant.clone(),
                kind: "noop".into(),
                subject: None,
                idempotency_key: None,
                input: Value::Null,
            })
            .expect("create");
    }
    let limits: std::collections::HashMap<String, usize> = [("noop".to_owned(), 64)].into();
    let started = Instant::now();
    let threads: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(t, store)| {
            let (store, limits) = (store.clone(), limits.clone());
            std::thread::spawn(move || {
                let holder = format!("bench-{t}");
                let (mut lat, mut done, mut idle) = (Vec::new(), 0usize, 0);
                while idle < 3 {
                    let t0 = Instant::now();
                    let got = store
                        .claim_workflows(&ClaimRequest {
                            holder: &holder,
                            lease: Duration::from_secs(30),
                            now: chrono::Utc::now(),
                            free: 8,
                            limits: &limits,
                            exclude: &[],
                        })
                        .expect("claim");
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                    if got.is_empty() {
                        idle += 1;
                        continue;
                    }
                    idle = 0;
                    for mut wf in got {
                        wf.status = WorkflowStatus::Completed;
                        wf.finished_at = Some(chrono::Utc::now());
                        store.save_workflow(&wf).expect("release");
                        done += 1;
                    }
                }
                (lat, done)
            })
        })
        .collect();
    let (mut lat, mut done) = (Vec::new(), 0);
    for t in threads {
        let (l, d) = t.join().expect("claimer");
        lat.extend(l);
        done += d;
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(done, runs, "every run claimed once");
    lat.sort_by(f64::total_cmp);
    let row = json!({
        "claimers": claimers, "runs": runs, "seconds": secs,
        "runs_claimed_and_released_per_s": runs as f64 / secs,
        "claim_transactions": lat.len(),
        "claim_p50_ms": percentile(&lat, 0.5), "claim_p99_ms": percentile(&lat, 0.99),
    });
    eprintln!("no-op claims: {row}");
    row
}

/// 1 vs 3 replicas on one PostgreSQL, and the claims' own cost.
async fn bench_replicas(quick: bool) -> Value {
    let mut files = rust_book();
    if quick {
        files.truncate(20);
    }
    let secs = if quick { 3.0 } else { 10.0 };
    let one = replicas_run(1, &files, secs).await;
    let three = replicas_run(3, &files, secs).await;
    let pg = Postgres::start();
    let runs = if quick { 500 } else { 2_000 };
    let url = pg.url.clone();
    let claims = tokio::task::spawn_blocking(move || {
        json!({"one_claimer": claim_rate(&url, 1, runs), "three_claimers": claim_rate(&url, 3, runs)})
    })
    .await
    .expect("claims");
    let ratio = |a: &Value, b: &Value, path: &[&str]| {
        let get = |v: &Value| {
            path.iter()
                .fold(v, |v, k| &v[*k])
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        get(b) / get(a)
    };
    let ratios = json!({
        "ingest_chunks_per_s": ratio(&one, &three, &["ingest_chunks_per_s"]),
        "search_rps": ratio(&one, &three, &["search", "rps"]),
        "search_p99": ratio(&one, &three, &["search", "p99_ms_worst_replica"]),
        "claims_per_s": ratio(&claims["one_claimer"], &claims["three_claimers"], &["runs_claimed_and_released_per_s"]),
    });
    eprintln!("3 replicas / 1 replica: {ratios}");
    json!({
        "cpu_flags": cpu_flags(), "files": files.len(), "search_seconds": secs,
        "postgres": "15, loopback TCP, fsync on, same 2 cores",
        "one": one, "three": three, "no_op_claims": claims, "three_over_one": ratios,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    groundwork::runtime::tune_allocator();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    // `--precision f32|int8` runs the embedder at that precision instead of `auto`.
    let precision = match args
        .iter()
        .position(|a| a == "--precision")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        Some("f32") => Precision::F32,
        Some("int8") => Precision::Int8,
        _ => Precision::Auto,
    };
    let embedder: Arc<dyn Embedder> = Arc::new(
        BertEmbedder::load(
            &root().join("models/all-MiniLM-L6-v2"),
            EmbedOptions {
                precision,
                ..EmbedOptions::default()
            },
        )
        .expect("model (run python3 models/fetch.py)"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = root().join("bench-results");
    let path = out.join("service.json");
    let mut report: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    report["quick"] = json!(quick);
    report["model"] = json!(embedder.model_id());
    report["precision"] = json!(embedder.precision());
    if only.as_deref().is_none_or(|o| o == "ingest") {
        report["ingest"] = rt.block_on(bench_ingest(embedder.clone(), quick));
    }
    if only.as_deref().is_none_or(|o| o == "search") {
        report["search"] = rt.block_on(bench_search(embedder.clone(), quick));
    }
    if only.as_deref().is_none_or(|o| o == "cold") {
        report["cold_start"] = rt.block_on(bench_cold_start(embedder.clone(), quick));
    }
    if only.as_deref().is_none_or(|o| o == "reindex") {
        report["reindex"] = rt.block_on(bench_reindex(embedder.clone(), quick));
    }
    if only.as_deref().is_none_or(|o| o == "stores") {
        report["stores"] = rt.block_on(bench_stores(embedder.clone(), quick));
    }
    if only.as_deref().is_none_or(|o| o == "replicas") {
        report["replicas"] = rt.block_on(bench_replicas(quick));
    }
    std::fs::create_dir_all(&out).expect("bench-results");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write");
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    eprintln!("written to {}", path.display());
}
