//! Promises that hold under pressure (issue 14): each test is named after the broken promise
//! it proves kept — bounded chunks and documents, per-file upload results, …

use serde_json::{json, Value};

use crate::server::{ok_json, problem, TestServer};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gw-limits-")
        .tempdir()
        .expect("tempdir")
}

/// "Chunks have no size bound": a 300,000-byte one-word document is chunked within the byte
/// bound (a search answer stays small), and a document over `max_extracted_chars` fails alone
/// with `too_long` and a reason.
#[test]
fn chunks_have_no_size_bound() {
    let dir = tempdir();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("GROUNDWORK__INGEST__MAX_EXTRACTED_CHARS", "1000000")],
    );
    server.create_kb("blobs");
    let word = "a".repeat(300_000);
    let base64: String = (0..60_000u32)
        .map(|i| {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                [(i * 7 % 64) as usize] as char
        })
        .collect();
    let cjk: String = (0..10_000u32)
        .map(|i| char::from_u32(0x4e00 + i % 2000).expect("cjk"))
        .collect();
    let receipt = ok_json(server.upload(
        "blobs",
        &[
            ("word.txt", word.into_bytes()),
            ("blob.txt", base64.into_bytes()),
            ("cjk.txt", cjk.into_bytes()),
            ("huge.txt", "b".repeat(1_500_000).into_bytes()),
        ],
        None,
    ));
    let job = server.wait_job(receipt["job_id"].as_str().expect("job"));
    assert_eq!(job["ready"], 3, "{job}");
    assert_eq!(job["failed"], 1, "{job}");
    assert_eq!(job["errors"][0]["name"], "huge.txt");
    assert_eq!(job["errors"][0]["code"], "too_long");
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1500000") && m.contains("max_extracted_chars")),
        "{job}"
    );
    let bound = 254 * groundwork::ingest::chunk::BYTES_PER_TOKEN;
    for doc in receipt["documents"]
        .as_array()
        .expect("docs")
        .iter()
        .take(3)
    {
        let id = doc["document_id"].as_str().expect("id");
        let mut offset = 0;
        let mut total = 0;
        loop {
            let page = ok_json(server.get(&format!(
                "/v1/kbs/blobs/documents/{id}/chunks?offset={offset}&limit=1000"
            )));
            let items = page["items"].as_array().expect("items");
            if items.is_empty() {
                break;
            }
            for c in items {
                let len = c["text"].as_str().expect("text").len();
                assert!(len <= bound, "{} has a chunk of {len} bytes", doc["name"]);
                total += len;
            }
            offset += items.len();
        }
        assert!(total >= 25_000, "{}: {total} bytes chunked", doc["name"]);
    }
    let res = server.post(
        "/v1/kbs/blobs/search",
        &json!({"query": "aaaa", "top_k": 100, "mode": "bm25"}),
    );
    let bytes = res.bytes().expect("body").len();
    assert!(
        bytes <= 100 * (bound + 2048),
        "search answer of {bytes} bytes"
    );
    server.stop();
}

