//! The knowledge-base service end to end: a real server process on a loopback port, driven
//! over HTTP like any client (create, upload, poll, search, replace, delete, bad input,
//! tenants and keys, restart without re-embedding, the CLI).

use serde_json::{json, Value};

use crate::common::{cli, model_dir, root, shared};
use crate::extraction::make_pdf;
use crate::server::{ok_json, problem, TestServer};

const VOLCANO_MD: &str = "# Volcanoes\n\n## Mount Erebus\n\nMount Erebus is the southernmost \
active volcano on Earth, on Ross Island in Antarctica. Its lava lake has persisted since at \
least 1972.\n\n## Kilauea\n\nKilauea on the Big Island of Hawaii erupted almost continuously \
from 1983 to 2018.\n";

const BREAD_TXT: &str = "Sourdough bread rises because wild yeast and lactic acid bacteria \
ferment the flour. A starter is fed with flour and water every day.";

fn pdf_fixture() -> Vec<u8> {
    make_pdf(&[
        "Arctic terns migrate from pole to pole every year, the longest migration of any animal.",
        "Lighthouse keepers polished the Fresnel lens every morning on rocky coasts.",
    ])
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gw-it-")
        .tempdir()
        .expect("tempdir")
}

fn status(server: &TestServer) -> Value {
    ok_json(server.get("/v1/status"))
}

