//! Durable workflows through the public API of a real server: ingest runs with steps and
//! Server-Sent Events, crash recovery after SIGKILL at injected pause points (during
//! extraction, mid-embedding, during publish, during a reindex switch), reindexing while
//! searches run, a model of another dimension, approvals, and folder sources on a schedule.
//!
//! Pause points are `fail` crate fail points compiled into test builds only: the server is
//! started with `FAILPOINTS=<point>=<n>*off->pause`, the test waits until the workflow shows
//! that step running, then kills the process with SIGKILL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{shared, tiny_bert};
use crate::server::{ok_json, problem, TestServer};

/// Small embedding batches so that a few documents make many `embed/N` steps.
const BATCH: usize = 4;

const BOOK: [&str; 3] = [
    "ch03-01-variables-and-mutability.md",
    "ch16-01-threads.md",
    "ch16-02-message-passing.md",
];

const QUERIES: [&str; 3] = [
    "how do I spawn a thread and wait for it to finish",
    "can a variable be changed after it is bound",
    "sending values between threads with channels",
];

fn book_files() -> Option<Vec<(String, Vec<u8>)>> {
    let dir = shared("docs/rust-book")?;
    Some(
        BOOK.iter()
            .map(|n| {
                (
                    n.to_string(),
                    std::fs::read(dir.join(n)).expect("book chapter"),
                )
            })
            .collect(),
    )
}

fn env(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut v = vec![("GROUNDWORK__INGEST__EMBED_BATCH_CHUNKS", BATCH.to_string())];
    v.extend(extra.iter().cloned());
    v
}

