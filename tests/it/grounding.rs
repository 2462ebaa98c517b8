//! Answers true to the documents (issue 13): generated sentences verified against the
//! passages (an invented name or a wrong number is `unsupported`, and dropped under `strict`),
//! extractive answers on the embedded default quoting the guide's real command.

use serde_json::{json, Value};

use crate::agents::{add_doc, fake_config, BACKUP_DOC, INVOICE_DOC};
use crate::common::root;
use crate::fake_llm::FakeLlm;
use crate::server::{ok_json, TestServer};

#[test]
fn an_invented_sentence_is_unsupported_and_strict_drops_it() {
    let llm = FakeLlm::start();
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start_with_config(dir.path(), &fake_config(&llm.base), &[]);
    server.create_kb("ops");
    add_doc(&server, "ops", "backup.md", BACKUP_DOC);
    add_doc(&server, "ops", "invoices.md", INVOICE_DOC);
    // One sentence the passage supports, one with a wrong number and an invented name.
    const SUPPORTED: &str = "The nightly backup runs at 02:00 UTC [1].";
    const INVENTED: &str = "The backup copies are kept for 90 days by Oracle Cloud [1].";
    llm.answer("gpt-main", &format!("{SUPPORTED} {INVENTED}"));
    let question =
        json!({"message": "When does the nightly backup run and how long are copies kept?"});

    let a = ok_json(server.post("/v1/agents/ops-bot/chat", &question));
    assert_eq!(
        (a["found"].clone(), a["mode"].clone()),
        (json!(true), json!("generative")),
        "{a}"
    );
    let claims = a["claims"].as_array().expect("claims");
    assert_eq!(claims.len(), 2, "{claims:?}");
    assert_eq!(claims[0]["supported"], true, "{claims:?}");
    assert_eq!(claims[1]["supported"], false, "{claims:?}");
    let missing: Vec<&str> = claims[1]["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .map(|m| m.as_str().expect("a string"))
        .collect();
    assert!(
        missing.contains(&"90") && missing.contains(&"oracle"),
        "{missing:?}"
    );
    assert_eq!(a["grounded_share"], 0.5);
    // Not strict: the answer keeps the sentence, marked; only the supported one is cited.
    assert_eq!(a["message"]["content"], format!("{SUPPORTED} {INVENTED}"));
    let cites = a["citations"].as_array().expect("citations");
    assert_eq!(cites.len(), 1, "{cites:?}");
    assert_eq!(cites[0]["quote"], "The nightly backup runs at 02:00 UTC.");
    assert_eq!(cites[0]["document_name"], "backup.md");
    assert!(a["dropped_citations"]
        .as_array()
        .expect("dropped")
        .iter()
        .any(|d| d["reason"] == "claim_unsupported"));
    // The stored message carries the claims for the UI.
    let conv = a["conversation_id"].as_str().expect("id");
    let msgs = ok_json(server.get(&format!("/v1/agents/ops-bot/conversations/{conv}/messages")));
    let stored = msgs["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["role"] == "assistant")
        .expect("the answer")
        .clone();
    assert_eq!(stored["meta"]["claims"][1]["supported"], false, "{stored}");

    // Strict: the invented sentence is removed before anyone sees it, streamed or not.
    ok_json(server.send(
        "PATCH",
        "/v1/agents/ops-bot/config",
        Some(&json!({"strict": true})),
        &[],
    ));
    let a = ok_json(server.post("/v1/agents/ops-bot/chat", &question));
    assert_eq!(a["message"]["content"], SUPPORTED, "{a}");
    assert_eq!(a["citations"].as_array().expect("citations").len(), 1);
    let mut q = question.clone();
    q["stream"] = json!(true);
    let res = server.post("/v1/agents/ops-bot/chat", &q);
    let body = res.text().expect("body");
    // The answer's text travels in `delta` events (`{"text": …}`); the claims data may
    // still name the sentence it removed.
    let streamed: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.get("text").and_then(Value::as_str).map(str::to_owned))
        .collect();
    assert_eq!(streamed, SUPPORTED, "{body}");

    // The same question answered extractively on request: no model call, verbatim units.
    let calls = llm.requests("gpt-main").len();
    let mut q = question.clone();
    q["answer_mode"] = json!("extractive");
    let a = ok_json(server.post("/v1/agents/ops-bot/chat", &q));
    assert_eq!(a["mode"], "extractive");
    assert_eq!(llm.requests("gpt-main").len(), calls);
    let text = a["message"]["content"].as_str().expect("text");
    assert!(
        text.contains("The nightly backup runs at 02:00 UTC. [1]"),
        "{text}"
    );
    for c in a["citations"].as_array().expect("citations") {
        let source = a["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .find(|s| s["n"] == c["n"])
            .expect("its source");
        let t = source["text"].as_str().expect("text");
        let (s, e) = (
            c["quote_start"].as_u64().expect("start") as usize,
            c["quote_end"].as_u64().expect("end") as usize,
        );
        assert_eq!(&t[s..e], c["quote"].as_str().expect("quote"));
        assert!(text.contains(&c["quote"].as_str().expect("quote").replace('\n', " ")));
    }
    server.stop();
}

#[test]
fn the_seeded_guide_answers_how_to_create_an_api_key_with_the_real_command() {
    let dir = tempfile::tempdir().expect("tmp");
    // The embedded default: the main route is the local model, so answers are extractive.
    let server = TestServer::start_with_config(dir.path(), "", &[]);
    server.create_kb("guide");
    let guide = root().join("data/guide");
    let mut names: Vec<_> = std::fs::read_dir(&guide)
        .expect("data/guide")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        let text = std::fs::read_to_string(guide.join(name)).expect("read");
        add_doc(&server, "guide", name, &text);
    }
    let a = ok_json(server.post(
        "/v1/agents/helper/chat",
        &json!({"message": "How do I create an API key?"}),
    ));
    assert_eq!(
        (a["found"].clone(), a["mode"].clone()),
        (json!(true), json!("extractive")),
        "{a}"
    );
    let text = a["message"]["content"].as_str().expect("text");
    assert!(
        text.contains("groundwork keys create --tenant acme --scopes read,write"),
        "{text}"
    );
    let cites = a["citations"].as_array().expect("citations");
    let command = cites
        .iter()
        .find(|c| {
            c["quote"]
                .as_str()
                .is_some_and(|q| q.contains("groundwork keys create"))
        })
        .unwrap_or_else(|| panic!("a citation quotes the command: {cites:?}"));
    assert_eq!(command["document_name"], "api-keys-and-tenants.md");
    assert_eq!(a["grounded_share"], 1.0);
    // No model wrote it: the gateway log has no chat call of this agent.
    let logs = ok_json(server.get("/v1/gateway/logs?agent=helper"));
    assert!(
        logs["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|l| l["route"] != "main"),
        "{logs}"
    );
    server.stop();
}
