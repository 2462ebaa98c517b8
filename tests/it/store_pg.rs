//! The PostgreSQL store against servers of its own (started with `tests/pg.sh`, whichever
//! store the rest of the suite uses; `tests/run.sh` runs them in its first pass only): encrypted
//! and verified connections, sections that exclude across processes, and a database that
//! crashes and restarts in the middle of an ingest.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use groundwork::store::{
    claim_lost, Claim, ClaimRequest, HealthStore, NewWorkflow, PgOptions, PgStore, Section,
    SectionStore, TenantStore, WorkflowStatus, WorkflowStore,
};
use serde_json::Value;

use crate::common::{cli, root, shared};
use crate::server::{ok_json, TestServer};

/// A throwaway PostgreSQL server, stopped and removed on drop.
struct Cluster {
    dir: PathBuf,
    url: String,
}

impl Cluster {
    fn start(dir: &Path) -> Self {
        let url = pg(&["start", dir.to_str().expect("utf-8")]);
        Self {
            dir: dir.to_owned(),
            url,
        }
    }

    fn arg(&self) -> &str {
        self.dir.to_str().expect("utf-8")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(root().join("tests/pg.sh"))
            .args(["stop", self.arg()])
            .status();
    }
}

/// Runs `tests/pg.sh` with `args`; returns its output line.
fn pg(args: &[&str]) -> String {
    let out = std::process::Command::new(root().join("tests/pg.sh"))
        .args(args)
        .output()
        .expect("tests/pg.sh");
    assert!(
        out.status.success(),
        "tests/pg.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn connections_are_encrypted_and_the_server_certificate_verified() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let ca = pg(&["tls", cluster.arg()]);
    let data = tmp.path().join("data");
    let keys = |url: &str, ca: Option<&str>| {
        let mut cmd = cli(&data);
        cmd.args([
            "keys",
            "create",
            "--tenant",
            "t",
            "--scopes",
            "read",
            "--data-dir",
        ])
        .arg(&data)
        .env("GROUNDWORK__STORE__URL", url)
        .env("GROUNDWORK__STORE__CONNECT_TIMEOUT_MS", "3000");
        if let Some(ca) = ca {
            cmd.env("GROUNDWORK__STORE__TLS_CA_FILE", ca);
        }
        cmd.output().expect("groundwork keys")
    };
    // Required TLS, a server certificate no trusted authority signed: refused, and said why.
    let required = format!("{}?sslmode=require", cluster.url);
    let out = keys(&required, None);
    assert!(!out.status.success(), "an unverified server was trusted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
    // Its CA configured: connected.
    let out = keys(&required, Some(&ca));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A CA file alone turns TLS on (the URL's default `prefer`); every session is encrypted.
    let server = TestServer::start(
        &data,
        &[
            ("GROUNDWORK__STORE__URL", cluster.url.as_str()),
            ("GROUNDWORK__STORE__TLS_CA_FILE", ca.as_str()),
        ],
    );
    assert_eq!(server.get("/readyz").status(), 200);
    let mut admin = postgres::Client::connect(&cluster.url, postgres::NoTls).expect("admin");
    let sessions: Vec<(bool, String)> = admin
        .query(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'groundwork'",
            &[],
        )
        .expect("pg_stat_ssl")
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
        .collect();
    assert!(!sessions.is_empty());
    assert!(
        sessions
            .iter()
            .all(|(ssl, v)| *ssl && v.starts_with("TLSv1.")),
        "{sessions:?}"
    );
    server.stop();
}

#[test]
fn sections_exclude_across_processes_without_holding_pooled_connections() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let options = PgOptions {
        url: cluster.url.clone(),
        // One pooled connection each: a caller waiting for a section must not hold it.
        pool_size: 1,
        ..PgOptions::default()
    };
    // Two stores = two processes' worth of sessions.
    let stores: Vec<Arc<PgStore>> = (0..2)
        .map(|_| Arc::new(PgStore::connect(&options).expect("connect")))
        .collect();
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let entries = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = stores[i % 2].clone();
            let (inside, most, entries) = (inside.clone(), most.clone(), entries.clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let _held = store.enter(Section::Admission).expect("enter");
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Work on the store inside the section (as admission does).
                    store.ping().expect("ping inside the section");
                    std::thread::sleep(Duration::from_millis(2));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    entries.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Meanwhile callers queue for the section, another section and the pool stay usable.
    for store in &stores {
        let _blobs = store.enter(Section::Blobs).expect("another section");
        store.has_keys().expect("a read while others wait");
    }
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(entries.load(Ordering::SeqCst), 80);
    assert_eq!(most.load(Ordering::SeqCst), 1, "two holders at once");
}

/// The `n` shortest Rust book chapters (the test's time goes to the crash, not to embedding).
fn chapters(n: usize) -> Option<Vec<(String, Vec<u8>)>> {
    let dir = shared("docs/rust-book")?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("book")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    names.sort_by_key(|p| {
        (
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            p.clone(),
        )
    });
    Some(
        names
            .into_iter()
            .take(n)
            .map(|p| {
                let name = p.file_name().expect("name").to_string_lossy().into_owned();
                (name, std::fs::read(&p).expect("chapter"))
            })
            .collect(),
    )
}

#[test]
fn a_database_crash_mid_ingest_leaves_every_document_ready_exactly_once() {
    let Some(files) = chapters(24) else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let server = TestServer::start(
        &tmp.path().join("data"),
        &[
            ("GROUNDWORK__STORE__URL", cluster.url.as_str()),
            // Many small steps, so the crash lands between and inside them.
            ("GROUNDWORK__INGEST__EMBED_BATCH_CHUNKS", "8"),
        ],
    );
    server.create_kb("book");
    let upload: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let receipt = ok_json(server.upload("book", &upload, None));
    let job_id = receipt["job_id"].as_str().expect("job").to_owned();
    // Crash the database once a few documents are ready and most are not.
    let started = Instant::now();
    loop {
        let job = ok_json(server.get(&format!("/v1/jobs/{job_id}")));
        let ready = job["ready"].as_u64().unwrap_or(0);
        if ready >= 2 {
            // Mid-ingest is what matters (documents finish in embedding groups).
            assert!(ready < files.len() as u64, "ingest outran the test: {job}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{job}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let restart = {
        let dir = cluster.arg().to_owned();
        std::thread::spawn(move || pg(&["restart", &dir, "immediate", "3"]))
    };
    // While it is down the service says it is not ready, and why.
    std::thread::sleep(Duration::from_millis(1_000));
    let res = server.get("/readyz");
    assert_eq!(res.status(), 503);
    let body: Value = res.json().expect("json");
    assert!(
        body["status"]
            .as_str()
            .unwrap_or_default()
            .starts_with("store unavailable"),
        "{body}"
    );
    restart.join().expect("restart");
    let restarted = Instant::now();
    let job = server.wait_job(&job_id);
    eprintln!(
        "the ingest finished {:.1} s after the database came back",
        restarted.elapsed().as_secs_f64()
    );
    assert_eq!(job["ready"], files.len(), "{job}");
    assert_eq!(job["failed"], 0, "{job}");
    assert_eq!(server.get("/readyz").status(), 200);

    // Every document once, every chunk once.
    let docs = ok_json(server.get("/v1/kbs/book/documents?limit=500"));
    let items = docs["items"].as_array().expect("items");
    assert_eq!(items.len(), files.len(), "{docs}");
    let mut names: Vec<&str> = items
        .iter()
        .map(|d| d["name"].as_str().expect("name"))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), files.len());
    let mut total = 0;
    for d in items {
        assert_eq!(d["status"], "ready", "{d}");
        let id = d["id"].as_str().expect("id");
        let chunks = ok_json(server.get(&format!("/v1/kbs/book/documents/{id}/chunks?limit=1000")));
        let ordinals: Vec<u64> = chunks["items"]
            .as_array()
            .expect("chunks")
            .iter()
            .map(|c| c["ordinal"].as_u64().expect("ordinal"))
            .collect();
        assert_eq!(
            ordinals,
            (0..ordinals.len() as u64).collect::<Vec<_>>(),
            "{}",
            d["name"]
        );
        assert_eq!(d["chunk_count"].as_u64(), Some(ordinals.len() as u64));
        total += ordinals.len();
    }
    // The index holds exactly the stored chunks, and answers.
    let status = ok_json(server.get("/v1/status"));
    assert_eq!(
        status["indexed_chunks"].as_u64(),
        Some(total as u64),
        "{status}"
    );
    assert!(!server
        .search("book", "ownership and borrowing", 5, "hybrid")
        .is_empty());
    server.stop();
}

/// What a client sees of a deployment that must survive `migrate` unchanged.
fn observed(server: &TestServer) -> Value {
    // First: the searches below are logged calls too.
    let logs = ok_json(server.get("/v1/gateway/logs?limit=100"));
    let mut searches = Vec::new();
    for mode in ["hybrid", "bm25", "dense"] {
        for q in [
            "how do I install Rust",
            "ownership and borrowing",
            "what does drop do",
        ] {
            let hits: Vec<Value> = server
                .search("book", q, 8, mode)
                .iter()
                .map(|h| {
                    serde_json::json!([
                        h["document_name"],
                        h["ordinal"],
                        h["text"],
                        h["score"],
                        h["chunk_id"]
                    ])
                })
                .collect();
            searches.push(serde_json::json!({ "mode": mode, "q": q, "hits": hits }));
        }
    }
    let agent = ok_json(server.get("/v1/agents/ops"));
    let conversations = ok_json(server.get("/v1/agents/ops/conversations"));
    let mut messages = Vec::new();
    for c in conversations["items"].as_array().expect("items") {
        let id = c["id"].as_str().expect("id");
        messages.push(ok_json(
            server.get(&format!("/v1/agents/ops/conversations/{id}/messages")),
        ));
    }
    serde_json::json!({
        "searches": searches,
        "agent": [agent["state"], agent["version"]],
        "conversations": conversations,
        "messages": messages,
        "logs": logs["items"],
        "documents": ok_json(server.get("/v1/kbs/book/documents?limit=500"))["items"],
    })
}

/// `v` with every time cut to the microsecond, the precision PostgreSQL keeps (SQLite keeps
/// the nanoseconds it was given).
fn to_micros(v: &Value) -> Value {
    match v {
        Value::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) if s.len() >= 20 => Value::String(
                t.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
            _ => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(to_micros).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), to_micros(v))).collect())
        }
        other => other.clone(),
    }
}