#[test]
fn upload_search_replace_delete_over_http() {
    let dir = tempdir();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let kb = server.create_kb("field-notes");
    assert_eq!(kb["name"], "field-notes");
    problem(
        server.post("/v1/kbs", &json!({ "name": "field-notes" })),
        409,
        "conflict",
    );

    let mut files = vec![
        ("volcanoes.md", VOLCANO_MD.as_bytes().to_vec()),
        ("bread.txt", BREAD_TXT.as_bytes().to_vec()),
        ("birds-and-lights.pdf", pdf_fixture()),
    ];
    let real_pdf = shared("pdfs/real/pdfplumber/background-checks.pdf");
    if let Some(p) = &real_pdf {
        files.push((
            "background-checks.pdf",
            std::fs::read(p).expect("shared pdf"),
        ));
    }
    let res = server.upload("field-notes", &files, Some(json!({ "team": "science" })));
    assert_eq!(res.status(), 202);
    let receipt: Value = res.json().expect("receipt");
    let docs = receipt["documents"].as_array().expect("documents").clone();
    assert_eq!(docs.len(), files.len());
    let job = server.wait_job(receipt["job_id"].as_str().expect("job id"));
    assert_eq!(job["ready"], files.len() as u64, "{job}");
    assert_eq!(job["failed"], 0);
    assert!(job["chunks_embedded"].as_u64().expect("chunks") >= files.len() as u64);

    let id_of = |name: &str| -> String {
        docs.iter()
            .find(|d| d["name"] == name)
            .and_then(|d| d["document_id"].as_str())
            .expect("document id")
            .to_owned()
    };
    let pdf_id = id_of("birds-and-lights.pdf");
    let doc = ok_json(server.get(&format!("/v1/kbs/field-notes/documents/{pdf_id}")));
    assert_eq!(doc["status"], "ready");
    assert_eq!(doc["pages"], 2);
    assert_eq!(doc["media_type"], "application/pdf");
    assert_eq!(doc["metadata"]["team"], "science");

    // Dense, lexical and hybrid search all find the passage, with page and heading.
    for mode in ["dense", "bm25", "hybrid"] {
        let hits = server.search("field-notes", "keepers polishing the Fresnel lens", 3, mode);
        assert_eq!(hits[0]["document_id"], pdf_id.as_str(), "{mode}: {hits:?}");
        assert_eq!(hits[0]["page_end"], 2, "{mode}: {hits:?}");
        assert_eq!(hits[0]["document_name"], "birds-and-lights.pdf");
    }
    let hits = server.search(
        "field-notes",
        "southernmost active volcano in Antarctica",
        3,
        "hybrid",
    );
    assert_eq!(hits[0]["document_id"], id_of("volcanoes.md").as_str());
    assert!(hits[0]["text"].as_str().expect("text").contains("Erebus"));
    let path: Vec<&str> = hits[0]["heading_path"]
        .as_array()
        .expect("heading path")
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert_eq!(path, ["Volcanoes", "Mount Erebus"]);

    // The real PDF: its own chunk text finds it.
    if real_pdf.is_some() {
        let id = id_of("background-checks.pdf");
        let chunks = ok_json(server.get(&format!(
            "/v1/kbs/field-notes/documents/{id}/chunks?limit=2"
        )));
        let text = chunks["items"][0]["text"].as_str().expect("chunk text");
        let query: String = text
            .split_whitespace()
            .take(30)
            .collect::<Vec<_>>()
            .join(" ");
        let hits = server.search("field-notes", &query, 1, "bm25");
        assert_eq!(hits[0]["document_id"], id.as_str());
        assert!(hits[0]["page_start"].as_u64().is_some());
    }

    // Metadata filters.
    let res = server.post(
        "/v1/kbs/field-notes/search",
        &json!({ "query": "volcano", "filter": { "metadata": { "team": "other" } } }),
    );
    assert_eq!(ok_json(res)["results"].as_array().map(Vec::len), Some(0));

    // Same bytes again: the existing document, nothing embedded.
    let embedded_before = status(&server)["chunks_embedded"].as_u64().expect("count");
    let again: Value = server
        .upload(
            "field-notes",
            &[("copy-of-bread.txt", BREAD_TXT.as_bytes().to_vec())],
            None,
        )
        .json()
        .expect("receipt");
    assert_eq!(again["documents"][0]["existing"], true);
    assert_eq!(
        again["documents"][0]["document_id"],
        id_of("bread.txt").as_str()
    );
    server.wait_job(again["job_id"].as_str().expect("job"));
    assert_eq!(
        status(&server)["chunks_embedded"].as_u64(),
        Some(embedded_before)
    );

    // Same name, new bytes: a replacement; the old text leaves search when the new is ready.
    let old_bread = id_of("bread.txt");
    let res = server.post(
        "/v1/kbs/field-notes/documents",
        &json!({ "name": "bread.txt", "text": "Rye bread is dense because rye flour forms little gluten." }),
    );
    assert_eq!(res.status(), 202);
    let replaced: Value = res.json().expect("receipt");
    assert_eq!(replaced["documents"][0]["replaces"], old_bread.as_str());
    server.wait_job(replaced["job_id"].as_str().expect("job"));
    problem(
        server.get(&format!("/v1/kbs/field-notes/documents/{old_bread}")),
        404,
        "not_found",
    );
    let hits = server.search("field-notes", "sourdough starter wild yeast", 10, "bm25");
    assert!(
        hits.iter().all(|h| h["document_id"] != old_bread.as_str()),
        "{hits:?}"
    );
    let hits = server.search("field-notes", "rye flour gluten", 1, "hybrid");
    assert_eq!(
        hits[0]["document_id"],
        replaced["documents"][0]["document_id"]
    );

    // Listing, paging and status filter.
    let page = ok_json(server.get("/v1/kbs/field-notes/documents?limit=2&status=ready"));
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["total"], files.len() as u64);
    problem(
        server.get("/v1/kbs/field-notes/documents?status=bogus"),
        422,
        "invalid_request",
    );

    // Delete: gone from search at once, 404 afterwards.
    let res = server.delete(&format!("/v1/kbs/field-notes/documents/{pdf_id}"));
    assert_eq!(res.status(), 204);
    let hits = server.search("field-notes", "Fresnel lens lighthouse", 10, "hybrid");
    assert!(hits.iter().all(|h| h["document_id"] != pdf_id.as_str()));
    problem(
        server.get(&format!("/v1/kbs/field-notes/documents/{pdf_id}")),
        404,
        "not_found",
    );

    // The KB by id works as by name; deleting it removes it.
    let kb_id = kb["id"].as_str().expect("kb id");
    assert_eq!(
        ok_json(server.get(&format!("/v1/kbs/{kb_id}")))["name"],
        "field-notes"
    );
    assert_eq!(server.delete("/v1/kbs/field-notes").status(), 204);
    problem(server.get("/v1/kbs/field-notes"), 404, "not_found");
    server.stop();
}

