//! Agents over HTTP, SSE and WebSocket against a real `groundwork serve`: durable state across
//! restarts, isolation between agents and tenants, concurrent patches, task queues with
//! retries, schedules across a crash, grounded chat with checked citations (a fake frontier
//! model on loopback, and the local SmolLM2), resumable streams, and the chat UI in headless
//! Chromium.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_llm::{Behavior, FakeLlm};
use crate::server::{ok_json, problem, TestServer};
use crate::service_api::create_key;

fn start(dir: &Path, toml: &str, env: &[(&str, &str)]) -> TestServer {
    TestServer::start_with_config(dir, toml, env)
}

pub(crate) fn fake_config(base: &str) -> String {
    format!(
        r#"
[gateway.providers.oai]
kind = "openai"
base_url = "{base}"
api_key = "sk-test-upstream"

[gateway.routes.main]
targets = ["oai/gpt-main"]
retries = 0

[gateway.routes.fast]
targets = ["oai/gpt-fast"]
retries = 0

[gateway.prices."oai/gpt-main"]
input = 2.0
output = 8.0

[agents]
task_backoff_ms = 100
"#
    )
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Adds a text document to a knowledge base and waits until it is searchable.
pub(crate) fn add_doc(server: &TestServer, kb: &str, name: &str, text: &str) {
    let res = server.post(
        &format!("/v1/kbs/{kb}/documents"),
        &json!({"name": name, "text": text}),
    );
    assert_eq!(res.status(), 202);
    let receipt: Value = res.json().expect("json");
    let job = server.wait_job(receipt["job_id"].as_str().expect("job"));
    assert_eq!(job["ready"], 1, "{job}");
}

/// The events of a whole SSE body: (id, event, data).
pub(crate) fn sse_events(body: &str) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let (mut id, mut event, mut data) = (0, String::new(), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !event.is_empty() {
            out.push((
                id,
                event,
                serde_json::from_str(&data).unwrap_or(Value::Null),
            ));
        }
    }
    out
}

/// Where a streamed answer can be resumed (and stopped): its `Content-Location`.
pub(crate) fn stream_location(res: &reqwest::blocking::Response) -> String {
    res.headers()["content-location"]
        .to_str()
        .expect("a stream's location")
        .to_owned()
}

/// Reads an SSE answer until it has `n` deltas; returns what came, whole events only.
pub(crate) fn read_deltas(
    res: &mut reqwest::blocking::Response,
    n: usize,
) -> Vec<(u64, String, Value)> {
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while sse_events(&seen).iter().filter(|e| e.1 == "delta").count() < n {
        let got = res.read(&mut buf).expect("read");
        assert!(got > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..got]));
    }
    sse_events(&seen[..seen.rfind("\n\n").expect("an event") + 2])
}

pub(crate) fn deltas(events: &[(u64, String, Value)]) -> String {
    events
        .iter()
        .filter(|e| e.1 == "delta")
        .map(|e| e.2["text"].as_str().unwrap_or_default())
        .collect()
}

pub(crate) const BACKUP_DOC: &str = "# Backups\n\nThe nightly backup runs at 02:00 UTC. \
The backup copies are stored in the vault bucket gw-backups in Frankfurt and kept for 30 days.";
pub(crate) const INVOICE_DOC: &str =
    "# Invoices\n\nInvoices are sent on the first working day of each month \
by the finance team.";