fn migrate(from: &Path, to: &str) -> std::process::Output {
    cli(from)
        .args(["migrate", "--from"])
        .arg(from)
        .args(["--to", to])
        .output()
        .expect("groundwork migrate")
}

#[test]
fn migrate_copies_a_deployment_that_answers_the_same_and_is_idempotent() {
    let Some(files) = chapters(12) else { return };
    let llm = crate::fake_llm::FakeLlm::start();
    llm.answer("gpt-main", "Install it with rustup [1].");
    let toml = crate::agents::fake_config(&llm.base);
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));

    // A SQLite deployment: the book, an agent with state and history, gateway logs.
    let before = tmp.path().join("before");
    std::fs::create_dir_all(&before).expect("dir");
    let server = TestServer::start_with_config(&before, &toml, &[]);
    server.create_kb("book");
    let upload: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let receipt = ok_json(server.upload("book", &upload, None));
    let job = server.wait_job(receipt["job_id"].as_str().expect("job"));
    assert_eq!(job["ready"], files.len(), "{job}");
    ok_json(server.send(
        "PUT",
        "/v1/agents/ops/state",
        Some(&serde_json::json!({"shelf": "book", "turns": 2})),
        &[],
    ));
    for question in ["How do I install Rust?", "And on Windows?"] {
        let a = ok_json(server.post(
            "/v1/agents/ops/chat",
            &serde_json::json!({ "message": question }),
        ));
        assert!(a["conversation_id"].is_string(), "{a}");
    }
    let expected = observed(&server);
    assert!(!expected["logs"].as_array().expect("logs").is_empty());
    server.stop();

    // Copied, verified, and a second run copies nothing and verifies again.
    let data = before.join("data");
    let out = migrate(&data, &cluster.url);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chunks_line = report
        .lines()
        .find(|l| l.starts_with("chunks "))
        .expect("a line for chunks");
    let cells: Vec<&str> = chunks_line.split_whitespace().collect();
    assert!(
        cells[1].parse::<u64>().expect("rows") > files.len() as u64,
        "{report}"
    );
    assert_eq!(cells[1], cells[2], "{report}");
    assert_eq!(cells[1], cells[3], "every chunk inserted once: {report}");
    let out = migrate(&data, &cluster.url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in again.lines().skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[3], "0", "a re-run inserted rows: {line}");
    }
    assert_eq!(
        report
            .lines()
            .map(|l| l.split_whitespace().last())
            .collect::<Vec<_>>(),
        again
            .lines()
            .map(|l| l.split_whitespace().last())
            .collect::<Vec<_>>(),
        "same checksums"
    );

    // A server on the database alone (a fresh data directory: indexes rebuilt from the
    // stored vectors) answers exactly as before.
    let after = tmp.path().join("after");
    std::fs::create_dir_all(&after).expect("dir");
    let server = TestServer::start_with_config(
        &after,
        &toml,
        &[("GROUNDWORK__STORE__URL", cluster.url.as_str())],
    );
    let got = to_micros(&observed(&server));
    let expected = to_micros(&expected);
    for (g, e) in got["searches"]
        .as_array()
        .expect("searches")
        .iter()
        .zip(expected["searches"].as_array().expect("searches"))
    {
        let brief = |v: &Value| -> Vec<String> {
            v["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| format!("{}#{} {}", h[0], h[1], h[3]))
                .collect()
        };
        assert_eq!(
            g,
            e,
            "{} {}: {:?} vs {:?}",
            e["mode"],
            e["q"],
            brief(g),
            brief(e)
        );
    }
    assert_eq!(got["agent"], expected["agent"]);
    assert_eq!(got["conversations"], expected["conversations"]);
    assert_eq!(got["messages"], expected["messages"]);
    // Every call logged before the copy, unchanged (the searches of `observed` on the first
    // server were logged after its list was read, and were copied too).
    let logs_after = got["logs"].as_array().expect("logs");
    for e in expected["logs"].as_array().expect("logs") {
        assert!(logs_after.contains(e), "not copied as it was: {e}");
    }
    assert_eq!(got["documents"], expected["documents"]);
    // Uploaded bytes came along (a reindex or a replica reads them from the database).
    let mut admin = postgres::Client::connect(&cluster.url, postgres::NoTls).expect("admin");
    let blobs: i64 = admin
        .query_one("SELECT count(DISTINCT sha256) FROM blobs", &[])
        .expect("blobs")
        .get(0);
    assert_eq!(blobs as usize, files.len());
    // New chunks get new ids (the identity moved past the copied ones).
    let job = ok_json(server.upload(
        "book",
        &[(
            "new.md",
            b"# New\n\nA new chapter about lifetimes.".to_vec(),
        )],
        None,
    ));
    let job = server.wait_job(job["job_id"].as_str().expect("job"));
    assert_eq!(job["ready"], 1, "{job}");
    server.stop();

    // Another deployment into the same database: refused, named.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    crate::service_api::create_key(&other, "default", "admin");
    let out = migrate(&other, &cluster.url);
    assert!(!out.status.success(), "two deployments merged");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another deployment"), "{err}");
}

