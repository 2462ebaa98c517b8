//! The chat UI: the API it stands on (the live document list, suggested questions,
//! conversations searched, renamed and deleted, answers stopped), then the page itself in
//! headless Chromium at a desktop and a phone width, as a user would use it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::agents::{fake_config, read_deltas, sse_events, stream_location};
use crate::common::root;
use crate::fake_llm::{Behavior, FakeLlm};
use crate::server::{ok_json, problem, TestServer};
use crate::service_api::create_key;

/// A handbook with headings (the suggested questions come from them).
const HANDBOOK: &str = "# Operations handbook\n\n\
## Backups\n\nThe nightly backup runs at 02:00 UTC. Backup copies are stored in the vault \
bucket gw-backups in Frankfurt and kept for 30 days.\n\n\
## Restores\n\nA restore is requested through the service desk. The on-call engineer \
restores the data within four hours.\n\n\
## Access\n\nOnly members of the ops group can read the vault bucket.\n";

/// What the fake model answers: Markdown with a list, a table, code and citations.
const MARKDOWN_ANSWER: &str = "The nightly backup runs at **02:00 UTC** [1].\n\n\
1. Backup copies are stored in the vault bucket `gw-backups` in Frankfurt [1].\n\
2. Backup copies are kept for 30 days [1].\n\n\
| Item | Value |\n|---|---|\n| Backup time | 02:00 UTC |\n| Retention | 30 days |\n\n\
```shell\nrestic snapshots --repo gw-backups\n```\n";

fn long_answer() -> String {
    "Backup copies are kept for 30 days [1]. ".repeat(300)
}

/// The three files a user drops: a Markdown handbook, a PDF, a damaged PDF.
fn fixtures(dir: &Path) {
    std::fs::create_dir_all(dir).expect("fixtures");
    std::fs::write(dir.join("handbook.md"), HANDBOOK).expect("md");
    let pdf = crate::extraction::make_pdf(&[
        "Plant overview. The site has two buildings and a visitor centre.",
        "Safety. The reactor inspection happens every 90 days and is logged by the duty engineer.",
    ]);
    std::fs::write(dir.join("plant-safety.pdf"), pdf).expect("pdf");
    // A PDF whose cross-reference table and objects are garbage: accepted, then failed.
    let mut broken = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\nendobj\n".to_vec();
    broken.extend_from_slice(&[0x9c; 4096]);
    broken.extend_from_slice(b"\nxref\nnot a table\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
    std::fs::write(dir.join("broken.pdf"), broken).expect("broken");
}

/// Reads SSE events of a live response, one `(event, data)` at a time.
struct Events {
    lines: std::io::Lines<BufReader<reqwest::blocking::Response>>,
}

impl Events {
    fn open(server: &TestServer, path: &str) -> Self {
        let res = server.get(path);
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.headers()["content-type"]
            .to_str()
            .expect("header")
            .starts_with("text/event-stream"));
        Self {
            lines: BufReader::new(res).lines(),
        }
    }

    /// The next event, or `None` when the stream ended.
    fn next(&mut self) -> Option<(String, Value)> {
        let (mut event, mut data) = (String::new(), String::new());
        for line in self.lines.by_ref() {
            let line = line.ok()?;
            if line.is_empty() {
                if !event.is_empty() {
                    return Some((event, serde_json::from_str(&data).expect("json data")));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        None
    }

    /// Events until `pred` holds for a `documents` snapshot (which is returned).
    fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < Duration::from_secs(120), "{what}");
            let (event, data) = self.next().unwrap_or_else(|| panic!("ended before {what}"));
            assert_eq!(event, "documents", "{data}");
            if pred(&data) {
                return data;
            }
        }
    }
}

fn status_of<'a>(snapshot: &'a Value, name: &str) -> Option<&'a Value> {
    snapshot["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|d| d["name"] == name)
}