#[test]
fn chat_rewrites_follow_ups_checks_citations_and_resumes_streams() {
    let llm = FakeLlm::start();
    let dir = tempfile::tempdir().expect("tmp");
    let server = start(dir.path(), &fake_config(&llm.base), &[]);
    server.create_kb("ops");
    add_doc(&server, "ops", "backup.md", BACKUP_DOC);
    add_doc(&server, "ops", "invoices.md", INVOICE_DOC);

    // First question: no history, so no rewrite; the answer cites [1] correctly, [1] with a
    // quote that is in the passage, [1] with one that is not, [2] for an unsupported claim and
    // [9], which was never retrieved.
    llm.script(
        "gpt-main",
        &[Behavior::Answer(
            "The nightly backup runs at 02:00 UTC [1]. It is kept in Frankfurt [1: \"vault bucket gw-backups in Frankfurt\"]. \
             It is encrypted twice [1: \"encrypted twice\"]. Penguins enjoy ice [2]. Also see [9]."
                .into(),
        )],
    );
    let a1 = ok_json(server.post(
        "/v1/agents/ops-bot/chat",
        &json!({"message": "When does the nightly backup run?"}),
    ));
    assert!(
        llm.requests("gpt-fast").is_empty(),
        "a first question is not rewritten"
    );
    assert_eq!(a1["found"], true);
    assert_eq!(a1["query"], "When does the nightly backup run?");
    let sources = a1["sources"].as_array().expect("sources");
    assert_eq!(sources[0]["document_name"], "backup.md");
    let cites = a1["citations"].as_array().expect("citations");
    assert_eq!(cites.len(), 2, "{cites:?}");
    assert_eq!(cites[0]["quote"], "The nightly backup runs at 02:00 UTC.");
    assert_eq!(cites[1]["quote"], "vault bucket gw-backups in Frankfurt");
    for c in cites {
        assert_eq!(c["chunk_id"], sources[0]["chunk_id"]);
        assert_eq!(c["inferred"], false);
        let text = sources[0]["text"].as_str().expect("text");
        let (s, e) = (
            c["quote_start"].as_u64().expect("a number") as usize,
            c["quote_end"].as_u64().expect("a number") as usize,
        );
        assert_eq!(&text[s..e], c["quote"].as_str().expect("a string"));
    }
    let dropped: Vec<(u64, &str)> = a1["dropped_citations"]
        .as_array()
        .expect("dropped")
        .iter()
        .map(|d| {
            (
                d["n"].as_u64().expect("a number"),
                d["reason"].as_str().expect("a string"),
            )
        })
        .collect();
    assert!(dropped.contains(&(1, "quote_not_in_source")), "{dropped:?}");
    assert!(dropped.contains(&(9, "not_retrieved")), "{dropped:?}");
    // The prompt numbered the passages; the main route was called once.
    let main1 = llm.requests("gpt-main");
    assert_eq!(main1.len(), 1);
    let prompt1 = main1[0]["messages"].to_string();
    assert!(prompt1.contains("[1] backup.md"), "{prompt1}");
    assert!(prompt1.contains("gw-backups"));
    // Tokens and cost are stored with the answer (gpt-main is priced).
    assert!(a1["message"]["tokens_out"].as_u64().expect("a number") > 0);
    assert!(a1["message"]["cost_usd"].as_f64().expect("a number") > 0.0);
    let conversation = a1["conversation_id"]
        .as_str()
        .expect("conversation")
        .to_owned();

    // The follow-up only makes sense with the history: the fast route rewrites it.
    llm.answer("gpt-fast", "Where are the nightly backup copies stored?");
    llm.script(
        "gpt-main",
        &[Behavior::Answer(
            "They are stored in the vault bucket gw-backups in Frankfurt [1].".into(),
        )],
    );
    let res = server.post(
        "/v1/agents/ops-bot/chat",
        &json!({"message": "And where are they kept?", "conversation_id": conversation, "stream": true}),
    );
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .expect("a header")
        .starts_with("text/event-stream"));
    let location = stream_location(&res);
    let events = sse_events(&res.text().expect("body"));
    let names: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names.first(), Some(&"meta"));
    assert_eq!(names.last(), Some(&"done"));
    assert!(
        names.contains(&"sources") && names.contains(&"citations"),
        "{names:?}"
    );
    let ids: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "ids count up"
    );
    let done = &events.last().expect("one").2;
    assert_eq!(done["query"], "Where are the nightly backup copies stored?");
    assert_eq!(
        deltas(&events),
        "They are stored in the vault bucket gw-backups in Frankfurt [1]."
    );
    assert_eq!(done["citations"][0]["document_name"], "backup.md");
    let rewrite = llm.requests("gpt-fast");
    assert_eq!(rewrite.len(), 1);
    let rewrite_prompt = rewrite[0]["messages"].to_string();
    assert!(
        rewrite_prompt.contains("When does the nightly backup run?"),
        "{rewrite_prompt}"
    );
    assert!(rewrite_prompt.contains("And where are they kept?"));
    // The answer call saw the earlier turn.
    let main2 = llm.requests("gpt-main");
    let history = main2[1]["messages"].as_array().expect("messages");
    assert!(history.iter().any(|m| m["role"] == "assistant"
        && m["content"]
            .as_str()
            .expect("a string")
            .contains("02:00 UTC")));

    // The stream is kept: resuming after event 3 gives the rest, ending with `done`.
    let resumed = server.send("GET", &location, None, &[("last-event-id", "3")]);
    assert_eq!(resumed.status(), 200);
    let rest = sse_events(&resumed.text().expect("body"));
    assert_eq!(rest.first().map(|e| e.0), Some(4));
    assert_eq!(
        rest.iter().map(|e| e.0).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    // Another agent cannot read it.
    let stream_id = location.rsplit('/').next().expect("a stream id");
    problem(
        server.get(&format!("/v1/agents/other/streams/{stream_id}")),
        404,
        "not_found",
    );

    // A client that drops the connection mid-answer resumes where it stopped.
    llm.script(
        "gpt-main",
        &[Behavior::Answer(
            "Invoices go out on the first working day of each month [1]. ".repeat(8),
        )],
    );
    let mut res = server.post(
        "/v1/agents/ops-bot/chat",
        &json!({"message": "When are invoices sent?", "stream": true}),
    );
    let location = stream_location(&res);
    // Only whole events count; the client resumes after the last one it got.
    let complete = read_deltas(&mut res, 2);
    drop(res);
    let last_id = complete.last().map(|e| e.0).unwrap_or(0);
    let rest = sse_events(
        &server
            .send(
                "GET",
                &location,
                None,
                &[("last-event-id", &last_id.to_string())],
            )
            .text()
            .expect("body"),
    );
    let mut all = complete.clone();
    all.extend(rest);
    assert_eq!(
        all.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=all.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(all.last().expect("one").1, "done");
    assert_eq!(
        deltas(&all),
        "Invoices go out on the first working day of each month [1]. ".repeat(8)
    );

    // Nothing relevant: the agent says so and calls no model.
    let calls = llm.requests("gpt-main").len();
    let a = ok_json(server.post(
        "/v1/agents/ops-bot/chat",
        &json!({"message": "What is the airspeed velocity of an unladen swallow?"}),
    ));
    assert_eq!(a["found"], false);
    assert!(a["message"]["content"]
        .as_str()
        .expect("a string")
        .contains("could not find"));
    assert_eq!(a["citations"], json!([]));
    assert_eq!(llm.requests("gpt-main").len(), calls);

    // Past its history budget a conversation is folded into a running summary (fast route),
    // which later prompts carry instead of the old turns.
    ok_json(server.send(
        "PATCH",
        "/v1/agents/ops-bot/config",
        Some(&json!({"history_tokens": 40})),
        &[],
    ));
    llm.script(
        "gpt-fast",
        &[
            Behavior::Answer("Where are the nightly backup copies stored?".into()),
            Behavior::Answer(
                "The user asked when the nightly backup runs and where it is stored.".into(),
            ),
        ],
    );
    ok_json(server.post(
        "/v1/agents/ops-bot/chat",
        &json!({"message": "How long are they kept?", "conversation_id": conversation}),
    ));
    wait_until(10, "the running summary", || {
        ok_json(server.get(&format!(
            "/v1/agents/ops-bot/conversations/{conversation}/messages"
        )))["conversation"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("nightly backup runs"))
    });
    let tasks = ok_json(server.get("/v1/agents/ops-bot/tasks"));
    assert!(
        tasks["items"]
            .as_array()
            .expect("tasks")
            .iter()
            .any(|t| t["kind"] == "summarize" && t["status"] == "done"),
        "{tasks}"
    );
    ok_json(server.post(
        "/v1/agents/ops-bot/chat",
        &json!({"message": "Who can restore them?", "conversation_id": conversation}),
    ));
    let last = llm.requests("gpt-main");
    let prompt = last[last.len() - 1]["messages"].to_string();
    assert!(
        prompt
            .contains("Earlier in this conversation: The user asked when the nightly backup runs"),
        "{prompt}"
    );
    ok_json(server.send(
        "PATCH",
        "/v1/agents/ops-bot/config",
        Some(&json!({"history_tokens": 600})),
        &[],
    ));

    // The history is stored with citations, tokens and cost.
    let msgs = ok_json(server.get(&format!(
        "/v1/agents/ops-bot/conversations/{conversation}/messages"
    )));
    let items = msgs["items"].as_array().expect("items");
    assert_eq!(items.len(), 8);
    assert_eq!(items[3]["citations"][0]["document_name"], "backup.md");
    assert!(items[3]["meta"]["timings"]["retrieval_ms"]
        .as_f64()
        .is_some());
    // Gateway calls are attributed to the agent.
    let usage = ok_json(server.get("/v1/gateway/usage?group_by=agent"));
    assert!(usage["rows"].to_string().contains("ops-bot"), "{usage}");

    // Bad input is refused clearly.
    problem(
        server.post("/v1/agents/ops-bot/chat", &json!({"message": "  "})),
        422,
        "invalid_request",
    );
    problem(
        server.post("/v1/agents/bad%2Fid/chat", &json!({"message": "hi"})),
        422,
        "invalid_request",
    );
    problem(
        server.post(
            "/v1/agents/ops-bot/chat",
            &json!({"message": "hi", "conversation_id": "nope"}),
        ),
        404,
        "not_found",
    );
    // A budget the agent has spent stops it with 429 until the window resets.
    let res = server.send(
        "PATCH",
        "/v1/agents/ops-bot/config",
        Some(&json!({"budget": {"limit_usd": 0.000001, "window": "day"}})),
        &[],
    );
    assert_eq!(res.status(), 200);
    let p = problem(
        server.post(
            "/v1/agents/ops-bot/chat",
            &json!({"message": "When does the backup run?"}),
        ),
        429,
        "budget_exceeded",
    );
    assert!(p["spent_usd"].as_f64().expect("a number") > 0.000001);
    assert!(p["resets_at"].is_string());
    server.stop();
}

#[test]
fn agents_keep_state_across_restarts_and_never_see_each_other() {
    let llm = FakeLlm::start();
    llm.answer("gpt-main", "The vault code word is heliotrope [1].");
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("dir");
    let acme_key = create_key(&data, "acme", "admin");
    let globex_key = create_key(&data, "globex", "admin");
    let server = start(dir.path(), &fake_config(&llm.base), &[]);
    let acme = server.with_key(Some(&acme_key));
    let globex = server.with_key(Some(&globex_key));

    // Created on first use; state with compare-and-set.
    let v = ok_json(acme.get("/v1/agents/ops"));
    assert_eq!(
        (v["version"].as_u64(), &v["state"]),
        (Some(0), &Value::Null)
    );
    let res = acme.send(
        "PUT",
        "/v1/agents/ops/state",
        Some(&json!({"team": "acme", "n": 1})),
        &[("if-match", "\"0\"")],
    );
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let p = problem(
        acme.send(
            "PUT",
            "/v1/agents/ops/state",
            Some(&json!({"team": "lost"})),
            &[("if-match", "\"0\"")],
        ),
        412,
        "version_mismatch",
    );
    assert_eq!(p["current_version"], 1);
    ok_json(acme.send(
        "PUT",
        "/v1/agents/sales/state",
        Some(&json!({"team": "sales"})),
        &[],
    ));

    // Documents and history of acme.
    acme.create_kb("vault");
    add_doc(
        &acme,
        "vault",
        "vault.md",
        "# Vault\n\nThe vault code word is heliotrope. It changes every quarter.",
    );
    let a = ok_json(acme.post(
        "/v1/agents/ops/chat",
        &json!({"message": "What is the vault code word?"}),
    ));
    assert_eq!(a["found"], true);
    assert_eq!(a["citations"][0]["document_name"], "vault.md");
    let conversation = a["conversation_id"].as_str().expect("a string").to_owned();

    // Another agent of the same tenant: its own state, no history.
    let sales = ok_json(acme.get("/v1/agents/sales"));
    assert_eq!(sales["state"], json!({"team": "sales"}));
    assert_eq!(
        ok_json(acme.get("/v1/agents/sales/conversations"))["items"],
        json!([])
    );
    problem(
        acme.get(&format!(
            "/v1/agents/sales/conversations/{conversation}/messages"
        )),
        404,
        "not_found",
    );
    // Another tenant with the same agent id: a different agent; none of acme's documents.
    let other = ok_json(globex.get("/v1/agents/ops"));
    assert_eq!(
        (other["version"].as_u64(), &other["state"]),
        (Some(0), &Value::Null)
    );
    problem(
        globex.get(&format!(
            "/v1/agents/ops/conversations/{conversation}/messages"
        )),
        404,
        "not_found",
    );
    let g = ok_json(globex.post(
        "/v1/agents/ops/chat",
        &json!({"message": "What is the vault code word?"}),
    ));
    assert_eq!(g["found"], false, "{g}");
    assert_eq!(
        llm.requests("gpt-main").len(),
        1,
        "globex's question reached no model"
    );
    let listed = ok_json(globex.get("/v1/agents"));
    assert_eq!(listed["total"], 1);
    // No key, no agent.
    problem(server.get("/v1/agents/ops"), 401, "unauthenticated");

    // Same id, same state, same history after a restart.
    server.stop();
    let server = start(dir.path(), &fake_config(&llm.base), &[]);
    let acme = server.with_key(Some(&acme_key));
    let v = ok_json(acme.get("/v1/agents/ops"));
    assert_eq!(v["state"], json!({"team": "acme", "n": 1}));
    assert_eq!(v["version"], 1);
    let msgs = ok_json(acme.get(&format!(
        "/v1/agents/ops/conversations/{conversation}/messages"
    )));
    assert_eq!(msgs["items"].as_array().expect("an array").len(), 2);
    assert_eq!(
        msgs["items"][1]["citations"][0]["document_name"],
        "vault.md"
    );
    // Deleting an agent removes its history.
    assert_eq!(acme.delete("/v1/agents/ops").status(), 204);
    assert_eq!(ok_json(acme.get("/v1/agents/ops"))["version"], 0);
    problem(
        acme.get(&format!(
            "/v1/agents/ops/conversations/{conversation}/messages"
        )),
        404,
        "not_found",
    );
    server.stop();
}

#[test]
fn hundred_concurrent_patches_lose_no_update() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = Arc::new(start(dir.path(), "[agents]\nidle_secs = 1\n", &[]));
    ok_json(server.send(
        "PUT",
        "/v1/agents/counter/state",
        Some(&json!({"items": []})),
        &[],
    ));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let server = server.clone();
            std::thread::spawn(move || {
                let res = if i % 2 == 0 {
                    server.send(
                        "PATCH",
                        "/v1/agents/counter/state",
                        Some(&json!([{"op": "add", "path": "/items/-", "value": i}])),
                        &[("content-type", "application/json-patch+json")],
                    )
                } else {
                    server.send(
                        "PATCH",
                        "/v1/agents/counter/state",
                        Some(&json!({ format!("k{i}"): i })),
                        &[],
                    )
                };
                assert_eq!(res.status(), 200, "{:?}", res.text());
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let v = ok_json(server.get("/v1/agents/counter"));
    assert_eq!(v["version"], 101);
    let mut items: Vec<u64> = v["state"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|x| x.as_u64().expect("a number"))
        .collect();
    items.sort();
    assert_eq!(items, (0..100).step_by(2).collect::<Vec<u64>>());
    let keys = v["state"]
        .as_object()
        .expect("an object")
        .keys()
        .filter(|k| k.starts_with('k'))
        .count();
    assert_eq!(keys, 50);
    // A patch that does not apply changes nothing.
    problem(
        server.send(
            "PATCH",
            "/v1/agents/counter/state",
            Some(&json!([{"op": "remove", "path": "/missing"}])),
            &[("content-type", "application/json-patch+json")],
        ),
        422,
        "invalid_request",
    );
    assert_eq!(ok_json(server.get("/v1/agents/counter"))["version"], 101);
    // Idle, the agent leaves memory; the next request brings it back with everything.
    let metric = |name: &str| -> f64 {
        let text = server.get("/metrics").text().expect("metrics");
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    wait_until(10, "the idle agent to be evicted", || {
        metric("groundwork_agent_evictions_total") >= 1.0
            && metric("groundwork_agents_live ") == 0.0
    });
    let activations = metric("groundwork_agent_activations_total");
    let v = ok_json(server.get("/v1/agents/counter"));
    assert_eq!(v["version"], 101);
    assert_eq!(v["state"]["items"].as_array().expect("items").len(), 50);
    assert_eq!(
        metric("groundwork_agent_activations_total"),
        activations + 1.0
    );
    Arc::try_unwrap(server).ok().expect("last handle").stop();
}

/// A tiny HTTP endpoint answering the given statuses in turn (then 200), recording requests.
fn flaky_endpoint(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (record, count) = (seen.clone(), Arc::new(AtomicUsize::new(0)));
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            record
                .lock()
                .expect("lock")
                .push(format!("{head}\n{}", String::from_utf8_lossy(&body)));
            let n = count.fetch_add(1, Ordering::SeqCst);
            let status = statuses.get(n).copied().unwrap_or(200);
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    (url, seen)
}

#[test]
fn tasks_retry_in_order_and_schedules_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tmp");
    let toml = "[agents]\ntask_backoff_ms = 100\n";
    let server = start(dir.path(), toml, &[]);
    ok_json(server.send(
        "PUT",
        "/v1/agents/cron-bot/state",
        Some(&json!({"order": [], "ticks": []})),
        &[],
    ));

    // FIFO: three patches run in the order queued.
    for i in 1..=3 {
        let res = server.post(
            "/v1/agents/cron-bot/tasks",
            &json!({"kind": "state.patch", "payload": {"patch": [{"op": "add", "path": "/order/-", "value": i}]}}),
        );
        assert_eq!(res.status(), 202);
    }
    wait_until(10, "three tasks", || {
        ok_json(server.get("/v1/agents/cron-bot/state"))["order"] == json!([1, 2, 3])
    });

    // A webhook failing twice is retried with backoff and succeeds on the third attempt.
    let (url, seen) = flaky_endpoint(vec![500, 503]);
    let t = ok_json(server.post(
        "/v1/agents/cron-bot/tasks",
        &json!({"kind": "http", "payload": {"url": url, "body": {"hello": "world"}}}),
    ));
    let id = t["id"].as_i64().expect("an id");
    wait_until(20, "the webhook task", || {
        ok_json(server.get(&format!("/v1/agents/cron-bot/tasks/{id}")))["status"] == "done"
    });
    let t = ok_json(server.get(&format!("/v1/agents/cron-bot/tasks/{id}")));
    assert_eq!(t["attempts"], 3, "{t}");
    let requests = seen.lock().expect("lock").clone();
    assert_eq!(requests.len(), 3);
    assert!(requests
        .iter()
        .all(|r| r.contains(&format!("idempotency-key: agent-task-{id}"))));
    assert!(requests[0].contains("\"hello\":\"world\""));
    // A client error is not retried.
    let (url, _) = flaky_endpoint(vec![400]);
    let t = ok_json(server.post(
        "/v1/agents/cron-bot/tasks",
        &json!({"kind": "http", "payload": {"url": url}}),
    ));
    let id = t["id"].as_i64().expect("an id");
    wait_until(10, "the failing task", || {
        ok_json(server.get(&format!("/v1/agents/cron-bot/tasks/{id}")))["status"] == "failed"
    });
    assert_eq!(
        ok_json(server.get(&format!("/v1/agents/cron-bot/tasks/{id}")))["attempts"],
        1
    );
    problem(
        server.post("/v1/agents/cron-bot/tasks", &json!({"kind": "reboot"})),
        422,
        "invalid_request",
    );

    // Schedules set before a crash fire after the restart.
    let once = ok_json(server.post(
        "/v1/agents/cron-bot/schedules",
        &json!({"after_secs": 3, "task": {"kind": "state.patch", "payload": {"patch": {"fired": true}}}}),
    ));
    let at = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    ok_json(server.post(
        "/v1/agents/cron-bot/schedules",
        &json!({"at": at, "task": {"kind": "state.patch", "payload": {"patch": {"at_fired": true}}}}),
    ));
    ok_json(server.post(
        "/v1/agents/cron-bot/schedules",
        &json!({"cron": "every 1s", "task": {"kind": "state.patch",
                "payload": {"patch": [{"op": "add", "path": "/ticks/-", "value": 1}]}}}),
    ));
    problem(
        server.post(
            "/v1/agents/cron-bot/schedules",
            &json!({"cron": "whenever", "task": {"kind": "state.patch", "payload": {"patch": {}}}}),
        ),
        422,
        "invalid_request",
    );
    server.kill();
    std::thread::sleep(Duration::from_secs(4));
    let server = start(dir.path(), toml, &[]);
    wait_until(15, "the schedules to fire after the restart", || {
        let s = ok_json(server.get("/v1/agents/cron-bot/state"));
        s["fired"] == true
            && s["at_fired"] == true
            && s["ticks"].as_array().expect("an array").len() >= 2
    });
    let schedules = ok_json(server.get("/v1/agents/cron-bot/schedules"));
    let first = schedules["items"]
        .as_array()
        .expect("an array")
        .iter()
        .find(|s| s["id"] == once["id"])
        .expect("schedule")
        .clone();
    assert_eq!(first["runs"], 1);
    assert!(first["next_run"].is_null());
    // Once fired, a one-off schedule does not fire again.
    let s = ok_json(server.get("/v1/agents/cron-bot/tasks"));
    let fired = s["items"]
        .as_array()
        .expect("an array")
        .iter()
        .filter(|t| t["schedule_id"] == once["id"])
        .count();
    assert_eq!(fired, 1);
    server.stop();
}

pub(crate) fn ws_connect(
    server: &TestServer,
    agent: &str,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let url = format!(
        "{}/v1/agents/{agent}/ws",
        server.url.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tungstenite::connect(url).expect("ws connect");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
    }
    ws
}

pub(crate) fn ws_until(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let msg = ws.read().expect("ws read");
        if let tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json");
            let done = pred(&v);
            seen.push(v);
            if done {
                return seen;
            }
        }
    }
}