#[test]
fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let dir = tempdir();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            ("GROUNDWORK__INGEST__MAX_FILE_BYTES", "200000"),
            ("GROUNDWORK__INGEST__MAX_FILES_PER_REQUEST", "3"),
        ],
    );
    server.create_kb("inbox");
    problem(server.get("/v1/kbs/nope"), 404, "not_found");
    problem(
        server.upload("nope", &[("a.txt", b"hello".to_vec())], None),
        404,
        "not_found",
    );
    problem(
        server.post("/v1/kbs", &json!({ "name": "bad name!" })),
        422,
        "invalid_request",
    );
    problem(
        server.post("/v1/kbs", &json!({ "nom": "x" })),
        422,
        "invalid_request",
    );
    problem(
        server.post_raw("/v1/kbs", "application/json", b"{not json".to_vec()),
        400,
        "invalid_json",
    );
    problem(
        server.post_raw("/v1/kbs/inbox/documents", "text/plain", b"hi".to_vec()),
        415,
        "unsupported_media_type",
    );
    problem(
        server.upload(
            "inbox",
            &[("photo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec())],
            None,
        ),
        415,
        "unsupported_media_type",
    );
    // Named or declared a PDF but text: refused with the reason, never indexed as text.
    for (res, how) in [
        (
            server.upload("inbox", &[("notes.pdf", b"plain words".to_vec())], None),
            "named as a PDF",
        ),
        (
            server.upload_declared("inbox", "notes", "application/pdf", b"plain words"),
            "declared as a PDF",
        ),
    ] {
        let p = problem(res, 415, "unsupported_media_type");
        assert!(
            p["detail"].as_str().unwrap_or_default().contains(how),
            "{p}"
        );
    }
    problem(
        server.upload("inbox", &[("big.txt", vec![b'a'; 300_000])], None),
        413,
        "payload_too_large",
    );
    let four: Vec<(&str, Vec<u8>)> = (0..4)
        .map(|i| ("n.txt", format!("note {i}").into_bytes()))
        .collect();
    problem(
        server.upload("inbox", &four, None),
        413,
        "payload_too_large",
    );
    problem(
        server.upload("inbox", &[("empty.txt", Vec::new())], None),
        422,
        "invalid_request",
    );
    problem(
        server.post("/v1/kbs/inbox/search", &json!({ "query": "  " })),
        422,
        "invalid_request",
    );
    problem(
        server.post(
            "/v1/kbs/inbox/search",
            &json!({ "query": "x", "top_k": 100000 }),
        ),
        422,
        "invalid_request",
    );
    problem(server.get("/v1/nothing-here"), 404, "not_found");

    // Hostile and broken files are accepted, fail alone with a reason; siblings succeed.
    let mut truncated = pdf_fixture();
    truncated.truncate(truncated.len() / 3);
    let mut invalid_utf8 = b"caf\xe9 au lait and croissants for breakfast ".to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, b'o', b'k']);
    let receipt: Value = server
        .upload(
            "inbox",
            &[
                (
                    "../../etc/passwd",
                    b"the name is only a label, never a path".to_vec(),
                ),
                ("broken.pdf", truncated),
                ("latin1.txt", invalid_utf8),
            ],
            None,
        )
        .json()
        .expect("receipt");
    assert_eq!(receipt["documents"][0]["name"], "passwd");
    let job = server.wait_job(receipt["job_id"].as_str().expect("job"));
    assert_eq!(job["ready"], 2, "{job}");
    assert_eq!(job["failed"], 1);
    assert_eq!(job["errors"][0]["name"], "broken.pdf");
    assert!(!job["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .is_empty());
    let failed = ok_json(server.get("/v1/kbs/inbox/documents?status=failed"));
    assert_eq!(failed["items"][0]["status"], "failed");
    assert!(failed["items"][0]["error"].as_str().is_some());
    let latin = &receipt["documents"][2]["document_id"];
    let doc = ok_json(server.get(&format!(
        "/v1/kbs/inbox/documents/{}",
        latin.as_str().expect("id")
    )));
    assert!(
        !doc["warnings"].as_array().expect("warnings").is_empty(),
        "{doc}"
    );
    assert!(!dir.path().join("etc").exists());

    // Shared damaged PDFs: each ends ready or failed, the server stays up.
    if let Some(damaged) = shared("pdfs/damaged") {
        let mut names: Vec<_> = std::fs::read_dir(&damaged)
            .expect("damaged dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pdf"))
            .collect();
        names.sort();
        for chunk in names.chunks(3).take(4) {
            let files: Vec<(String, Vec<u8>)> = chunk
                .iter()
                .map(|p| {
                    (
                        p.file_name().expect("name").to_string_lossy().into_owned(),
                        std::fs::read(p).expect("read"),
                    )
                })
                .collect();
            let files: Vec<(&str, Vec<u8>)> =
                files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
            let res = server.upload("inbox", &files, None);
            if res.status() == 202 {
                let r: Value = res.json().expect("receipt");
                let job = server.wait_job(r["job_id"].as_str().expect("job"));
                assert_eq!(job["total"], job["done"], "{job}");
            } else {
                assert!(
                    matches!(res.status().as_u16(), 413 | 415 | 422),
                    "{}",
                    res.status()
                );
            }
        }
    }
    assert_eq!(ok_json(server.get("/healthz"))["status"], "ok");
    server.stop();
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let dir = tempdir();
    let server = TestServer::start(
        &dir.path().join("data"),
        &[("GROUNDWORK__INGEST__QUEUE_CAPACITY", "2")],
    );
    server.create_kb("q");
    let three: Vec<(&str, Vec<u8>)> = (0..3)
        .map(|i| ("n.txt", format!("note number {i}").into_bytes()))
        .collect();
    let res = server.upload("q", &three, None);
    assert!(res.headers().get("retry-after").is_some());
    problem(res, 429, "queue_full");
    // Nothing of the refused request was stored.
    let docs = ok_json(server.get("/v1/kbs/q/documents"));
    assert_eq!(docs["total"], 0);
    server.stop();
}