#[test]
fn documents_live_list_follows_uploads_failures_and_deletions_and_suggests_questions() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = dir.path().join("files");
    fixtures(&files);
    let server = TestServer::start(&dir.path().join("data"), &[]);
    server.create_kb("ops");
    problem(
        server.get("/v1/kbs/nope/documents/events"),
        404,
        "not_found",
    );
    let mut live = Events::open(&server, "/v1/kbs/ops/documents/events");
    let (event, first) = live.next().expect("a first snapshot");
    assert_eq!(event, "documents");
    assert_eq!(first["total"], 0);
    assert_eq!(first["kb"]["name"], "ops");
    assert_eq!(first["kb"]["stats"]["ready"], 0);

    // Nothing ready yet: no question to suggest.
    let none = ok_json(server.get("/v1/kbs/ops/suggestions"));
    assert_eq!(none["items"], json!([]));

    let read = |name: &str| std::fs::read(files.join(name)).expect("fixture");
    // (Metadata holding U+0000, which PostgreSQL's jsonb refuses: the folder sync below
    // reads this KB's documents all the same.)
    let res = server.upload(
        "ops",
        &[
            ("handbook.md", read("handbook.md")),
            ("broken.pdf", read("broken.pdf")),
        ],
        Some(json!({"team": "ops\u{0}night"})),
    );
    assert_eq!(res.status(), 202);
    let settled = live.until("handbook ready and broken.pdf failed", |s| {
        status_of(s, "handbook.md").is_some_and(|d| d["status"] == "ready")
            && status_of(s, "broken.pdf").is_some_and(|d| d["status"] == "failed")
    });
    let broken = status_of(&settled, "broken.pdf").expect("broken");
    assert!(
        broken["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a failure says why: {broken}"
    );
    assert_eq!(settled["kb"]["stats"]["ready"], 1);
    assert_eq!(settled["kb"]["stats"]["failed"], 1);
    assert!(settled["kb"]["stats"]["chunks"].as_u64() > Some(0));

    // Questions from the headings of leaf sections (not the title's), every topic once.
    let got = ok_json(server.get("/v1/kbs/ops/suggestions?n=3"));
    let questions: Vec<&str> = got["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s| s["question"].as_str().expect("question"))
        .collect();
    assert_eq!(
        questions,
        [
            "What do the documents say about Backups?",
            "What do the documents say about Restores?",
            "What do the documents say about Access?",
        ],
        "{got}"
    );
    assert_eq!(got["items"][0]["document_name"], "handbook.md");
    assert_eq!(got["items"][0]["heading"], "Backups");
    problem(
        server.get("/v1/kbs/ops/suggestions?n=0"),
        422,
        "invalid_request",
    );
    problem(server.get("/v1/kbs/nope/suggestions"), 404, "not_found");

    // A folder source shows with its last sync's status.
    let folder = dir.path().join("folder");
    std::fs::create_dir_all(&folder).expect("folder");
    std::fs::write(
        folder.join("access.md"),
        "# Access\n\nBadges open the north door.",
    )
    .expect("file");
    // Adding it starts its first sync.
    ok_json(server.post(
        "/v1/kbs/ops/sources",
        &json!({"path": folder.to_str().expect("utf-8")}),
    ));
    let synced = live.until("the folder synced", |s| {
        s["sources"][0]["last_sync_status"] == "completed"
            && status_of(s, "access.md").is_some_and(|d| d["status"] == "ready")
    });
    assert_eq!(
        synced["sources"][0]["path"],
        folder.to_str().expect("utf-8")
    );
    assert!(synced["sources"][0]["last_sync_finished_at"].is_string());

    // A deletion leaves the list; the knowledge base's deletion ends the stream.
    let id = status_of(&synced, "handbook.md").expect("handbook")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        server
            .delete(&format!("/v1/kbs/ops/documents/{id}"))
            .status(),
        204
    );
    let after = live.until("the deletion", |s| status_of(s, "handbook.md").is_none());
    assert_eq!(after["total"], 2);
    assert_eq!(server.delete("/v1/kbs/ops").status(), 204);
    let (event, data) = live.next().expect("an error event");
    assert_eq!(event, "error", "{data}");
    assert_eq!(data["code"], "not_found");
    assert!(live.next().is_none(), "the stream ends");
    server.stop();
}