#[test]
fn websocket_clients_see_state_changes_and_messages() {
    let llm = FakeLlm::start();
    llm.answer("gpt-main", "The nightly backup runs at 02:00 UTC [1].");
    let dir = tempfile::tempdir().expect("tmp");
    let server = start(dir.path(), &fake_config(&llm.base), &[]);
    server.create_kb("ops");
    add_doc(&server, "ops", "backup.md", BACKUP_DOC);
    let mut a = ws_connect(&server, "team");
    let mut b = ws_connect(&server, "team");
    for ws in [&mut a, &mut b] {
        let hello = ws_until(ws, |v| v["type"] == "hello");
        assert_eq!(hello[0]["agent"]["version"], 0);
    }
    a.send(tungstenite::Message::Text(
        json!({"type": "state.patch", "ref": 7, "patch": {"topic": "backups"}})
            .to_string()
            .into(),
    ))
    .expect("send");
    let got = ws_until(&mut a, |v| v["type"] == "ack");
    assert_eq!(got.last().expect("one")["ref"], 7);
    assert_eq!(got.last().expect("one")["version"], 1);
    let seen = ws_until(&mut b, |v| v["type"] == "state");
    assert_eq!(
        seen.last().expect("one")["state"],
        json!({"topic": "backups"})
    );
    // An HTTP write reaches both sockets too.
    ok_json(server.send(
        "PATCH",
        "/v1/agents/team/state",
        Some(&json!({"topic": "invoices"})),
        &[],
    ));
    for ws in [&mut a, &mut b] {
        let s = ws_until(ws, |v| v["type"] == "state" && v["version"] == 2);
        assert_eq!(
            s.last().expect("one")["state"],
            json!({"topic": "invoices"})
        );
    }
    // A question asked on one socket: everyone sees it, the answer streaming and the answer.
    a.send(tungstenite::Message::Text(
        json!({"type": "chat", "ref": "q1", "message": "When does the nightly backup run?"})
            .to_string()
            .into(),
    ))
    .expect("send");
    let seen = ws_until(&mut b, |v| {
        v["type"] == "message" && v["message"]["role"] == "assistant"
    });
    assert!(seen
        .iter()
        .any(|v| v["type"] == "message" && v["message"]["role"] == "user"));
    let streamed: String = seen
        .iter()
        .filter(|v| v["type"] == "delta")
        .map(|v| v["text"].as_str().expect("a string"))
        .collect();
    assert_eq!(streamed, "The nightly backup runs at 02:00 UTC [1].");
    assert_eq!(
        seen.last().expect("one")["message"]["citations"][0]["document_name"],
        "backup.md"
    );
    let mine = ws_until(&mut a, |v| v["type"] == "chat_done");
    assert_eq!(mine.last().expect("one")["ref"], "q1");
    // Bad messages get an error, the socket stays.
    a.send(tungstenite::Message::Text("{\"type\":\"dance\"}".into()))
        .expect("send");
    let err = ws_until(&mut a, |v| v["type"] == "error");
    assert_eq!(err.last().expect("one")["code"], "invalid_request");
    server.stop();
}