fn start(dir: &Path, env: &[(&'static str, String)]) -> TestServer {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestServer::start(dir, &pairs)
}

fn upload(server: &TestServer, kb: &str, files: &[(String, Vec<u8>)]) -> String {
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let receipt: Value = ok_json(server.upload(kb, &files, None));
    receipt["job_id"].as_str().expect("job id").to_owned()
}

/// Search results reduced to what must not depend on the run: document name, ordinal, score.
fn results(server: &TestServer, kb: &str) -> Vec<Vec<(String, u64, i64)>> {
    QUERIES
        .iter()
        .map(|q| {
            server
                .search(kb, q, 8, "hybrid")
                .iter()
                .map(|h| {
                    (
                        h["document_name"].as_str().unwrap_or_default().to_owned(),
                        h["ordinal"].as_u64().unwrap_or(0),
                        (h["score"].as_f64().unwrap_or(0.0) * 1e5).round() as i64,
                    )
                })
                .collect()
        })
        .collect()
}

/// Documents by name with their chunk counts; asserts every chunk is stored exactly once.
fn chunk_counts(server: &TestServer, kb: &str) -> BTreeMap<String, u64> {
    let docs: Value = ok_json(server.get(&format!("/v1/kbs/{kb}/documents?limit=500")));
    let mut out = BTreeMap::new();
    for d in docs["items"].as_array().expect("items") {
        assert_eq!(d["status"], "ready", "{d}");
        let id = d["id"].as_str().expect("id");
        let chunks: Value =
            ok_json(server.get(&format!("/v1/kbs/{kb}/documents/{id}/chunks?limit=1000")));
        let ordinals: Vec<u64> = chunks["items"]
            .as_array()
            .expect("chunks")
            .iter()
            .map(|c| c["ordinal"].as_u64().expect("ordinal"))
            .collect();
        let expected: Vec<u64> = (0..ordinals.len() as u64).collect();
        assert_eq!(
            ordinals, expected,
            "duplicate or missing chunks in {}",
            d["name"]
        );
        assert_eq!(d["chunk_count"].as_u64(), Some(ordinals.len() as u64));
        out.insert(
            d["name"].as_str().expect("name").to_owned(),
            ordinals.len() as u64,
        );
    }
    out
}

fn embedded(server: &TestServer) -> u64 {
    ok_json(server.get("/v1/status"))["chunks_embedded"]
        .as_u64()
        .expect("chunks_embedded")
}

fn no_unfinished_workflows(server: &TestServer) {
    let all: Value = ok_json(server.get("/v1/workflows?limit=500"));
    for wf in all["items"].as_array().expect("items") {
        assert!(
            matches!(
                wf["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ),
            "workflow left unfinished: {wf}"
        );
    }
}

/// Waits until the process is paused at the fail point: `skip` steps whose name contains
/// `part` completed and the next one is running (runs are sequential and the paused step can
/// never complete, so nothing moves after this). Returns the run as seen then.
fn wait_paused_in(server: &TestServer, id: &str, part: &str, skip: usize) -> Value {
    let started = Instant::now();
    loop {
        let wf: Value = ok_json(server.get(&format!("/v1/workflows/{id}")));
        let matching: Vec<&Value> = wf["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"].as_str().unwrap_or("").contains(part))
            .collect();
        let completed = matching
            .iter()
            .filter(|s| s["status"] == "completed")
            .count();
        let running = matching.iter().any(|s| s["status"] == "running");
        if completed == skip && running {
            return wf;
        }
        assert!(
            completed <= skip && started.elapsed() < Duration::from_secs(120),
            "never paused in `{part}` after {skip}: {wf}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Chunks whose vectors were persisted by completed `embed/N` steps (a document's or a
/// group's), given chunk counts by document id.
fn persisted_chunks(wf: &Value, counts_by_id: &BTreeMap<String, u64>) -> u64 {
    let mut n = 0;
    for s in wf["steps"].as_array().expect("steps") {
        let name = s["name"].as_str().unwrap_or("");
        if s["status"] != "completed" {
            continue;
        }
        let parts: Vec<&str> = name.split('/').collect();
        if let [owner, "embed", i] = parts.as_slice() {
            // A document's own batches, or a group's (`group-{hash}-{chunks}`: consecutive
            // documents embedded together).
            let total = match owner.strip_prefix("group-") {
                Some(group) => group
                    .rsplit('-')
                    .next()
                    .and_then(|c| c.parse().ok())
                    .expect("group chunk count"),
                None => counts_by_id[*owner],
            };
            let i: u64 = i.parse().expect("batch number");
            n += total.saturating_sub(i * BATCH as u64).min(BATCH as u64);
        }
    }
    n
}

fn ids_by_name(server: &TestServer, kb: &str) -> BTreeMap<String, String> {
    let docs: Value = ok_json(server.get(&format!("/v1/kbs/{kb}/documents?limit=500")));
    docs["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().expect("name").to_owned(),
                d["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

struct Reference {
    results: Vec<Vec<(String, u64, i64)>>,
    counts: BTreeMap<String, u64>,
    results_small: Vec<Vec<(String, u64, i64)>>,
    counts_small: BTreeMap<String, u64>,
}

/// One uninterrupted run: the book at the default chunking, and at 96 tokens (what a reindex
/// must reproduce).
fn reference(files: &[(String, Vec<u8>)], tmp: &Path) -> Reference {
    let server = start(&tmp.join("reference"), &env(&[]));
    server.create_kb("book");
    let job = upload(&server, "book", files);
    assert_eq!(server.wait_workflow_end(&job)["status"], "completed");
    let res = server.post(
        "/v1/kbs",
        &json!({ "name": "small", "chunking": { "max_tokens": 96, "overlap_tokens": 12 } }),
    );
    assert_eq!(res.status(), 201);
    let job = upload(&server, "small", files);
    assert_eq!(server.wait_workflow_end(&job)["status"], "completed");
    let r = Reference {
        results: results(&server, "book"),
        counts: chunk_counts(&server, "book"),
        results_small: results(&server, "small"),
        counts_small: chunk_counts(&server, "small"),
    };
    server.stop();
    r
}

/// Uploads the book with a pause injected at `point` (after `skip` passes), kills the server
/// there, restarts it and checks the outcome equals the uninterrupted run.
fn crash_ingest(
    tmp: &Path,
    files: &[(String, Vec<u8>)],
    r: &Reference,
    point: &str,
    skip: usize,
    suffix: &str,
) {
    let dir = tmp.join(point.replace("::", "-"));
    let server = start(
        &dir,
        &env(&[("FAILPOINTS", format!("{point}={skip}*off->pause"))]),
    );
    server.create_kb("book");
    let job = upload(&server, "book", files);
    let at_kill = wait_paused_in(&server, &job, suffix, skip);
    let before = ids_by_name(&server, "book");
    server.kill();

    let server = start(&dir, &env(&[]));
    let wf = server.wait_workflow_end(&job);
    assert_eq!(wf["status"], "completed", "{wf}");
    assert_eq!(wf["output"]["ready"], BOOK.len(), "{wf}");
    assert!(
        wf["runs"].as_u64().unwrap_or(0) >= 2,
        "the run was resumed: {wf}"
    );
    let counts = chunk_counts(&server, "book");
    assert_eq!(counts, r.counts, "every document indexed exactly once");
    assert_eq!(
        results(&server, "book"),
        r.results,
        "same results as an uninterrupted run"
    );
    // Vectors persisted before the crash are not computed again.
    let counts_by_id: BTreeMap<String, u64> = before
        .iter()
        .map(|(name, id)| (id.clone(), r.counts[name]))
        .collect();
    let total: u64 = r.counts.values().sum();
    let saved = persisted_chunks(&at_kill, &counts_by_id);
    assert_eq!(
        embedded(&server),
        total - saved,
        "after the restart only chunks without persisted vectors are embedded ({point})"
    );
    no_unfinished_workflows(&server);
    eprintln!("crash at {point}: {saved} of {total} chunks' vectors were persisted and reused");
    server.stop();
}

#[test]
fn crash_anywhere_resumes_with_identical_results_and_no_repeated_work() {
    let Some(files) = book_files() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let r = reference(&files, tmp.path());
    let total: u64 = r.counts.values().sum();
    assert!(
        total > 24,
        "the batch should take several seconds ({total} chunks)"
    );

    // During extraction of the third document.
    crash_ingest(tmp.path(), &files, &r, "ingest::extract", 2, "/extract");
    // Mid-embedding: after four batches.
    crash_ingest(tmp.path(), &files, &r, "ingest::embed", 4, "/embed/");
    // During publish: the second document's chunks are committed, its step not recorded.
    crash_ingest(tmp.path(), &files, &r, "ingest::publish", 1, "/publish");

    // During a reindex switch: the store has switched generation, the step is not recorded
    // and the new index is not installed.
    let dir = tmp.path().join("reindex-crash");
    let server = start(&dir, &env(&[]));
    server.create_kb("book");
    let job = upload(&server, "book", &files);
    assert_eq!(server.wait_workflow_end(&job)["status"], "completed");
    server.stop();
    let server = start(&dir, &env(&[("FAILPOINTS", "reindex::swap=pause".into())]));
    let wf: Value = ok_json(server.post(
        "/v1/kbs/book/reindex",
        &json!({ "chunking": { "max_tokens": 96, "overlap_tokens": 12 } }),
    ));
    let id = wf["id"].as_str().expect("id").to_owned();
    wait_paused_in(&server, &id, "swap/0", 0);
    server.kill();
    let server = start(&dir, &env(&[]));
    let wf = server.wait_workflow_end(&id);
    assert_eq!(wf["status"], "completed", "{wf}");
    let kb: Value = ok_json(server.get("/v1/kbs/book"));
    assert_eq!(kb["chunking"]["max_tokens"], 96);
    assert_eq!(kb["generation"], 1);
    assert_eq!(kb["stats"]["stale"], 0);
    assert_eq!(chunk_counts(&server, "book"), r.counts_small);
    assert_eq!(
        results(&server, "book"),
        r.results_small,
        "reindex ≡ fresh ingest at 96 tokens"
    );
    assert_eq!(
        embedded(&server),
        0,
        "every staged vector was reused after the crash"
    );
    no_unfinished_workflows(&server);
    server.stop();
}

/// Twelve one-paragraph documents in one upload are embedded in full batches across
/// documents (three `embed` steps of four chunks, not twelve of one), each published once and
/// found by its own words; a bad file among them fails alone.
#[test]
fn small_documents_are_embedded_together() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(&tmp.path().join("data"), &env(&[]));
    server.create_kb("notes");
    let topics = [
        "lighthouse",
        "glacier",
        "orchard",
        "volcano",
        "harbour",
        "meadow",
        "canyon",
        "reef",
        "tundra",
        "delta",
        "savanna",
        "fjord",
    ];
    let mut files: Vec<(String, Vec<u8>)> = topics
        .iter()
        .map(|t| {
            (
                format!("{t}.md"),
                format!("The {t} survey records one observation about the {t} each spring.")
                    .into_bytes(),
            )
        })
        .collect();
    files.insert(5, ("empty.md".to_owned(), b"   \n".to_vec()));
    let job = upload(&server, "notes", &files);
    let wf = server.wait_workflow_end(&job);
    assert_eq!(wf["status"], "completed", "{wf}");
    assert_eq!(wf["output"]["ready"], 12, "{wf}");
    assert_eq!(wf["output"]["failed"], 1, "{wf}");
    let embeds: Vec<&str> = wf["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| n.contains("/embed/"))
        .collect();
    assert_eq!(embeds.len(), 3, "{embeds:?}");
    assert!(embeds.iter().all(|n| n.starts_with("group-")), "{embeds:?}");
    for t in topics {
        let hits = server.search("notes", &format!("{t} survey"), 1, "hybrid");
        assert_eq!(hits[0]["document_name"], format!("{t}.md"), "{hits:?}");
    }
    server.stop();
}

/// A group of documents is closed before a document that would take it past a batch: with
/// documents of three chunks and batches of four, each document is its own group of one
/// `embed` step, never a batch of four followed by a sliver of two.
#[test]
fn embed_groups_stop_short_of_a_sliver() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(&tmp.path().join("data"), &env(&[]));
    let res = server.post(
        "/v1/kbs",
        &json!({ "name": "notes", "chunking": { "max_tokens": 16, "overlap_tokens": 0 } }),
    );
    assert_eq!(res.status(), 201, "{}", res.text().unwrap_or_default());
    let files: Vec<(String, Vec<u8>)> = ["lighthouse", "glacier", "orchard", "volcano"]
        .iter()
        .map(|t| {
            let text = format!(
                "The {t} keeper writes the weather down at dawn.\n\n\
                 The {t} log is sent to the office on Fridays.\n\n\
                 The {t} is painted white every fifth summer."
            );
            (format!("{t}.md"), text.into_bytes())
        })
        .collect();
    let job = upload(&server, "notes", &files);
    let wf = server.wait_workflow_end(&job);
    assert_eq!(wf["status"], "completed", "{wf}");
    assert_eq!(wf["output"]["ready"], 4, "{wf}");
    assert_eq!(wf["output"]["chunks"], 12, "three chunks each: {wf}");
    let embeds: Vec<&str> = wf["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| n.contains("/embed/"))
        .collect();
    assert_eq!(embeds.len(), 4, "{embeds:?}");
    assert!(
        embeds.iter().all(|n| n.ends_with("-3/embed/0")),
        "one step of three chunks per document: {embeds:?}"
    );
    server.stop();
}

#[test]
fn ingest_runs_expose_steps_events_and_isolate_failures() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(&tmp.path().join("data"), &env(&[]));
    server.create_kb("kb");
    let good = "# Tides\n\nThe harbour office publishes tide tables every Monday.\n".repeat(4);
    let files = [
        ("tides.md".to_owned(), good.into_bytes()),
        (
            "broken.pdf".to_owned(),
            b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ntrailer".to_vec(),
        ),
    ];
    // Server-Sent Events of the run, read on another thread from the start.
    let receipt: Value = ok_json(
        server.upload(
            "kb",
            &files
                .iter()
                .map(|(n, b)| (n.as_str(), b.clone()))
                .collect::<Vec<_>>(),
            None,
        ),
    );
    let id = receipt["job_id"].as_str().expect("job").to_owned();
    let sse = {
        let url = format!("{}/v1/workflows/{id}/events", server.url);
        std::thread::spawn(move || {
            let res = reqwest::blocking::Client::new()
                .get(url)
                .timeout(Duration::from_secs(120))
                .send()
                .expect("sse");
            assert_eq!(
                res.headers()["content-type"].to_str().unwrap_or_default(),
                "text/event-stream"
            );
            res.text().expect("sse body")
        })
    };
    let wf = server.wait_workflow_end(&id);
    assert_eq!(wf["kind"], "ingest");
    assert_eq!(
        wf["status"], "completed",
        "one bad file does not fail the run: {wf}"
    );
    assert_eq!(wf["output"]["ready"], 1);
    assert_eq!(wf["output"]["failed"], 1);
    let steps = wf["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with("/publish")), "{names:?}");
    let failed = steps
        .iter()
        .find(|s| s["status"] == "failed")
        .expect("the broken PDF's step failed");
    assert!(failed["name"].as_str().unwrap_or("").ends_with("/extract"));
    assert_eq!(failed["attempts"], 1, "malformed input is not retried");
    assert_eq!(failed["errors"][0]["retryable"], false);
    assert!(steps.iter().all(|s| s["started_at"].is_string()));
    // The job alias still answers.
    let job: Value = ok_json(server.get(&format!("/v1/jobs/{id}")));
    assert_eq!(job["ready"], 1);
    assert_eq!(job["failed"], 1);
    let body = sse.join().expect("sse thread");
    assert!(body.contains("event: snapshot"), "{body}");
    assert!(body.contains("\"status\":\"completed\""), "{body}");
    // A finished run's stream is one snapshot.
    let again = server
        .get(&format!("/v1/workflows/{id}/events"))
        .text()
        .expect("sse");
    assert_eq!(again.matches("event: ").count(), 1, "{again}");
    // Listing with filters; retry is refused for a run still in work only.
    let list: Value = ok_json(server.get("/v1/workflows?kind=ingest&status=completed&kb=kb"));
    assert_eq!(list["total"], 1);
    problem(server.get("/v1/workflows/nope"), 404, "not_found");
    problem(
        server.post(&format!("/v1/workflows/{id}/cancel"), &json!({})),
        409,
        "conflict",
    );
    // Idempotency key: the same upload twice is one run.
    let key_upload = |name: &str| {
        let form = reqwest::blocking::multipart::Form::new().part(
            "file",
            reqwest::blocking::multipart::Part::bytes(
                b"Buoys are painted red on the port side.".to_vec(),
            )
            .file_name(name.to_owned()),
        );
        let res = reqwest::blocking::Client::new()
            .post(format!("{}/v1/kbs/kb/documents", server.url))
            .header("Idempotency-Key", "upload-1")
            .multipart(form)
            .send()
            .expect("upload");
        ok_json(res)["job_id"].as_str().expect("job").to_owned()
    };
    assert_eq!(key_upload("buoys.txt"), key_upload("buoys.txt"));
    server.stop();
}

#[test]
fn reindex_switches_atomically_while_searches_answer_and_supports_another_dimension() {
    let Some(files) = book_files() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let tiny = tmp.path().join("tiny-bert");
    tiny_bert(&tiny, 32);
    let server = start(&tmp.path().join("data"), &env(&[]));
    server.create_kb("book");
    let job = upload(&server, "book", &files);
    assert_eq!(server.wait_workflow_end(&job)["status"], "completed");
    let before: u64 = chunk_counts(&server, "book").values().sum();

    // Searches hammer the KB during the whole reindex.
    let stop = Arc::new(AtomicBool::new(false));
    let (failed, empty, done) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let searcher = {
        let (stop, failed, empty, done) =
            (stop.clone(), failed.clone(), empty.clone(), done.clone());
        let url = server.url.clone();
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let res = http
                    .post(format!("{url}/v1/kbs/book/search"))
                    .json(&json!({ "query": QUERIES[i % QUERIES.len()], "top_k": 5, "mode": "hybrid" }))
                    .send();
                match res
                    .ok()
                    .filter(|r| r.status().is_success())
                    .and_then(|r| r.json::<Value>().ok())
                {
                    Some(body) if body["results"].as_array().is_some_and(|a| !a.is_empty()) => {}
                    Some(_) => {
                        empty.fetch_add(1, Ordering::SeqCst);
                    }
                    None => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        })
    };
    // Approval gate: the run waits for `approve` before switching.
    let wf: Value = ok_json(server.post(
        "/v1/kbs/book/reindex",
        &json!({ "chunking": { "max_tokens": 128, "overlap_tokens": 16 }, "approve_swap": true }),
    ));
    let id = wf["id"].as_str().expect("id").to_owned();
    problem(
        server.post("/v1/kbs/book/reindex", &json!({})),
        409,
        "conflict",
    );
    let waiting = server.wait_workflow(&id, 300, |w| w["status"] == "waiting");
    assert_eq!(waiting["waiting_for"], "approve");
    let kb: Value = ok_json(server.get("/v1/kbs/book"));
    assert_eq!(
        kb["chunking"]["max_tokens"], 254,
        "still serving the old generation"
    );
    let res = server.post(
        &format!("/v1/workflows/{id}/events/approve"),
        &json!({ "by": "test" }),
    );
    assert_eq!(res.status(), 202);
    let wf = server.wait_workflow_end(&id);
    assert_eq!(wf["status"], "completed", "{wf}");
    stop.store(true, Ordering::SeqCst);
    searcher.join().expect("searcher");
    assert!(done.load(Ordering::SeqCst) > 10);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no search failed during the reindex"
    );
    assert_eq!(
        empty.load(Ordering::SeqCst),
        0,
        "no search came back empty during the reindex"
    );
    let after: u64 = chunk_counts(&server, "book").values().sum();
    assert!(after > before, "smaller chunks: {before} → {after}");
    let kb: Value = ok_json(server.get("/v1/kbs/book"));
    assert_eq!(kb["chunking"]["max_tokens"], 128);
    assert_eq!(kb["stats"]["chunks"], after);

    // A model that is none of those the server knows is a bad field (422), not a missing
    // knowledge base (404).
    let bad = problem(
        server.post(
            "/v1/kbs/book/reindex",
            &json!({ "embedding_model": "no-such-model" }),
        ),
        422,
        "invalid_request",
    );
    assert!(
        bad["detail"]
            .as_str()
            .expect("detail")
            .contains("no-such-model"),
        "{bad}"
    );

    // Another model of another dimension (32): documents are stale until the switch.
    let wf: Value = ok_json(server.post(
        "/v1/kbs/book/reindex",
        &json!({ "embedding_model": tiny.display().to_string() }),
    ));
    let wf = server.wait_workflow_end(wf["id"].as_str().expect("id"));
    assert_eq!(wf["status"], "completed", "{wf}");
    let kb: Value = ok_json(server.get("/v1/kbs/book"));
    assert_eq!(kb["dimension"], 32);
    assert_eq!(kb["stats"]["stale"], 0);
    let stale: Value = ok_json(server.get("/v1/kbs/book/documents?stale=true"));
    assert_eq!(stale["total"], 0);
    assert_eq!(server.search("book", QUERIES[0], 5, "dense").len(), 5);
    // A restart loads the KB's model from its recorded folder.
    server.stop();
    let server = start(&tmp.path().join("data"), &env(&[]));
    assert_eq!(server.search("book", QUERIES[0], 5, "hybrid").len(), 5);
    let job = upload(
        &server,
        "book",
        &[(
            "extra.md".into(),
            b"# Extra\n\nA brand new note about lighthouses.".to_vec(),
        )],
    );
    assert_eq!(server.wait_workflow_end(&job)["output"]["ready"], 1);
    server.stop();
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
    std::fs::write(&p, text).expect("write");
    p
}

fn source_docs(server: &TestServer) -> BTreeMap<String, String> {
    let docs: Value = ok_json(server.get("/v1/kbs/notes/documents?limit=100"));
    docs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|d| d["status"] == "ready")
        .map(|d| {
            (
                d["name"].as_str().expect("name").to_owned(),
                d["sha256"].as_str().expect("sha").to_owned(),
            )
        })
        .collect()
}

fn wait_docs(
    server: &TestServer,
    pred: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let started = Instant::now();
    loop {
        let docs = source_docs(server);
        if pred(&docs) {
            return docs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "sync never converged: {docs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn folder_sources_sync_new_changed_and_deleted_files_on_a_schedule_that_survives_restarts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let folder = tmp.path().join("notes");
    write(
        &folder,
        "a.md",
        "# Anchors\n\nAnchors hold the boat in place.",
    );
    write(
        &folder,
        "sub/b.txt",
        "Bilge pumps remove water from the hull.",
    );
    write(&folder, ".hidden.md", "never ingested");
    let data = tmp.path().join("data");
    let server = start(&data, &env(&[]));
    server.create_kb("notes");
    problem(
        server.post("/v1/kbs/notes/sources", &json!({ "path": "relative/path" })),
        422,
        "invalid_request",
    );
    problem(
        server.post(
            "/v1/kbs/notes/sources",
            &json!({ "path": folder.display().to_string(), "schedule": "sometimes" }),
        ),
        422,
        "invalid_request",
    );
    let created: Value = ok_json(server.post(
        "/v1/kbs/notes/sources",
        &json!({ "path": folder.display().to_string(), "schedule": "every 1s" }),
    ));
    let first = created["workflow_id"]
        .as_str()
        .expect("workflow")
        .to_owned();
    let wf = server.wait_workflow_end(&first);
    assert_eq!(wf["output"]["added"], 2, "{wf}");
    let docs = wait_docs(&server, |d| d.len() == 2);
    assert!(
        docs.contains_key("a.md") && docs.contains_key("sub/b.txt"),
        "{docs:?}"
    );

    // Change one, delete one, add one: the next scheduled sync applies all three.
    write(
        &folder,
        "a.md",
        "# Anchors\n\nAnchors and chains hold the boat in place.",
    );
    std::fs::remove_file(folder.join("sub/b.txt")).expect("rm");
    write(&folder, "c.md", "Cleats are where lines are made fast.");
    let old_a = docs["a.md"].clone();
    let docs = wait_docs(&server, |d| {
        d.len() == 2 && d.contains_key("c.md") && d.get("a.md").is_some_and(|s| *s != old_a)
    });
    assert!(!docs.contains_key("sub/b.txt"));
    let hits = server.search("notes", "what are cleats for", 3, "hybrid");
    assert_eq!(hits[0]["document_name"], "c.md");

    // The schedule survives a restart: a file added while the server is down is picked up.
    server.stop();
    write(&folder, "d.md", "Dinghies are small boats carried aboard.");
    let server = start(&data, &env(&[]));
    let docs = wait_docs(&server, |d| d.contains_key("d.md"));
    assert_eq!(docs.len(), 3);
    let sources: Value = ok_json(server.get("/v1/kbs/notes/sources"));
    assert_eq!(sources.as_array().map(Vec::len), Some(1));
    let syncs: Value = ok_json(server.get("/v1/workflows?kind=sync&limit=500"));
    assert!(syncs["total"].as_u64().unwrap_or(0) >= 3, "{syncs}");
    // On-demand sync.
    let sid = sources[0]["id"].as_str().expect("id");
    let started: Value =
        ok_json(server.post(&format!("/v1/kbs/notes/sources/{sid}/sync"), &json!({})));
    let wf = server.wait_workflow_end(started["workflow_id"].as_str().expect("wf"));
    assert_eq!(wf["status"], "completed");
    assert_eq!(
        server
            .delete(&format!("/v1/kbs/notes/sources/{sid}"))
            .status(),
        204
    );
    server.stop();
}