#[test]
fn replicas_on_one_database_list_each_other_and_a_stopped_one_leaves() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let env = [("GROUNDWORK__STORE__URL", cluster.url.as_str())];
    let a = TestServer::start(&tmp.path().join("a"), &env);
    let b = TestServer::start(&tmp.path().join("b"), &env);
    let replicas = |server: &TestServer| -> Vec<Value> {
        ok_json(server.get("/v1/status"))["replicas"]
            .as_array()
            .cloned()
            .expect("replicas")
    };
    let seen = replicas(&a);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|r| r["alive"] == true), "{seen:?}");
    assert_eq!(seen.iter().filter(|r| r["this"] == true).count(), 1);
    let from_b = replicas(&b);
    let ids = |v: &[Value]| {
        let mut ids: Vec<String> = v.iter().map(|r| r["id"].to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&seen), ids(&from_b), "both see the same replicas");
    let b_id = from_b.iter().find(|r| r["this"] == true).expect("b itself")["id"].clone();
    // A replica that stops says so; the other lists only itself.
    b.stop();
    let left = replicas(&a);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(left[0]["id"], b_id);
    assert_eq!(left[0]["this"], true);
    a.stop();
}

#[test]
fn workflow_claims_hold_the_kind_limit_across_processes_and_lapsed_ones_are_taken_over() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let options = PgOptions {
        url: cluster.url.clone(),
        pool_size: 4,
        ..PgOptions::default()
    };
    // Three stores = three processes' worth of sessions.
    let stores: Vec<Arc<PgStore>> = (0..3)
        .map(|_| Arc::new(PgStore::connect(&options).expect("connect")))
        .collect();
    let tenant = stores[0].ensure_tenant("t").expect("tenant").id;
    const RUNS: usize = 300;
    for i in 0..RUNS {
        stores[i % 3]
            .create_workflow(&NewWorkflow {
                id: format!("wf-{i:04}"),
                tenant_id: tenant.clone(),
                kind: if i % 2 == 0 { "limited" } else { "noop" }.into(),
                subject: None,
                idempotency_key: None,
                input: Value::Null,
            })
            .expect("create");
    }
    let limits: std::collections::HashMap<String, usize> =
        [("limited".to_owned(), 3), ("noop".to_owned(), 64)].into();
    let limited_now = Arc::new(AtomicUsize::new(0));
    let limited_most = Arc::new(AtomicUsize::new(0));
    let claimed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // Six claimers (two per process), each executing what it claims as a no-op run.
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let store = stores[t % 3].clone();
            let limits = limits.clone();
            let (now, most, claimed) = (limited_now.clone(), limited_most.clone(), claimed.clone());
            std::thread::spawn(move || {
                let holder = format!("replica-{t}");
                let mut idle = 0;
                while idle < 20 {
                    let got = store
                        .claim_workflows(&ClaimRequest {
                            holder: &holder,
                            lease: Duration::from_secs(30),
                            now: chrono::Utc::now(),
                            free: 2,
                            limits: &limits,
                            exclude: &[],
                        })
                        .expect("claim");
                    if got.is_empty() {
                        idle += 1;
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    idle = 0;
                    for mut wf in got {
                        assert_eq!(wf.status, WorkflowStatus::Running);
                        assert_eq!(wf.runs, 1, "{} claimed twice", wf.id);
                        claimed.fetch_add(1, Ordering::SeqCst);
                        let limited = wf.kind == "limited";
                        if limited {
                            // Held long enough that claims race for the last slot (without the
                            // claims' lock this fails every time; with 2 ms, one run in two).
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(10));
                            // Counted out before the release commits: never above the truth.
                            now.fetch_sub(1, Ordering::SeqCst);
                        }
                        wf.status = WorkflowStatus::Completed;
                        wf.finished_at = Some(chrono::Utc::now());
                        store.save_workflow(&wf).expect("release");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("claimer");
    }
    let took = started.elapsed();
    assert_eq!(
        claimed.load(Ordering::SeqCst),
        RUNS,
        "every run claimed exactly once"
    );
    let most = limited_most.load(Ordering::SeqCst);
    assert!(
        most <= 3,
        "{most} `limited` runs at once over three processes (limit 3)"
    );
    eprintln!(
        "claims: {RUNS} runs claimed and released by 6 claimers over 3 pools in {:.2} s (half \
         of them holding one of 3 slots for 10 ms, so not a claim rate); `limited` runs at \
         once at most {most}",
        took.as_secs_f64()
    );

    // A claim whose holder stops renewing is taken over once its lease lapses, and the old
    // holder is fenced off.
    stores[0]
        .create_workflow(&NewWorkflow {
            id: "lapsing".into(),
            tenant_id: tenant.clone(),
            kind: "noop".into(),
            subject: None,
            idempotency_key: None,
            input: Value::Null,
        })
        .expect("create");
    let claim = |store: &PgStore, holder: &str| {
        store
            .claim_workflows(&ClaimRequest {
                holder,
                lease: Duration::from_millis(500),
                now: chrono::Utc::now(),
                free: 1,
                limits: &limits,
                exclude: &[],
            })
            .expect("claim")
    };
    let first = claim(&stores[0], "dead");
    assert_eq!(first.len(), 1);
    assert!(
        claim(&stores[1], "alive").is_empty(),
        "taken while its lease holds"
    );
    let renewed = stores[0]
        .renew_leases("dead", &[Claim::of(&first[0])], Duration::from_millis(500))
        .expect("renew");
    assert!(renewed[0].held);
    std::thread::sleep(Duration::from_millis(700));
    let second = claim(&stores[1], "alive");
    assert_eq!(second.len(), 1, "taken over after the lease lapsed");
    assert_eq!(second[0].runs, 2);
    let renewed = stores[0]
        .renew_leases("dead", &[Claim::of(&first[0])], Duration::from_millis(500))
        .expect("renew");
    assert!(!renewed[0].held);
    let err = stores[0]
        .save_progress(&Claim::of(&first[0]), &Value::Bool(true))
        .expect_err("fenced");
    assert!(claim_lost(&err), "{err}");
    let err = stores[0].save_workflow(&first[0]).expect_err("fenced");
    assert!(claim_lost(&err), "{err}");
    stores[1]
        .save_progress(&Claim::of(&second[0]), &Value::Bool(true))
        .expect("the new holder writes");
}

/// The `p`-quantile of `xs` (sorted in place).
fn quantile(xs: &mut [f64], p: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

/// `n` Markdown files cut from the Rust book's chapters at a line boundary near `bytes` (the
/// test's time goes to the replicas, not to embedding).
fn short_files(n: usize, bytes: usize) -> Option<Vec<(String, Vec<u8>)>> {
    Some(
        chapters(n)?
            .into_iter()
            .map(|(name, text)| {
                let cut = text
                    .iter()
                    .enumerate()
                    .skip(bytes)
                    .find(|(_, b)| **b == b'\n')
                    .map_or(text.len(), |(i, _)| i);
                (name, text[..cut].to_vec())
            })
            .collect(),
    )
}

#[test]
fn three_replicas_share_an_ingest_survive_a_kill_and_answer_alike() {
    let Some(files) = short_files(95, 1_500) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let env = [
        ("GROUNDWORK__STORE__URL", cluster.url.as_str()),
        // Two runs per replica, six ingest runs at once over the three (the kind's limit
        // holds cluster-wide): each replica has work in hand.
        ("GROUNDWORK__WORKFLOW__WORKERS", "2"),
        ("GROUNDWORK__WORKFLOW__INGEST_CONCURRENCY", "6"),
        // A dead replica's runs are taken over 3 s after its last renewal.
        ("GROUNDWORK__WORKFLOW__LEASE_SECS", "3"),
    ];
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("r{i}"))).collect();
    let mut replicas: Vec<Option<TestServer>> = dirs
        .iter()
        .map(|d| Some(TestServer::start(d, &env)))
        .collect();
    let r = |replicas: &[Option<TestServer>], i: usize| -> TestServer {
        replicas[i].as_ref().expect("running").with_key(None)
    };
    r(&replicas, 0).create_kb("book");
    // One upload per file, round-robin over the live replicas; the third is killed (SIGKILL)
    // a third of the way, with runs in hand and the rest of the uploads still to come.
    let started = Instant::now();
    let mut jobs = Vec::new();
    let mut killed = None;
    for (i, (name, bytes)) in files.iter().enumerate() {
        if i == files.len() / 3 {
            while ok_json(r(&replicas, 0).get("/v1/kbs/book"))["stats"]["ready"]
                .as_u64()
                .expect("ready")
                < 3
            {
                assert!(started.elapsed() < Duration::from_secs(120));
                std::thread::sleep(Duration::from_millis(20));
            }
            replicas[2].take().expect("running").kill();
            killed = Some(Instant::now());
        }
        let live = if killed.is_some() { i % 2 } else { i % 3 };
        let receipt = ok_json(r(&replicas, live).upload("book", &[(name, bytes.clone())], None));
        jobs.push(receipt["job_id"].as_str().expect("job").to_owned());
    }
    for job in &jobs {
        let job = r(&replicas, 0).wait_job(job);
        assert_eq!(job["ready"], 1, "{job}");
        assert_eq!(job["failed"], 0, "{job}");
    }
    // A run records its end just after its last document is published.
    for job in &jobs {
        let wf = r(&replicas, 1).wait_workflow_end(job);
        assert_eq!(wf["status"], "completed", "{wf}");
    }
    eprintln!(
        "3 replicas: {} uploads ready {:.1} s after the first upload, {:.1} s after the kill",
        files.len(),
        started.elapsed().as_secs_f64(),
        killed.expect("killed").elapsed().as_secs_f64()
    );
    // The killed replica's runs were taken over (claimed a second time), not lost.
    let runs = ok_json(r(&replicas, 0).get("/v1/workflows?kind=ingest&limit=200"));
    let runs = runs["items"].as_array().expect("items");
    assert_eq!(runs.len(), files.len());
    let taken_over = runs.iter().filter(|w| w["runs"].as_u64() > Some(1)).count();
    assert!(
        taken_over >= 1,
        "no run of the killed replica was taken over"
    );
    eprintln!("{taken_over} ingest runs taken over from the killed replica");

    // Every document once, every chunk once.
    let docs = ok_json(r(&replicas, 0).get("/v1/kbs/book/documents?limit=500"));
    let items = docs["items"].as_array().expect("items");
    assert_eq!(items.len(), files.len());
    let mut names: Vec<&str> = items
        .iter()
        .map(|d| d["name"].as_str().expect("name"))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), files.len());
    let mut total = 0;
    for d in items {
        assert_eq!(d["status"], "ready", "{d}");
        let id = d["id"].as_str().expect("id");
        let chunks =
            ok_json(r(&replicas, 1).get(&format!("/v1/kbs/book/documents/{id}/chunks?limit=1000")));
        let ordinals: Vec<u64> = chunks["items"]
            .as_array()
            .expect("chunks")
            .iter()
            .map(|c| c["ordinal"].as_u64().expect("ordinal"))
            .collect();
        assert_eq!(ordinals, (0..ordinals.len() as u64).collect::<Vec<_>>());
        total += ordinals.len();
    }

    // The killed replica comes back; all three answer alike at the latest sequence.
    replicas[2] = Some(TestServer::start(&dirs[2], &env));
    let seq = ok_json(r(&replicas, 0).get("/v1/kbs/book"))["index_seq"]
        .as_u64()
        .expect("index_seq");
    let queries = [
        "ownership and borrowing",
        "how do I read a file",
        "trait objects and dynamic dispatch",
        "cargo workspaces",
        "panic or Result",
    ];
    for q in queries {
        for mode in ["hybrid", "bm25", "dense"] {
            let answers: Vec<Value> = (0..3)
                .map(|i| {
                    ok_json(r(&replicas, i).post(
                        "/v1/kbs/book/search",
                        &serde_json::json!({ "query": q, "top_k": 8, "mode": mode, "min_seq": seq }),
                    ))
                })
                .collect();
            let ranked = |a: &Value| -> Vec<(u64, String)> {
                a["results"]
                    .as_array()
                    .expect("results")
                    .iter()
                    .map(|h| {
                        (
                            h["chunk_id"].as_u64().expect("chunk id"),
                            format!("{:.5}", h["score"].as_f64().expect("score")),
                        )
                    })
                    .collect()
            };
            assert!(!ranked(&answers[0]).is_empty(), "{q}");
            for a in &answers[1..] {
                assert_eq!(ranked(a), ranked(&answers[0]), "{q} ({mode})");
                assert!(a["index_seq"].as_u64() >= Some(seq));
            }
        }
    }
    let status = ok_json(r(&replicas, 1).get("/v1/status"));
    assert_eq!(
        status["indexed_chunks"].as_u64(),
        Some(total as u64),
        "{status}"
    );

    // Follow lag: a document deleted through one replica leaves the others' indexes.
    let mut lags = Vec::new();
    for (n, d) in items.iter().take(20).enumerate() {
        let id = d["id"].as_str().expect("id");
        let writer = r(&replicas, n % 3);
        assert_eq!(
            writer
                .delete(&format!("/v1/kbs/book/documents/{id}"))
                .status(),
            204
        );
        let deleted_at = Instant::now();
        let want = ok_json(writer.get("/v1/kbs/book"))["index_seq"]
            .as_u64()
            .expect("seq");
        let reader = r(&replicas, (n + 1) % 3);
        loop {
            let res = ok_json(reader.post(
                "/v1/kbs/book/search",
                &serde_json::json!({ "query": "rust", "top_k": 1, "mode": "bm25" }),
            ));
            if res["index_seq"].as_u64() >= Some(want) {
                lags.push(deleted_at.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                deleted_at.elapsed() < Duration::from_secs(10),
                "no follow: {res}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // Read-your-writes on a third replica: never the deleted document.
        let third = r(&replicas, (n + 2) % 3);
        let res = ok_json(third.post(
            "/v1/kbs/book/search",
            &serde_json::json!({
                "query": d["name"].as_str().expect("name"), "top_k": 50, "mode": "bm25",
                "min_seq": want
            }),
        ));
        assert!(res["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|h| h["document_id"] != id));
    }
    eprintln!(
        "follow lag (delete answered on one replica → visible on another), 20 changes: \
         p50 {:.1} ms, p99 {:.1} ms",
        quantile(&mut lags.clone(), 0.5),
        quantile(&mut lags, 0.99)
    );
    for s in replicas.into_iter().flatten() {
        s.stop();
    }
}

#[test]
fn budgets_hold_over_three_replicas_under_200_concurrent_calls() {
    use crate::fake_llm::FakeLlm;
    let (oai, claude) = (FakeLlm::start(), FakeLlm::start());
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    // 1,000 USD per million tokens both ways; one route capped at 1.5 USD a day.
    let extra = r#"
[gateway.routes.capped]
targets = ["oai/gpt-priced"]
cache_ttl_secs = 0

[gateway.prices.gpt-priced]
input = 1000.0
output = 1000.0

[gateway.routes.cached]
targets = ["oai/gpt-cached"]
cache_ttl_secs = 600

[[gateway.budgets]]
scope = "route"
id = "capped"
window = "day"
limit_usd = 1.5
"#;
    let toml = crate::gateway::config(&oai.base, &claude.base, extra);
    let env = [("GROUNDWORK__STORE__URL", cluster.url.as_str())];
    let replicas: Vec<TestServer> = (0..3)
        .map(|i| {
            let dir = tmp.path().join(format!("r{i}"));
            std::fs::create_dir_all(&dir).expect("dir");
            TestServer::start_with_config(&dir, &toml, &env)
        })
        .collect();
    let body = serde_json::json!({"model": "capped", "max_tokens": 20, "temperature": 0.5,
                                  "messages": [{"role": "user", "content": "How tall is the tower?"}]});
    let started = Instant::now();
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let (server, body) = (&replicas[i % 3], &body);
                s.spawn(move || {
                    let res = server.post("/v1/chat/completions", body);
                    (res.status().as_u16(), res.text().unwrap_or_default())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let took = started.elapsed();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, _)| *s == 429).count();
    let other: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s != 200 && *s != 429)
        .take(2)
        .collect();
    assert_eq!(
        ok + refused,
        200,
        "{other:?}\n{}",
        std::fs::read_to_string(tmp.path().join("r0/data.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("error"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(ok > 10 && refused > 0, "ok {ok}");
    let calls = crate::gateway::wait_logs(&replicas[1], "route=capped&status=ok&limit=500", ok);
    let settled: f64 = calls
        .iter()
        .map(|c| c["cost_usd"].as_f64().expect("cost"))
        .sum();
    assert!(
        settled <= 1.5 + 1e-9,
        "settled {settled} over three replicas"
    );
    // Each call reserves its worst case: (prompt bytes + role + 16 framing + 20) tokens.
    let largest_reservation =
        ("How tall is the tower?".len() as f64 + "user".len() as f64 + 16.0 + 20.0) * 0.001;
    assert!(
        ok as f64 >= (1.5 / largest_reservation).floor() - 1.0,
        "stopped early after {ok} calls"
    );
    eprintln!(
        "budget over 3 replicas: 200 concurrent calls in {:.2} s, {ok} served, {refused} refused, \
         {settled:.3} of 1.5 USD settled",
        took.as_secs_f64()
    );
    // The response cache is shared: an answer cached by one replica is served by another
    // without a model call.
    let body = serde_json::json!({"model": "cached", "max_tokens": 20, "temperature": 0,
                                  "messages": [{"role": "user", "content": "Cache me."}]});
    let first = replicas[0].post("/v1/chat/completions", &body);
    assert_eq!(first.headers()["x-groundwork-cache"], "miss");
    let first: Value = first.json().expect("json");
    let second = replicas[2].post("/v1/chat/completions", &body);
    assert_eq!(second.headers()["x-groundwork-cache"], "hit");
    let second: Value = second.json().expect("json");
    assert_eq!(
        first["choices"][0]["message"],
        second["choices"][0]["message"]
    );
    assert_eq!(oai.requests("gpt-cached").len(), 1);
    for s in replicas {
        s.stop();
    }
}

#[test]
fn a_rolling_restart_of_three_replicas_fails_no_search() {
    let Some(files) = short_files(12, 1_500) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let env = [("GROUNDWORK__STORE__URL", cluster.url.as_str())];
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("r{i}"))).collect();
    let mut replicas: Vec<Option<TestServer>> = dirs
        .iter()
        .map(|d| Some(TestServer::start(d, &env)))
        .collect();
    let r = |replicas: &[Option<TestServer>], i: usize| -> TestServer {
        replicas[i].as_ref().expect("running").with_key(None)
    };
    r(&replicas, 0).create_kb("book");
    let upload: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let job = ok_json(r(&replicas, 1).upload("book", &upload, None))["job_id"]
        .as_str()
        .expect("job")
        .to_owned();
    r(&replicas, 2).wait_job(&job);
    // What a load balancer does: the live replicas' addresses, and a search whose connection
    // was refused or closed without an answer tried on the next one (`retries`, `option
    // redispatch` and `retry-on conn-failure empty-response` in deploy/haproxy.cfg). One
    // connection per request, as HAProxy's `http-server-close` makes.
    let urls = Arc::new(std::sync::RwLock::new(
        (0..3)
            .map(|i| r(&replicas, i).url.clone())
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let searchers: Vec<_> = (0..4)
        .map(|t| {
            let (urls, stop, done, failed) =
                (urls.clone(), stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .expect("client");
                let mut n = t;
                while !stop.load(Ordering::SeqCst) {
                    let targets = urls.read().expect("urls").clone();
                    let mut answered = false;
                    for k in 0..targets.len() {
                        let url = &targets[(n + k) % targets.len()];
                        let res = http
                            .post(format!("{url}/v1/kbs/book/search"))
                            .json(&serde_json::json!({ "query": "ownership", "top_k": 3 }))
                            .send();
                        match res {
                            // Refused, or closed before any answer (a connection still in the
                            // listen queue of a replica that stops): the search never ran
                            // there, and the next replica is asked.
                            Err(e) if e.is_connect() || e.is_request() => continue,
                            Ok(r) if r.status() == 200 => answered = true,
                            Ok(r) => eprintln!("search failed: {} {:?}", r.status(), r.text()),
                            Err(e) => eprintln!("search failed: {e}"),
                        }
                        break;
                    }
                    if answered {
                        done.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // One at a time, as `systemctl restart groundwork@N` does: stop (SIGTERM: in-flight
    // requests finish, new connections are refused), start again on the same data directory,
    // wait until ready, then the next.
    let started = Instant::now();
    for (i, dir) in dirs.iter().enumerate() {
        replicas[i].take().expect("running").stop();
        replicas[i] = Some(TestServer::start(dir, &env));
        urls.write().expect("urls")[i] = r(&replicas, i).url.clone();
        assert_eq!(r(&replicas, i).get("/readyz").status(), 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::SeqCst);
    for s in searchers {
        s.join().expect("searcher");
    }
    let (done, failed) = (done.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!(
        "rolling restart of 3 replicas over {:.1} s: {done} searches answered, {failed} failed",
        started.elapsed().as_secs_f64()
    );
    assert!(done > 100, "{done} searches");
    assert_eq!(failed, 0);
    for s in replicas.into_iter().flatten() {
        s.stop();
    }
}

#[test]
fn a_starting_replica_requeues_only_the_tasks_of_replicas_gone_silent() {
    use groundwork::store::agents::NewTask;
    use groundwork::store::AgentStore;
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let store = PgStore::connect(&PgOptions {
        url: cluster.url.clone(),
        ..PgOptions::default()
    })
    .expect("connect");
    let tenant = store.ensure_tenant("t").expect("tenant").id;
    let now = chrono::Utc::now();
    let beat = |id: &str, at: chrono::DateTime<chrono::Utc>| beat_as(&store, id, at, "");
    // Replica `alive` beats; replica `dead` last beat a minute ago.
    beat("alive", now);
    beat("dead", now - chrono::Duration::seconds(60));
    let mut claimed = Vec::new();
    for (agent, holder) in [("a1", "alive"), ("a2", "dead"), ("a3", "newcomer")] {
        store
            .load_agent(&tenant, agent, &serde_json::json!({}))
            .expect("agent");
        store
            .enqueue_task(&NewTask {
                tenant_id: tenant.clone(),
                agent_id: agent.into(),
                kind: "state.patch".into(),
                payload: serde_json::json!({}),
                max_attempts: 3,
                run_at: now,
                schedule_id: None,
            })
            .expect("task");
        let t = store
            .claim_task(&tenant, agent, now, holder)
            .expect("claim")
            .expect("due");
        claimed.push((agent, t.id));
    }
    // A newcomer starts: only the silent replica's task goes back (not the live one's, not
    // its own).
    let requeued = store
        .requeue_running_tasks("newcomer", now - chrono::Duration::seconds(15))
        .expect("requeue");
    assert_eq!(requeued, 1);
    for (agent, id) in claimed {
        let t = store.task(&tenant, agent, id).expect("task");
        let want = if agent == "a2" { "pending" } else { "running" };
        assert_eq!(t.status.as_str(), want, "{agent}");
    }
}

#[test]
fn the_load_balancer_configuration_of_deploy_is_valid() {
    // HAProxy from Debian (installed by scripts/system-packages.sh --tests) checks its file.
    let out = std::process::Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(root().join("deploy/haproxy.cfg"))
        .output()
        .expect("haproxy (scripts/system-packages.sh --tests installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Records a heartbeat of replica `id` at `at`, answering at `address`.
fn beat_as(store: &PgStore, id: &str, at: chrono::DateTime<chrono::Utc>, address: &str) {
    use groundwork::store::{ReplicaRecord, ReplicaStore};
    store
        .heartbeat(
            &ReplicaRecord {
                id: id.into(),
                host: "h".into(),
                pid: 1,
                address: address.into(),
                home: String::new(),
                version: "v".into(),
                started_at: at,
                heartbeat_at: at,
            },
            at - chrono::Duration::days(1),
        )
        .expect("heartbeat")
}

#[test]
fn an_agent_lease_goes_to_one_claimer_and_passes_on_when_its_holder_falls_silent() {
    use groundwork::store::agents::Holding;
    use groundwork::store::AgentStore;
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let store = Arc::new(
        PgStore::connect(&PgOptions {
            url: cluster.url.clone(),
            ..PgOptions::default()
        })
        .expect("connect"),
    );
    let now = chrono::Utc::now();
    let beat = |id: &str, at: chrono::DateTime<chrono::Utc>| {
        beat_as(&store, id, at, &format!("http://{id}:1"))
    };
    let alive_since = || chrono::Utc::now() - chrono::Duration::seconds(15);
    for i in 0..8 {
        beat(&format!("r{i}"), now);
    }
    // 8 replicas claim 20 agents at once: each agent goes to exactly one, and every other
    // claimer is told which.
    let outcomes: Vec<(String, String, Holding)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                s.spawn(move || {
                    (0..20)
                        .map(|a| {
                            let (holder, agent) = (format!("r{i}"), format!("a{a}"));
                            let h = store
                                .claim_agent(
                                    "t",
                                    &agent,
                                    &holder,
                                    &format!("{holder}-{a}"),
                                    alive_since(),
                                )
                                .expect("claim");
                            (agent, holder, h)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("claimer"))
            .collect()
    });
    for a in 0..20 {
        let agent = format!("a{a}");
        let of: Vec<&(String, String, Holding)> =
            outcomes.iter().filter(|o| o.0 == agent).collect();
        let winners: Vec<&str> = of
            .iter()
            .filter(|o| o.2 == Holding::Held)
            .map(|o| o.1.as_str())
            .collect();
        assert_eq!(winners.len(), 1, "{agent}: {of:?}");
        for o in of.iter().filter(|o| o.2 != Holding::Held) {
            assert_eq!(
                o.2,
                Holding::Elsewhere {
                    replica: winners[0].to_owned(),
                    address: format!("http://{}:1", winners[0]),
                },
                "{agent}"
            );
        }
    }
    // The holder claims again (a new activation): still its own.
    let holder_of = |agent: &str| match store
        .claim_agent("t", agent, "probe", "probe", alive_since())
        .expect("claim")
    {
        Holding::Elsewhere { replica, .. } => replica,
        Holding::Held => panic!("{agent} was free"),
    };
    let h0 = holder_of("a0");
    assert_eq!(
        store
            .claim_agent("t", "a0", &h0, "again", alive_since())
            .expect("claim"),
        Holding::Held
    );
    // Released under an old token: nothing changes; under the current one: free.
    store.release_agent("t", "a0", "stale").expect("release");
    assert_eq!(holder_of("a0"), h0);
    store.release_agent("t", "a0", "again").expect("release");
    assert_eq!(
        store
            .claim_agent("t", "a0", "r7", "r7-new", alive_since())
            .expect("claim"),
        Holding::Held
    );
    // A holder that stops beating loses its agents to the next claimer.
    let h1 = holder_of("a1");
    beat(&h1, now - chrono::Duration::seconds(60));
    let other = if h1 == "r0" { "r1" } else { "r0" };
    assert_eq!(
        store
            .claim_agent("t", "a1", other, "takeover", alive_since())
            .expect("claim"),
        Holding::Held
    );
    assert_eq!(holder_of("a1"), other);
    // A stopping replica releases all of its own.
    let held = store.release_agents(other).expect("release");
    assert!(held >= 1);
    assert_eq!(
        store
            .claim_agent("t", "a1", "r5", "r5-a1", alive_since())
            .expect("claim"),
        Holding::Held
    );
}

/// Repeats `f` while it answers 503 (the agent's holder unreachable, or moving); returns the
/// answer and how long the 503s lasted.
fn through_takeover(
    f: impl Fn() -> reqwest::blocking::Response,
) -> (reqwest::blocking::Response, Duration) {
    let started = Instant::now();
    loop {
        let res = f();
        if res.status() != 503 {
            return (res, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still 503 after 60 s: {}",
            res.text().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn an_agent_lives_on_one_replica_keeps_its_history_through_kills_and_streams_resume_elsewhere() {
    use crate::agents::{
        add_doc, deltas, fake_config, read_deltas, sse_events, stream_location, ws_connect,
        ws_until,
    };
    use crate::fake_llm::{Behavior, FakeLlm};
    use serde_json::json;
    let llm = FakeLlm::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let toml = fake_config(&llm.base);
    let env = [("GROUNDWORK__STORE__URL", cluster.url.as_str())];
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("r{i}"))).collect();
    let start = |i: usize| {
        std::fs::create_dir_all(&dirs[i]).expect("dir");
        TestServer::start_with_config(&dirs[i], &toml, &env)
    };
    let mut replicas: Vec<Option<TestServer>> = (0..3).map(|i| Some(start(i))).collect();
    let r = |replicas: &[Option<TestServer>], i: usize| -> TestServer {
        replicas[i].as_ref().expect("running").with_key(None)
    };
    let id_of = |server: &TestServer| -> String {
        ok_json(server.get("/v1/status"))["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .find(|x| x["this"] == true)
            .expect("itself")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let mut ids: Vec<String> = (0..3).map(|i| id_of(&r(&replicas, i))).collect();
    r(&replicas, 0).create_kb("ops");
    add_doc(
        &r(&replicas, 0),
        "ops",
        "backup.md",
        crate::agents::BACKUP_DOC,
    );
    // Every replica's index has it before the agent searches anywhere.
    for i in 0..3 {
        let started = Instant::now();
        while r(&replicas, i)
            .search("ops", "nightly backup", 3, "hybrid")
            .is_empty()
        {
            assert!(started.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Replica 0 sees the agent first and holds it; the others carry its requests there.
    ok_json(r(&replicas, 0).send(
        "PUT",
        "/v1/agents/bot/state",
        Some(&json!({"topic": "backups", "fires": []})),
        &[],
    ));
    let status = ok_json(r(&replicas, 0).get("/v1/status"));
    assert!(
        status["replicas"]
            .as_array()
            .expect("list")
            .iter()
            .all(|x| x["address"]
                .as_str()
                .is_some_and(|a| a.starts_with("http://127.0.0.1:"))),
        "{status}"
    );
    // A WebSocket opened on replica 1 is carried to the holder and sees a write made on 2.
    let mut ws = ws_connect(&r(&replicas, 1), "bot");
    let hello = ws_until(&mut ws, |v| v["type"] == "hello");
    assert_eq!(hello[0]["agent"]["state"]["topic"], "backups");
    let res = r(&replicas, 2).send(
        "PATCH",
        "/v1/agents/bot/state",
        Some(&json!({"seen_from": 2})),
        &[("content-type", "application/merge-patch+json")],
    );
    assert_eq!(
        res.headers()["x-groundwork-agent-replica"]
            .to_str()
            .expect("header"),
        ids[0],
        "replica 2 carried the write to the holder"
    );
    ok_json(res);
    let got = ws_until(&mut ws, |v| v["type"] == "state");
    assert_eq!(got.last().expect("state")["state"]["seen_from"], 2);
    drop(ws);

    // A schedule due during the test fires once over the three replicas.
    ok_json(r(&replicas, 1).post(
        "/v1/agents/bot/schedules",
        &json!({"after_secs": 1, "task": {"kind": "state.patch",
                "payload": {"patch": [{"op": "add", "path": "/fires/-", "value": "once"}]}}}),
    ));
    let every = ok_json(r(&replicas, 2).post(
        "/v1/agents/bot/schedules",
        &json!({"cron": "every 1s", "task": {"kind": "state.patch",
                "payload": {"patch": [{"op": "add", "path": "/fires/-", "value": "tick"}]}}}),
    ));

    // First turn, asked on replica 1.
    llm.script(
        "gpt-main",
        &[Behavior::Answer(
            "The nightly backup runs at 02:00 UTC [1].".into(),
        )],
    );
    let a1 = ok_json(r(&replicas, 1).post(
        "/v1/agents/bot/chat",
        &json!({"message": "When does the nightly backup run?"}),
    ));
    assert_eq!(a1["found"], true, "{a1}");
    let conversation = a1["conversation_id"]
        .as_str()
        .expect("conversation")
        .to_owned();

    // Second turn streamed through replica 2, which is killed mid-answer; the client
    // resumes on replica 1 after the last event it got and receives the rest from the holder.
    let long =
        "The backup copies are kept in the vault bucket gw-backups in Frankfurt [1]. ".repeat(40);
    llm.answer("gpt-fast", "Where are the nightly backup copies stored?");
    llm.script("gpt-main", &[Behavior::Answer(long.clone())]);
    let mut res = r(&replicas, 2).post(
        "/v1/agents/bot/chat",
        &json!({"message": "And where are they kept?", "conversation_id": conversation, "stream": true}),
    );
    assert_eq!(res.status(), 200);
    let location = stream_location(&res);
    let first = read_deltas(&mut res, 3);
    replicas[2].take().expect("running").kill();
    drop(res);
    let last = first.last().expect("events").0;
    let rest = sse_events(
        &r(&replicas, 1)
            .send(
                "GET",
                &location,
                None,
                &[("last-event-id", &last.to_string())],
            )
            .text()
            .expect("body"),
    );
    let mut all = first.clone();
    all.extend(rest);
    assert_eq!(
        all.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(all.last().expect("one").1, "done");
    assert_eq!(deltas(&all), long);
    replicas[2] = Some(start(2));
    // A restarted replica is a new replica (a new id).
    ids[2] = id_of(&r(&replicas, 2));

    // The holder is killed between turns: the next turn, asked on replica 1, waits for the
    // takeover (503 with Retry-After until replica 0 has been silent 15 s) and then answers
    // there with the agent's state and the whole conversation.
    assert!(schedule_runs_on(&r(&replicas, 1), &every["id"]) >= 1);
    replicas[0].take().expect("running").kill();
    let killed = Instant::now();
    llm.answer("gpt-fast", "How long are the nightly backup copies kept?");
    llm.script(
        "gpt-main",
        &[Behavior::Answer("They are kept for 30 days [1].".into())],
    );
    let (res, unavailable) = through_takeover(|| {
        r(&replicas, 1).post(
            "/v1/agents/bot/chat",
            &json!({"message": "For how long?", "conversation_id": conversation}),
        )
    });
    let taken_over = killed.elapsed();
    // The agent went to whichever live replica claimed it first after the silence: replica
    // 1 (retrying this turn) or replica 2 (waking the agent for its schedule's task).
    // (A forwarded answer names the holder; one served where it was asked does not.)
    let holder = match res.headers().get("x-groundwork-agent-replica") {
        None => 1,
        Some(v) => {
            let id = v.to_str().expect("header");
            ids.iter().position(|x| x == id).expect("a replica's id")
        }
    };
    assert!(holder == 1 || holder == 2, "served by replica {holder}");
    let other = 3 - holder;
    let a3 = ok_json(res);
    assert_eq!(a3["found"], true, "{a3}");
    let rewrite = llm.requests("gpt-fast");
    let prompt = rewrite.last().expect("a rewrite")["messages"].to_string();
    assert!(
        prompt.contains("User: And where are they kept?"),
        "the new holder rewrote the follow-up from the stored conversation: {prompt}"
    );
    let messages = ok_json(r(&replicas, 2).get(&format!(
        "/v1/agents/bot/conversations/{conversation}/messages"
    )));
    assert_eq!(messages["items"].as_array().expect("items").len(), 6);
    let state = ok_json(r(&replicas, 2).get("/v1/agents/bot/state"));
    assert_eq!(state["topic"], "backups");
    assert_eq!(state["seen_from"], 2);
    println!(
        "agent takeover: holder killed → next turn answered on replica {holder} after {:.1} s \
         ({:.1} s of 503s)",
        taken_over.as_secs_f64(),
        unavailable.as_secs_f64()
    );

    // The new holder is killed mid-stream: a resume on the other live replica gets what was
    // stored, then an `error` saying the answer was interrupted — never a hang, never a
    // stream that looks complete.
    llm.answer("gpt-fast", "Where are the nightly backup copies stored?");
    llm.script("gpt-main", &[Behavior::Answer(long.clone())]);
    let mut res = r(&replicas, holder).post(
        "/v1/agents/bot/chat",
        &json!({"message": "Where again?", "conversation_id": conversation, "stream": true}),
    );
    let location = stream_location(&res);
    let first = read_deltas(&mut res, 3);
    // Let the holder's writer store what the client has (it writes every 100 ms).
    std::thread::sleep(Duration::from_millis(300));
    replicas[holder].take().expect("running").kill();
    drop(res);
    let last = first.last().expect("events").0;
    let (res, _) = through_takeover(|| {
        r(&replicas, other).send(
            "GET",
            &location,
            None,
            &[("last-event-id", &last.to_string())],
        )
    });
    assert_eq!(res.status(), 200);
    let rest = sse_events(&res.text().expect("body"));
    let end = rest.last().expect("an event");
    assert_eq!(end.1, "error", "{rest:?}");
    assert_eq!(end.2["code"], "interrupted");
    assert!(rest.iter().all(|e| e.0 > last), "{rest:?}");

    // Exactly one task per schedule run (three replicas fired due schedules all along): the
    // runs counted before the schedule is deleted, and at most one more while deleting.
    let runs = schedule_runs_on(&r(&replicas, other), &every["id"]);
    let path = format!(
        "/v1/agents/bot/schedules/{}",
        every["id"].as_str().expect("id")
    );
    let (res, _) = through_takeover(|| r(&replicas, other).delete(&path));
    let code = res.status();
    assert!(
        code.is_success(),
        "{code}: {}",
        res.text().unwrap_or_default()
    );
    let tasks = ok_json(r(&replicas, other).get("/v1/agents/bot/tasks?limit=1000"));
    let ticks = tasks["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|t| t["schedule_id"] == every["id"])
        .count() as u64;
    assert!(
        runs > 10 && (runs..=runs + 1).contains(&ticks),
        "one task per run of the cron schedule: {ticks} tasks, {runs} runs"
    );
    let state = ok_json(r(&replicas, other).get("/v1/agents/bot/state"));
    let fires = state["fires"].as_array().expect("fires");
    assert_eq!(
        fires.iter().filter(|f| *f == "once").count(),
        1,
        "the one-off schedule fired once: {fires:?}"
    );
}

fn schedule_runs_on(server: &TestServer, id: &Value) -> u64 {
    ok_json(server.get("/v1/agents/bot/schedules"))["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|s| &s["id"] == id)
        .map(|s| s["runs"].as_u64().expect("runs"))
        .unwrap_or(0)
}

#[test]
fn rate_limits_hold_over_three_replicas_under_300_concurrent_requests() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(&tmp.path().join("pg"));
    let env = [
        ("GROUNDWORK__STORE__URL", cluster.url.as_str()),
        ("GROUNDWORK__RATE_LIMITS__KEY_RPM", "30"),
    ];
    let replicas: Vec<TestServer> = (0..3)
        .map(|i| TestServer::start(&tmp.path().join(format!("r{i}")), &env))
        .collect();
    let started = Instant::now();
    let codes: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..300)
            .map(|i| {
                let server = &replicas[i % 3];
                s.spawn(move || server.get("/v1/kbs").status().as_u16())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = codes.iter().filter(|c| **c == 200).count();
    let refused = codes.iter().filter(|c| **c == 429).count();
    assert_eq!(admitted + refused, 300, "{codes:?}");
    // 30 a minute per key over all replicas: the full bucket, plus what refilled meanwhile
    // (half a request a second). Counted per process, each replica would have let 30 pass.
    let refill = (elapsed * 30.0 / 60.0).floor() as usize;
    println!(
        "rate limit over 3 replicas: 300 requests in {elapsed:.2} s, {admitted} admitted, \
         {refused} refused (limit 30/min, {refill} refilled)"
    );
    assert!(
        (30..=30 + refill).contains(&admitted),
        "{admitted} admitted in {elapsed:.2} s"
    );
    let res = replicas[1].get("/v1/kbs");
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
}