#[test]
fn local_model_answers_with_history_end_to_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = start(dir.path(), "", &[]);
    server.create_kb("ops");
    add_doc(&server, "ops", "backup.md", BACKUP_DOC);
    add_doc(&server, "ops", "invoices.md", INVOICE_DOC);
    let res = server.post(
        "/v1/agents/local/chat",
        // The local model writes this one (the default on a local route is extractive).
        &json!({"message": "When does the nightly backup run?", "stream": true,
                "answer_mode": "generative"}),
    );
    assert_eq!(res.status(), 200);
    let events = sse_events(&res.text().expect("body"));
    let done = &events.last().expect("events").2;
    assert_eq!(events.last().expect("one").1, "done", "{events:?}");
    assert!(!deltas(&events).trim().is_empty());
    assert_eq!(done["sources"][0]["document_name"], "backup.md");
    assert!(
        done["usage"]["completion_tokens"]
            .as_u64()
            .expect("a number")
            > 0
    );
    let t = &done["timings"];
    assert!(
        t["model_ttft_ms"].as_f64().expect("a number") > 0.0
            && t["retrieval_ms"].as_f64().expect("a number") > 0.0
    );
    // A follow-up that names nothing: only the history makes it about invoices.
    let a = ok_json(server.post(
        "/v1/agents/local/chat",
        &json!({"message": "When are invoices sent?"}),
    ));
    assert_eq!(a["sources"][0]["document_name"], "invoices.md", "{a}");
    let conversation = a["conversation_id"].as_str().expect("a string");
    let alone = ok_json(server.post(
        "/v1/agents/local/chat",
        &json!({"message": "Who sends them?"}),
    ));
    assert_eq!(
        alone["found"], false,
        "without history the question is about nothing: {alone}"
    );
    let a = ok_json(server.post(
        "/v1/agents/local/chat",
        &json!({"message": "Who sends them?", "conversation_id": conversation}),
    ));
    assert_eq!(a["found"], true, "{a}");
    assert_eq!(a["sources"][0]["document_name"], "invoices.md", "{a}");
    assert!(a["timings"]["rewrite_ms"].as_f64().expect("a number") > 0.0);
    assert!(!a["message"]["content"]
        .as_str()
        .expect("a string")
        .trim()
        .is_empty());
    // Both calls went through the gateway as the agent's.
    let logs = ok_json(server.get("/v1/gateway/logs?agent=local"));
    let routes: Vec<&str> = logs["items"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|l| l["route"].as_str().expect("a string"))
        .collect();
    assert!(
        routes.contains(&"main") && routes.contains(&"fast"),
        "{routes:?}"
    );
    server.stop();
}