/// "One bad file rejects the whole multipart upload": 78 files, 36 of them bad (too large,
/// unsupported, empty) — the 42 good ones are admitted and each bad one is listed with its
/// reason; an upload of only bad files is refused whole, listing them all.
#[test]
fn one_bad_file_rejects_the_whole_multipart_upload() {
    let dir = tempdir();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("GROUNDWORK__INGEST__MAX_FILES_PER_REQUEST", "100"),
            ("GROUNDWORK__INGEST__MAX_FILE_BYTES", "20000"),
        ],
    );
    server.create_kb("mixed");
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut bad = Vec::new();
    for i in 0..78 {
        let (name, bytes, code) = match i % 13 {
            1 | 5 | 9 => (
                format!("big-{i}.txt"),
                vec![b'x'; 30_000],
                Some("payload_too_large"),
            ),
            3 | 7 => (
                format!("photo-{i}.png"),
                b"\x89PNG\r\n\x1a\nrest".to_vec(),
                Some("unsupported_media_type"),
            ),
            11 => (
                format!("empty-{i}.txt"),
                Vec::new(),
                Some("invalid_request"),
            ),
            _ => (
                format!("note-{i}.txt"),
                format!("Note number {i} is about topic {}.", i * 31 % 97).into_bytes(),
                None,
            ),
        };
        if let Some(code) = code {
            bad.push((i, name.clone(), code));
        }
        files.push((name, bytes));
    }
    assert_eq!(bad.len(), 36);
    let parts: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let res = server.upload("mixed", &parts, None);
    assert_eq!(res.status(), 202);
    let receipt: Value = res.json().expect("receipt");
    let admitted = receipt["documents"].as_array().expect("documents");
    assert_eq!(admitted.len(), 42);
    assert!(admitted
        .iter()
        .all(|d| d["name"].as_str().is_some_and(|n| n.starts_with("note-"))));
    let refused = receipt["refused"].as_array().expect("refused");
    assert_eq!(refused.len(), 36, "{receipt}");
    for (r, (i, name, code)) in refused.iter().zip(&bad) {
        assert_eq!(r["index"], *i);
        assert_eq!(r["name"], name.as_str());
        assert_eq!(r["code"], *code);
        assert!(
            r["detail"]
                .as_str()
                .is_some_and(|d| d.contains(name.as_str())),
            "{r}"
        );
    }
    let job = server.wait_job(receipt["job_id"].as_str().expect("job"));
    assert_eq!(job["ready"], 42, "{job}");

    let only_bad: Vec<(&str, Vec<u8>)> = vec![
        ("a.png", b"\x89PNG\r\n\x1a\nrest".to_vec()),
        ("b.txt", Vec::new()),
    ];
    let p = problem(
        server.upload("mixed", &only_bad, None),
        422,
        "invalid_request",
    );
    assert_eq!(p["refused"].as_array().map(Vec::len), Some(2), "{p}");
    assert_eq!(p["refused"][1]["code"], "invalid_request");
    server.stop();
}

/// Keys of four kinds for tenant `acme`, one admin key each for `globex` and the default
/// tenant, and a server that requires keys.
struct Tenants {
    _dir: tempfile::TempDir,
    server: TestServer,
    reader: String,
    infer: String,
    writer: String,
    admin: String,
    globex: String,
    operator: String,
}

fn tenants() -> Tenants {
    let dir = tempdir();
    let data = dir.path().join("data");
    let key = |tenant: &str, scopes: &str| crate::service_api::create_key(&data, tenant, scopes);
    let (reader, infer, writer, admin) = (
        key("acme", "read"),
        key("acme", "infer"),
        key("acme", "write"),
        key("acme", "admin"),
    );
    let globex = key("globex", "admin");
    let operator = key("default", "admin");
    let server = TestServer::start(&data, &[]);
    Tenants {
        _dir: dir,
        server,
        reader,
        infer,
        writer,
        admin,
        globex,
        operator,
    }
}

/// "A read-only key can spend model time and money": model calls need `infer` (which
/// `write` and `admin` include); `infer` alone spends but changes no content.
#[test]
fn a_read_only_key_can_spend_model_time_and_money() {
    let t = tenants();
    let as_key = |k: &str| t.server.with_key(Some(k));
    let (reader, infer, writer) = (as_key(&t.reader), as_key(&t.infer), as_key(&t.writer));
    writer.create_kb("handbook");
    let receipt = ok_json(writer.upload(
        "handbook",
        &[(
            "keys.md",
            b"# Keys\n\nKeys are created with `groundwork keys create`.".to_vec(),
        )],
        None,
    ));
    writer.wait_job(receipt["job_id"].as_str().expect("job"));
    let embed = json!({"model": "embed", "input": ["a tower in Paris"]});
    let chat =
        json!({"model": "main", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]});
    let ask = json!({"message": "How are keys created?", "answer_mode": "extractive"});
    for (path, body) in [
        ("/v1/embeddings", &embed),
        ("/v1/chat/completions", &chat),
        ("/v1/agents/helper/chat", &ask),
    ] {
        let p = problem(reader.post(path, body), 403, "forbidden");
        assert!(
            p["detail"].as_str().is_some_and(|d| d.contains("infer")),
            "{p}"
        );
    }
    ok_json(infer.post("/v1/embeddings", &embed));
    let answer = ok_json(infer.post("/v1/agents/helper/chat", &ask));
    assert_eq!(answer["found"], true, "{answer}");
    ok_json(writer.post("/v1/embeddings", &embed));
    // `infer` reads but does not write.
    assert_eq!(infer.search("handbook", "keys", 3, "bm25").len(), 1);
    problem(
        infer.upload("handbook", &[("x.txt", b"more".to_vec())], None),
        403,
        "forbidden",
    );
    problem(
        infer.post("/v1/kbs", &json!({"name": "mine"})),
        403,
        "forbidden",
    );
}