#[test]
fn conversations_are_searched_renamed_and_deleted_and_answers_stop() {
    let llm = FakeLlm::start();
    llm.answer("gpt-fast", "Where are the nightly backup copies stored?");
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("dir");
    let admin = create_key(&data, "acme", "admin");
    let reader = create_key(&data, "acme", "read");
    let server = TestServer::start_with_config(dir.path(), &fake_config(&llm.base), &[]);
    let s = server.with_key(Some(&admin));
    s.create_kb("ops");
    crate::agents::add_doc(&s, "ops", "handbook.md", HANDBOOK);

    let ask = |message: &str, answer: &str| -> Value {
        llm.script("gpt-main", &[Behavior::Answer(answer.into())]);
        ok_json(s.post("/v1/agents/bot/chat", &json!({"message": message})))
    };
    let a = ask(
        "When does the nightly backup run?",
        "The nightly backup runs at 02:00 UTC [1].",
    );
    let b = ask(
        "Where are copies kept?",
        "Backup copies are stored in the vault bucket gw-backups in Frankfurt [1].",
    );
    let (ca, cb) = (
        a["conversation_id"].as_str().expect("id").to_owned(),
        b["conversation_id"].as_str().expect("id").to_owned(),
    );
    let titles = |q: &str| -> Vec<String> {
        let path = if q.is_empty() {
            "/v1/agents/bot/conversations".to_owned()
        } else {
            format!("/v1/agents/bot/conversations?q={}", url_escape(q))
        };
        ok_json(s.get(&path))["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["title"].as_str().expect("title").to_owned())
            .collect()
    };
    assert_eq!(
        titles(""),
        [
            "Where are copies kept?",
            "When does the nightly backup run?"
        ]
    );
    // By title, by an answer's words, case-insensitively; `%` and `_` are plain characters.
    assert_eq!(titles("NIGHTLY"), ["When does the nightly backup run?"]);
    assert_eq!(titles("frankfurt"), ["Where are copies kept?"]);
    assert_eq!(titles("%"), Vec::<String>::new());
    assert_eq!(titles("_"), Vec::<String>::new());
    problem(
        s.get(&format!(
            "/v1/agents/bot/conversations?q={}",
            "x".repeat(201)
        )),
        422,
        "invalid_request",
    );

    // An agent whose config holds U+0000 (JSON allows it; PostgreSQL's jsonb does not) is
    // listed like any other.
    ok_json(s.send(
        "PATCH",
        "/v1/agents/bot/config",
        Some(&json!({"name": "bot\u{0}one"})),
        &[],
    ));
    let agents = ok_json(s.get("/v1/agents"));
    assert_eq!(agents["items"][0]["name"], "bot\u{0}one", "{agents}");

    // Rename: trimmed; blank and unknown refused; the read scope may not.
    let path = format!("/v1/agents/bot/conversations/{ca}");
    let renamed = ok_json(s.send(
        "PATCH",
        &path,
        Some(&json!({"title": "  Backup schedule  "})),
        &[],
    ));
    assert_eq!(renamed["title"], "Backup schedule");
    assert_eq!(titles("schedule"), ["Backup schedule"]);
    problem(
        s.send("PATCH", &path, Some(&json!({"title": "   "})), &[]),
        422,
        "invalid_request",
    );
    problem(
        s.send(
            "PATCH",
            "/v1/agents/bot/conversations/nope",
            Some(&json!({"title": "x"})),
            &[],
        ),
        404,
        "not_found",
    );
    let ro = server.with_key(Some(&reader));
    assert_eq!(
        ro.send("PATCH", &path, Some(&json!({"title": "x"})), &[])
            .status(),
        403
    );

    // Stop: the model's stream is dropped, what was written is checked, stored and marked.
    let long = long_answer();
    llm.script("gpt-main", &[Behavior::Answer(long.clone())]);
    let mut res = s.post(
        "/v1/agents/bot/chat",
        &json!({"message": "How long are copies kept?", "conversation_id": cb, "stream": true}),
    );
    assert_eq!(res.status(), 200);
    let location = stream_location(&res);
    let first = read_deltas(&mut res, 3);
    assert_eq!(
        ro.post(&format!("{location}/stop"), &json!({})).status(),
        403,
        "stopping takes the infer scope"
    );
    let stopped = ok_json(s.post(&format!("{location}/stop"), &json!({})));
    assert_eq!(stopped["stopped"], true);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut res, &mut rest).expect("the rest");
    let mut events = first;
    events.extend(sse_events(&rest));
    let done = events.last().expect("events");
    assert_eq!(done.1, "done", "{events:?}");
    assert_eq!(done.2["stopped"], true);
    let text = crate::agents::deltas(&events);
    assert!(
        !text.is_empty() && text.len() < long.len() / 2,
        "stopped early: {} of {} bytes",
        text.len(),
        long.len()
    );
    assert_eq!(done.2["message"]["content"], text.trim());
    assert_eq!(done.2["message"]["meta"]["stopped"], true);
    // Again: it had finished. An unknown stream: 404.
    let again = ok_json(s.post(&format!("{location}/stop"), &json!({})));
    assert_eq!(again["stopped"], false);
    problem(
        s.post("/v1/agents/bot/streams/nope/stop", &json!({})),
        404,
        "not_found",
    );
    let messages = ok_json(s.get(&format!("/v1/agents/bot/conversations/{cb}/messages")));
    let last = messages["items"]
        .as_array()
        .expect("items")
        .last()
        .expect("a message")
        .clone();
    assert_eq!(last["meta"]["stopped"], true);
    assert_eq!(last["content"], text.trim());

    // Delete: the conversation and its messages go; the other stays.
    assert_eq!(
        ro.delete(&format!("/v1/agents/bot/conversations/{cb}"))
            .status(),
        403
    );
    assert_eq!(
        s.delete(&format!("/v1/agents/bot/conversations/{cb}"))
            .status(),
        204
    );
    problem(
        s.get(&format!("/v1/agents/bot/conversations/{cb}/messages")),
        404,
        "not_found",
    );
    problem(
        s.delete(&format!("/v1/agents/bot/conversations/{cb}")),
        404,
        "not_found",
    );
    assert_eq!(titles(""), ["Backup schedule"]);
    assert_eq!(titles("frankfurt"), Vec::<String>::new());
    server.stop();
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One run of `tests/py/ui_test.py` on a fresh server at one window size.
fn browser_flow(width: u32, height: u32, tag: &str) -> Value {
    let llm = FakeLlm::start();
    llm.answer("gpt-fast", "What do the documents say about backups?");
    llm.script(
        "gpt-main",
        &[
            Behavior::Answer(MARKDOWN_ANSWER.into()),
            Behavior::Answer(MARKDOWN_ANSWER.into()),
            Behavior::Answer(long_answer()),
        ],
    );
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("dir");
    let key = create_key(&data, "default", "admin");
    let files = dir.path().join("files");
    fixtures(&files);
    let server = TestServer::start_with_config(dir.path(), &fake_config(&llm.base), &[]);
    let page = server.get("/");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("header")
        .to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let out_dir = root().join("target/ui-artifacts");
    let out = Command::new(root().join(".venv-test/bin/python"))
        .arg(root().join("tests/py/ui_test.py"))
        .args([
            server.url.as_str(),
            &key,
            files.to_str().expect("utf-8"),
            out_dir.to_str().expect("utf-8"),
            &width.to_string(),
            &height.to_string(),
            tag,
        ])
        .output()
        .expect("ui_test.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the {tag} UI flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("report");
    // The stopped answer was stored as stopped.
    let s = server.with_key(Some(&key));
    let convs = ok_json(s.get("/v1/agents/assistant/conversations"));
    let stopped = convs["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| Some(c["title"].as_str().expect("title")) == report["stop_asked"].as_str())
        .expect("the stopped conversation");
    let messages = ok_json(s.get(&format!(
        "/v1/agents/assistant/conversations/{}/messages",
        stopped["id"].as_str().expect("id")
    )));
    assert_eq!(messages["items"][1]["meta"]["stopped"], true, "{messages}");
    server.stop();
    report
}

/// What each run must show.
fn check_flow(r: &Value) {
    let tag = r["tag"].as_str().expect("tag");
    let ctx = format!("{tag}: {r}");
    assert_eq!(r["key_in_session"], true, "{ctx}");
    assert_eq!(r["key_in_local"], false, "{ctx}");
    // Two ready, one failed with its reason.
    assert_eq!(r["uploads"]["handbook.md"][0], "ready", "{ctx}");
    assert_eq!(r["uploads"]["plant-safety.pdf"][0], "ready", "{ctx}");
    assert_eq!(r["uploads"]["broken.pdf"][0], "failed", "{ctx}");
    assert!(
        r["uploads"]["broken.pdf"][1]
            .as_str()
            .is_some_and(|why| why.len() > 10),
        "{ctx}"
    );
    assert!(r["kb_size"]
        .as_str()
        .expect("size")
        .contains("2 documents ready"));
    assert!(
        r["suggestions"].as_array().expect("list").len() >= 2,
        "{ctx}"
    );
    // Markdown rendered: list, table, code with its copy button, citation markers.
    let html = &r["answer_html"];
    assert!(html["ol li"].as_u64() >= Some(2), "{ctx}");
    assert!(html["table td"].as_u64() >= Some(4), "{ctx}");
    assert_eq!(html["pre code"], 1, "{ctx}");
    assert_eq!(html[".copy-code"], 1, "{ctx}");
    assert!(html["button.cite"].as_u64() >= Some(1), "{ctx}");
    assert_eq!(r["raw_markdown_left"], false, "{ctx}");
    assert!(r["deltas"].as_u64() >= Some(2), "streamed: {ctx}");
    // The citation opens its exact span.
    assert_eq!(r["highlighted"], r["quote"], "{ctx}");
    assert!(
        r["passage"]
            .as_str()
            .expect("passage")
            .contains(r["quote"].as_str().expect("quote")),
        "{ctx}"
    );
    let copied = r["copied"].as_str().expect("copied");
    assert!(
        copied.contains("Sources:\n[1] ") && copied.contains("02:00 UTC"),
        "{ctx}"
    );
    assert_eq!(r["regenerated"], true, "{ctx}");
    assert_eq!(r["slash_focuses_input"], true, "{ctx}");
    assert_eq!(r["not_found_badge"], true, "{ctx}");
    // Stopped: part of the answer, and the composer is back.
    let stopped = r["stopped_text"].as_str().expect("text");
    assert!(
        !stopped.is_empty() && stopped.len() < long_answer().len() / 2,
        "{ctx}"
    );
    assert_eq!(r["send_back"], true, "{ctx}");
    // Conversations: three, one found by search, renamed, deleted.
    assert_eq!(
        r["conversations"].as_array().expect("list").len(),
        3,
        "{ctx}"
    );
    assert_eq!(
        r["search_hits"],
        json!(["What is the capital of Peru?"]),
        "{ctx}"
    );
    assert_eq!(
        r["after_delete"].as_array().expect("list").len(),
        2,
        "{ctx}"
    );
    assert!(
        !r["after_delete"].to_string().contains("Geography"),
        "{ctx}"
    );
    // The deleted PDF left the search.
    assert!(
        r["search_before"].to_string().contains("plant-safety.pdf"),
        "{ctx}"
    );
    assert!(
        !r["search_after"].to_string().contains("plant-safety.pdf"),
        "{ctx}"
    );
    assert_ne!(r["colors"][0], r["colors"][1], "a dark scheme: {ctx}");
    assert_eq!(r["external"], json!([]), "{ctx}");
    assert_eq!(r["overflow_x"], false, "no sideways scrolling: {ctx}");
    for (state, found) in r["axe"].as_object().expect("axe runs") {
        assert_eq!(found["serious"], json!([]), "axe-core, {state}: {ctx}");
    }
}

#[test]
fn browser_chat_ui_works_as_a_user_would_at_desktop_and_phone_widths() {
    let setup = Command::new(root().join("tests/ui/setup.sh"))
        .status()
        .expect("tests/ui/setup.sh");
    assert!(
        setup.success(),
        "the UI test's browser could not be installed"
    );
    for (w, h, tag) in [(1400, 900, "desktop"), (390, 844, "phone")] {
        let report = browser_flow(w, h, tag);
        check_flow(&report);
        println!(
            "{tag}: uploads {} · suggestions {} · axe {}",
            report["uploads"], report["suggestions"], report["axe"]
        );
    }
}