pub(crate) fn create_key(data_dir: &std::path::Path, tenant: &str, scopes: &str) -> String {
    let out = cli(data_dir)
        .args([
            "keys",
            "create",
            "--tenant",
            tenant,
            "--scopes",
            scopes,
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

#[test]
fn tenants_are_isolated_and_scopes_enforced() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let acme_admin = create_key(&data, "acme", "read,write,admin");
    let acme_reader = create_key(&data, "acme", "read");
    let globex = create_key(&data, "globex", "read,write");
    let server = TestServer::start(&data, &[]);
    let anon = server.with_key(None);
    let acme = server.with_key(Some(&acme_admin));
    let reader = server.with_key(Some(&acme_reader));
    let other = server.with_key(Some(&globex));

    let res = anon.get("/v1/kbs");
    assert!(res.headers().get("www-authenticate").is_some());
    problem(res, 401, "unauthenticated");
    problem(
        server.with_key(Some("gw_0000_forged")).get("/v1/kbs"),
        401,
        "unauthenticated",
    );
    assert_eq!(anon.get("/healthz").status(), 200);

    acme.create_kb("handbook");
    let receipt: Value = acme
        .upload(
            "handbook",
            &[("v.md", VOLCANO_MD.as_bytes().to_vec())],
            None,
        )
        .json()
        .expect("receipt");
    let job_id = receipt["job_id"].as_str().expect("job").to_owned();
    let doc_id = receipt["documents"][0]["document_id"]
        .as_str()
        .expect("doc")
        .to_owned();
    acme.wait_job(&job_id);

    // The other tenant sees nothing of acme's, by name or by id.
    let kb_id = ok_json(acme.get("/v1/kbs/handbook"))["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        ok_json(other.get("/v1/kbs"))["items"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    problem(other.get("/v1/kbs/handbook"), 404, "not_found");
    problem(other.get(&format!("/v1/kbs/{kb_id}")), 404, "not_found");
    problem(
        other.post(
            &format!("/v1/kbs/{kb_id}/search"),
            &json!({ "query": "volcano" }),
        ),
        404,
        "not_found",
    );
    problem(other.get(&format!("/v1/jobs/{job_id}")), 404, "not_found");
    problem(
        other.delete(&format!("/v1/kbs/{kb_id}/documents/{doc_id}")),
        404,
        "not_found",
    );
    // Names are per tenant.
    other.create_kb("handbook");
    assert_eq!(other.search("handbook", "volcano", 5, "hybrid").len(), 0);

    // Scopes: read cannot write; write cannot delete a KB.
    assert_eq!(
        reader
            .search("handbook", "volcano Antarctica", 1, "hybrid")
            .len(),
        1
    );
    problem(
        reader.post("/v1/kbs", &json!({ "name": "x" })),
        403,
        "forbidden",
    );
    problem(
        reader.upload("handbook", &[("a.txt", b"a".to_vec())], None),
        403,
        "forbidden",
    );
    problem(other.delete("/v1/kbs/handbook"), 403, "forbidden");
    assert_eq!(acme.delete("/v1/kbs/handbook").status(), 204);
    server.stop();

    // Keys exist, so a non-loopback bind is allowed; without keys it is refused.
    let empty = dir.path().join("empty");
    let out = cli(&empty)
        .args(["serve", "--bind", "0.0.0.0:0", "--data-dir"])
        .arg(&empty)
        .arg("--model")
        .arg(model_dir())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn a_restart_serves_identical_results_without_re_embedding() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &[]);
    server.create_kb("kb");
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(root().join("data/guide"))
        .expect("guide")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .map(|p| {
            (
                p.file_name().expect("n").to_string_lossy().into_owned(),
                std::fs::read(&p).expect("read"),
            )
        })
        .chain([
            ("volcanoes.md".to_owned(), VOLCANO_MD.as_bytes().to_vec()),
            ("terns.pdf".to_owned(), pdf_fixture()),
        ])
        .collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let receipt: Value = server.upload("kb", &files, None).json().expect("receipt");
    let job = server.wait_job(receipt["job_id"].as_str().expect("job"));
    assert_eq!(job["failed"], 0, "{job}");
    let queries = [
        "how do I upload a PDF",
        "Fresnel lens",
        "active volcano",
        "API keys and tenants",
    ];
    let run = |s: &TestServer| -> Vec<Vec<(u64, String)>> {
        queries
            .iter()
            .flat_map(|q| ["dense", "hybrid"].map(|m| (q, m)))
            .map(|(q, m)| {
                s.search("kb", q, 5, m)
                    .iter()
                    .map(|h| {
                        (
                            h["chunk_id"].as_u64().expect("id"),
                            format!("{:.6}", h["score"].as_f64().expect("score")),
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let before = run(&server);
    let indexed = status(&server)["indexed_chunks"].as_u64().expect("indexed");
    assert!(indexed > 5);
    server.stop();

    // Restart on the saved index.
    let server = TestServer::start(&data, &[]);
    let st = status(&server);
    assert_eq!(st["chunks_embedded"], 0, "{st}");
    assert_eq!(st["indexed_chunks"].as_u64(), Some(indexed));
    // The stopped process took its replica row with it: this one is alone.
    let replicas = st["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 1, "{st}");
    assert_eq!(
        (&replicas[0]["this"], &replicas[0]["alive"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(run(&server), before);
    server.stop();

    // Lose the index files: rebuilt from stored vectors, still nothing re-embedded.
    std::fs::remove_dir_all(data.join("indexes")).expect("remove indexes");
    let server = TestServer::start(&data, &[]);
    assert_eq!(status(&server)["chunks_embedded"], 0);
    assert_eq!(run(&server), before);
    server.stop();
}

#[test]
fn cli_ingests_and_searches_on_a_data_dir_and_against_a_server() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("nested")).expect("mkdir");
    std::fs::write(docs.join("volcanoes.md"), VOLCANO_MD).expect("write");
    std::fs::write(docs.join("nested/bread.txt"), BREAD_TXT).expect("write");
    std::fs::write(docs.join(".hidden.txt"), "ignored").expect("write");
    let gw = |args: &[&str]| {
        let out = cli(&data)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .arg("--model")
            .arg(model_dir())
            .output()
            .expect("run groundwork");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let out = gw(&["ingest", docs.to_str().expect("path"), "--kb", "notes"]);
    assert!(out.contains("2 documents (0 failed"), "{out}");
    let out = gw(&["search", "wild yeast starter", "--kb", "notes", "--json"]);
    let answer: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(answer["results"][0]["document_name"], "bread.txt");
    let out = gw(&["kb", "list"]);
    assert!(out.starts_with("notes\t"), "{out}");

    // Against a running server (the data directory is locked meanwhile).
    let server = TestServer::start(&data, &[]);
    let locked = cli(&data)
        .args(["kb", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("kb list");
    assert!(!locked.status.success());
    assert!(String::from_utf8_lossy(&locked.stderr).contains("in use"));
    let pdf = dir.path().join("terns.pdf");
    std::fs::write(&pdf, pdf_fixture()).expect("write");
    let out = cli(&data)
        .args([
            "ingest",
            pdf.to_str().expect("p"),
            "--kb",
            "notes",
            "--server",
            &server.url,
        ])
        .output()
        .expect("ingest --server");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hits = server.search("notes", "arctic tern migration", 1, "hybrid");
    assert_eq!(hits[0]["document_name"], "terns.pdf");
    server.stop();
}

#[test]
fn openapi_and_metrics_describe_the_service() {
    let dir = tempdir();
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let spec = ok_json(server.get("/openapi.json"));
    assert!(spec["openapi"].as_str().expect("version").starts_with("3."));
    for path in [
        "/v1/kbs",
        "/v1/kbs/{kb}",
        "/v1/kbs/{kb}/documents",
        "/v1/kbs/{kb}/documents/{id}",
        "/v1/kbs/{kb}/documents/{id}/chunks",
        "/v1/kbs/{kb}/search",
        "/v1/jobs/{id}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the OpenAPI description"
        );
    }
    server.create_kb("m");
    server.search("m", "anything", 1, "hybrid");
    let text = server.get("/metrics").text().expect("metrics");
    for name in [
        "groundwork_http_requests_total",
        "groundwork_http_request_duration_seconds_bucket",
        "groundwork_ingest_queue_depth",
        "groundwork_index_chunks",
        "groundwork_embedded_texts_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(server.get("/readyz").status(), 200);
    server.stop();
}