/// "`Agents::shutdown` only sets a flag" (issue 15): SIGTERM while an answer is being generated
/// for a client that went away, and while documents are being ingested. The process exits
/// well within the grace period; the turn's answer is stored whole and its stream ends with
/// `done` (before, the turn died with the process and the question stayed unanswered); the
/// ingest finishes, now or at the restart.
#[test]
fn agents_shutdown_only_sets_a_flag() {
    let llm = FakeLlm::start();
    llm.answer("gpt-main", "The nightly backup runs at 02:00 UTC [1].");
    let dir = tempfile::tempdir().expect("tmp");
    let server = start(dir.path(), &fake_config(&llm.base), &[]);
    server.create_kb("ops");
    add_doc(&server, "ops", "backup.md", BACKUP_DOC);
    llm.script("gpt-main", &[Behavior::Stall(Duration::from_millis(1500))]);
    let res = server.send(
        "POST",
        "/v1/agents/bot/chat",
        Some(&json!({"message": "When does the nightly backup run?", "stream": true})),
        &[],
    );
    assert_eq!(res.status(), 200);
    drop(res); // the client goes away; the turn goes on
    let receipt: Value = ok_json(server.post(
        "/v1/kbs/ops/documents",
        &json!({"name": "invoices.md", "text": INVOICE_DOC}),
    ));
    let job = receipt["job_id"].as_str().expect("job").to_owned();
    wait_until(10, "the turn to call the model", || {
        !llm.requests("gpt-main").is_empty()
    });
    let stopping = Instant::now();
    let data_dir = server.data_dir.clone();
    server.stop();
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(20), "stopped in {took:?}");
    let log = std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default();
    let plain = strip_ansi(&log);
    assert!(
        plain.contains("tasks_left=0"),
        "every task finished: {plain}"
    );
    assert!(!plain.contains("chat turn failed"), "{plain}");

    let server = start(dir.path(), &fake_config(&llm.base), &[]);
    let conversations = ok_json(server.get("/v1/agents/bot/conversations"));
    let conversation = conversations["items"][0]["id"]
        .as_str()
        .expect("stored")
        .to_owned();
    let messages = ok_json(server.get(&format!(
        "/v1/agents/bot/conversations/{conversation}/messages"
    )));
    let answer = messages["items"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap_or_else(|| panic!("the answer was stored: {messages}"))
        .clone();
    assert!(
        answer["content"]
            .as_str()
            .unwrap_or_default()
            .contains("02:00 UTC"),
        "{answer}"
    );
    let stream_id = answer["meta"]["stream_id"].as_str().expect("stream id");
    let body = server
        .get(&format!("/v1/agents/bot/streams/{stream_id}"))
        .text()
        .expect("stream");
    let events = sse_events(&body);
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("done"), "{body}");
    assert_eq!(server.wait_job(&job)["ready"], 1);
    server.stop();
}

/// `text` without terminal colour codes (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