/// "Agent config accepts knowledge bases the tenant cannot see": a config naming another
/// tenant's (or no) knowledge base is refused with 422 naming each, by PUT and by PATCH.
#[test]
fn agent_config_accepts_knowledge_bases_the_tenant_cannot_see() {
    let t = tenants();
    let admin = t.server.with_key(Some(&t.admin));
    let globex = t.server.with_key(Some(&t.globex));
    admin.create_kb("handbook");
    let theirs = globex.create_kb("secrets");
    let their_id = theirs["id"].as_str().expect("id").to_owned();
    let config = json!({"knowledge_bases": ["handbook", their_id, "nowhere"]});
    let p = problem(
        admin.send("PUT", "/v1/agents/helper/config", Some(&config), &[]),
        422,
        "invalid_request",
    );
    let detail = p["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&format!("`{their_id}`")) && detail.contains("`nowhere`"),
        "{p}"
    );
    assert!(!detail.contains("`handbook`"), "{p}");
    let patch = json!({"knowledge_bases": ["secrets"]});
    problem(
        admin.send("PATCH", "/v1/agents/helper/config", Some(&patch), &[]),
        422,
        "invalid_request",
    );
    let ok = admin.send(
        "PUT",
        "/v1/agents/helper/config",
        Some(&json!({"knowledge_bases": ["handbook"]})),
        &[],
    );
    assert_eq!(
        ok_json(ok)["config"]["knowledge_bases"],
        json!(["handbook"])
    );
    // The tenant's own knowledge base by id works as well as by name.
    let globex_ok = globex.send(
        "PUT",
        "/v1/agents/helper/config",
        Some(&json!({"knowledge_bases": [their_id]})),
        &[],
    );
    assert!(globex_ok.status().is_success());
}

/// "`/v1/status` shows instance-wide counters to every tenant": each tenant sees its own
/// figures; the instance's only an admin of the default tenant.
#[test]
fn status_shows_instance_wide_counters_to_every_tenant() {
    let t = tenants();
    let writer = t.server.with_key(Some(&t.writer));
    writer.create_kb("handbook");
    let receipt = ok_json(writer.upload(
        "handbook",
        &[("a.md", b"# A\n\nAlpha beta gamma.".to_vec())],
        None,
    ));
    writer.wait_job(receipt["job_id"].as_str().expect("job"));
    writer.search("handbook", "alpha", 3, "dense");
    let acme = ok_json(writer.get("/v1/status"));
    assert_eq!(acme["knowledge_bases"], 1, "{acme}");
    assert_eq!(acme["documents_ready"], 1);
    assert!(acme["indexed_chunks"].as_u64() >= Some(1));
    assert!(acme["chunks_embedded"].as_u64() >= Some(1));
    assert_eq!(acme["queries_embedded"], 1);
    assert!(acme["instance"].is_null(), "{acme}");
    let acme_admin = ok_json(t.server.with_key(Some(&t.admin)).get("/v1/status"));
    assert!(
        acme_admin["instance"].is_null(),
        "another tenant's admin: {acme_admin}"
    );
    let globex = ok_json(t.server.with_key(Some(&t.globex)).get("/v1/status"));
    assert_eq!(globex["knowledge_bases"], 0);
    assert_eq!(globex["indexed_chunks"], 0);
    assert_eq!(globex["chunks_embedded"], 0);
    assert!(globex["instance"].is_null());
    let operator = ok_json(t.server.with_key(Some(&t.operator)).get("/v1/status"));
    assert_eq!(operator["knowledge_bases"], 0);
    assert!(
        operator["instance"]["indexed_chunks"].as_u64() >= Some(1),
        "{operator}"
    );
    assert!(operator["instance"]["chunks_embedded"].as_u64() >= Some(1));
    // Nobody without a key.
    problem(
        t.server.with_key(None).get("/v1/status"),
        401,
        "unauthenticated",
    );
}
