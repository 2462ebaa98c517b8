//! Reranking: the local cross-encoder against a reference BERT forward pass (candle's own
//! `BertModel`), rerank providers through the gateway against a fake upstream speaking Cohere's,
//! Jina's, Voyage's and TEI's formats (order as scripted, costs logged, cache, fallback, budget),
//! the rerank stage of a search and of an agent, and `POST /v1/rerank` on a local model.

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use groundwork::embed::CrossEncoder;
use serde_json::{json, Value};

use crate::common::{tiny_bert, tiny_cross_encoder};
use crate::fake_llm::{Behavior, FakeLlm};
use crate::gateway::wait_logs;
use crate::server::{ok_json, problem, TestServer};

const QUERY: &str = "what happens to a value when its owner goes out of scope";

fn passages() -> Vec<String> {
    vec![
        "Each value in Rust has an owner; when the owner goes out of scope the value is dropped."
            .into(),
        "Cargo is Rust's build system and package manager.".into(),
        "References let you refer to a value without taking ownership of it.".into(),
        "Plants convert light energy into chemical energy stored in glucose.".into(),
        // Longer than the model's 512 positions: truncated, the passage side first.
        "The borrow checker compares scopes to determine whether all borrows are valid. "
            .repeat(60),
    ]
}

/// The score sentence-transformers' `CrossEncoder.predict` computes, on candle's reference
/// `BertModel`: sigmoid(classifier(tanh(pooler(h_[CLS])))).
fn reference_scores(dir: &std::path::Path, query: &str, passages: &[String]) -> Vec<f32> {
    let config: candle_transformers::models::bert::Config =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config"))
            .expect("candle config");
    let weights = dir.join("model.safetensors");
    // SAFETY: the file was written by this test and is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
        .expect("weights");
    let model =
        candle_transformers::models::bert::BertModel::load(vb.clone(), &config).expect("model");
    let h = config.hidden_size;
    let pooler_w = vb.get((h, h), "bert.pooler.dense.weight").expect("pooler");
    let pooler_b = vb.get(h, "bert.pooler.dense.bias").expect("pooler bias");
    let cls_w = vb.get((1, h), "classifier.weight").expect("classifier");
    let cls_b = vb.get(1, "classifier.bias").expect("classifier bias");
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: 512,
            strategy: tokenizers::TruncationStrategy::LongestFirst,
            ..Default::default()
        }))
        .expect("truncation");
    passages
        .iter()
        .map(|p| {
            let e = tokenizer.encode((query, p.as_str()), true).expect("encode");
            let ids = Tensor::new(e.get_ids(), &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .expect("ids");
            let types = Tensor::new(e.get_type_ids(), &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .expect("types");
            let out = model.forward(&ids, &types, None).expect("forward");
            let cls = out.i((0, 0)).expect("cls").unsqueeze(1).expect("column");
            let pooled = (pooler_w
                .matmul(&cls)
                .expect("pool")
                .squeeze(1)
                .expect("row")
                + &pooler_b)
                .and_then(|t| t.tanh())
                .expect("tanh");
            let logit = (cls_w
                .matmul(&pooled.unsqueeze(1).expect("col"))
                .expect("logit")
                .squeeze(1)
                .expect("one")
                + &cls_b)
                .expect("bias");
            let l = logit.to_vec1::<f32>().expect("value")[0];
            1.0 / (1.0 + (-l).exp())
        })
        .collect()
}

#[test]
fn the_cross_encoder_scores_pairs_as_a_reference_bert_forward_does() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = dir.path().join("tiny-ce");
    tiny_cross_encoder(&model);
    let ce = CrossEncoder::load(&model).expect("loads");
    let docs = passages();
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let got = ce.score(QUERY, &refs).expect("scores");
    let want = reference_scores(&model, QUERY, &docs);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 2e-4, "ours {got:?}\nreference {want:?}");
    }
    // The scores tell passages apart, and the sides of a pair matter (token types).
    let spread =
        got.iter().copied().fold(f32::MIN, f32::max) - got.iter().copied().fold(f32::MAX, f32::min);
    assert!(spread > 1e-3, "{got:?}");
    let swapped = ce.score(refs[1], &[QUERY]).expect("scores")[0];
    assert!((swapped - got[1]).abs() > 1e-6, "{swapped} vs {}", got[1]);
    // An embedding model's folder is no cross-encoder.
    let plain = dir.path().join("plain");
    tiny_bert(&plain, 32);
    let err = CrossEncoder::load(&plain)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("not a cross-encoder"), "{err}");
}

fn upload_notes(server: &TestServer) {
    server.create_kb("notes");
    let files: Vec<(String, Vec<u8>)> = passages()
        .into_iter()
        .take(4)
        .chain([
            "Ownership rules: each value has one owner at a time.".to_owned(),
            "Dropping a value frees its memory when its owner's scope ends.".to_owned(),
        ])
        .enumerate()
        .map(|(i, t)| (format!("note{i}.md"), t.into_bytes()))
        .collect();
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let receipt = ok_json(server.upload("notes", &files, None));
    server.wait_job(receipt["job_id"].as_str().expect("job"));
}

fn search(server: &TestServer, body: Value) -> Value {
    ok_json(server.post("/v1/kbs/notes/search", &body))
}

fn ids(found: &Value) -> Vec<u64> {
    found["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["chunk_id"].as_u64().expect("id"))
        .collect()
}

#[test]
fn rerank_providers_order_results_as_scripted_with_costs_logged_cached_and_budgeted() {
    let up = FakeLlm::start();
    let dir = tempfile::tempdir().expect("tmp");
    let base = &up.base;
    let toml = format!(
        r#"
[gateway.providers.co]
kind = "cohere"
base_url = "{base}"
api_key = "co-key"

[gateway.providers.ji]
kind = "jina"
base_url = "{base}"
api_key = "ji-key"

[gateway.providers.vo]
kind = "voyage"
base_url = "{base}"
api_key = "vo-key"

[gateway.providers.te]
kind = "tei"
base_url = "{base}"

[gateway.routes.rr]
targets = ["co/rerank-v3.5"]

[gateway.routes.rr-fallback]
targets = ["co/rerank-broken", "ji/jina-reranker-v2"]
retries = 0
backoff_ms = 5

[gateway.routes.rr-slow]
targets = ["co/rerank-slow", "ji/jina-reranker-v2"]
retries = 0
total_timeout_ms = 300

[gateway.routes.rr-voyage]
targets = ["vo/rerank-2"]

[gateway.routes.rr-tei]
targets = ["te/bge-reranker-base"]

[gateway.routes.rr-tight]
targets = ["ji/jina-tight"]

[gateway.prices."rerank-v3.5"]
input = 2.0
output = 0.0

[gateway.prices.jina-reranker-v2]
input = 1.0
output = 0.0

[gateway.prices.jina-tight]
input = 1000.0
output = 0.0

[[gateway.budgets]]
scope = "route"
id = "rr-tight"
window = "day"
limit_usd = 0.0001
"#
    );
    let server = TestServer::start_with_config(dir.path(), &toml, &[]);
    upload_notes(&server);

    // The stage orders the index's candidates: the fake scores the last one sent highest, so
    // the reranked results are the fused candidates reversed, cut to top_k.
    let fused = search(
        &server,
        json!({"query": QUERY, "top_k": 6, "rerank": false}),
    );
    let fused = ids(&fused);
    assert_eq!(fused.len(), 6);
    let body = json!({"query": QUERY, "top_k": 4, "rerank": {"model": "rr", "candidates": 6}});
    let reranked = search(&server, body.clone());
    let want: Vec<u64> = fused.iter().rev().take(4).copied().collect();
    assert_eq!(ids(&reranked), want, "{reranked}");
    assert_eq!(
        reranked["rerank"],
        json!({"model": "rr", "candidates": 6, "applied": true})
    );
    let scores: Vec<f64> = reranked["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["rerank_score"].as_f64().expect("rerank score"))
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let sent = up.requests("rerank-v3.5");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["query"], QUERY);
    assert_eq!(sent[0]["documents"].as_array().map(Vec::len), Some(6));

    // Logged and priced (Cohere reports no tokens: estimated from the bytes it read).
    let logged = wait_logs(&server, "route=rr", 1);
    assert_eq!(logged[0]["kind"], "rerank");
    assert_eq!(logged[0]["provider"], "co");
    assert!(logged[0]["tokens_in"].as_u64().expect("tokens") > 50);
    assert!(logged[0]["cost_usd"].as_f64().expect("cost") > 0.0);

    // The same search again: answered from the cache, the upstream not asked.
    assert_eq!(ids(&search(&server, body)), want);
    assert_eq!(up.requests("rerank-v3.5").len(), 1);
    let logged = wait_logs(&server, "route=rr", 2);
    assert!(logged.iter().any(|l| l["cache"] == "hit"), "{logged:?}");

    // POST /v1/rerank on every wire format; a 500 moves on to the next target.
    up.script("rerank-broken", &[Behavior::Status(500)]);
    let docs = json!(["alpha", {"text": "beta"}, "gamma"]);
    for route in ["rr-voyage", "rr-tei", "rr-fallback"] {
        let out = ok_json(server.post(
            "/v1/rerank",
            &json!({"model": route, "query": "q", "documents": docs, "top_n": 2, "return_documents": true}),
        ));
        let got: Vec<(u64, &str)> = out["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                (
                    r["index"].as_u64().expect("index"),
                    r["document"]["text"].as_str().expect("text"),
                )
            })
            .collect();
        assert_eq!(got, [(2, "gamma"), (1, "beta")], "{route}: {out}");
    }
    let fallback = wait_logs(&server, "route=rr-fallback", 1);
    assert_eq!(fallback[0]["attempts"].as_array().map(Vec::len), Some(2));
    assert_eq!(fallback[0]["provider"], "ji");
    assert!(fallback[0]["cost_usd"].as_f64().expect("cost") > 0.0);
    assert_eq!(
        up.requests("tei")[0]["texts"],
        json!(["alpha", "beta", "gamma"])
    );

    // An attempt past the route's total timeout moves on to the next target.
    up.script(
        "rerank-slow",
        &[Behavior::Stall(std::time::Duration::from_secs(3))],
    );
    let t = std::time::Instant::now();
    ok_json(server.post(
        "/v1/rerank",
        &json!({"model": "rr-slow", "query": "q", "documents": ["a", "b"]}),
    ));
    assert!(
        t.elapsed() < std::time::Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    let slow = wait_logs(&server, "route=rr-slow", 1);
    assert_eq!(slow[0]["attempts"][0]["outcome"], "timeout", "{}", slow[0]);
    assert_eq!(slow[0]["provider"], "ji");

    // A knowledge base's own stage applies to searches that do not say otherwise.
    let kb = ok_json(server.send(
        "PATCH",
        "/v1/kbs/notes",
        Some(&json!({"rerank": {"model": "rr-voyage", "candidates": 6}})),
        &[],
    ));
    assert_eq!(kb["rerank"], json!({"model": "rr-voyage", "candidates": 6}));
    let by_kb = search(&server, json!({"query": QUERY, "top_k": 4}));
    assert_eq!(ids(&by_kb), want);
    assert_eq!(by_kb["rerank"]["model"], "rr-voyage");
    let off = search(
        &server,
        json!({"query": QUERY, "top_k": 4, "rerank": false}),
    );
    assert_eq!(ids(&off), fused[..4].to_vec());
    assert!(off.get("rerank").is_none(), "{off}");
    problem(
        server.send(
            "PATCH",
            "/v1/kbs/notes",
            Some(&json!({"rerank": {"model": "nope"}})),
            &[],
        ),
        422,
        "invalid_request",
    );
    let cleared = ok_json(server.send(
        "PATCH",
        "/v1/kbs/notes",
        Some(&json!({"rerank": null})),
        &[],
    ));
    assert!(cleared["rerank"].is_null(), "{cleared}");
    let plain = search(&server, json!({"query": QUERY, "top_k": 4}));
    assert_eq!(ids(&plain), fused[..4].to_vec());
    let created = ok_json(server.post(
        "/v1/kbs",
        &json!({"name": "reranked", "rerank": {"model": "rr-tei"}}),
    ));
    assert_eq!(
        created["rerank"],
        json!({"model": "rr-tei", "candidates": null})
    );

    // Over budget: the API refuses; a search keeps its fused order and says why.
    problem(
        server.post(
            "/v1/rerank",
            &json!({"model": "rr-tight", "query": QUERY, "documents": passages()}),
        ),
        429,
        "budget_exceeded",
    );
    let tight = search(
        &server,
        json!({"query": QUERY, "top_k": 4, "rerank": {"model": "rr-tight", "candidates": 6}}),
    );
    assert_eq!(ids(&tight), fused[..4].to_vec());
    assert_eq!(tight["rerank"]["applied"], false);
    assert_eq!(tight["rerank"]["error"], "budget_exceeded");
    assert!(up.requests("jina-tight").is_empty());
    // A route that does not exist is the caller's mistake.
    let p = problem(
        server.post(
            "/v1/kbs/notes/search",
            &json!({"query": QUERY, "rerank": "no-such-route"}),
        ),
        422,
        "invalid_request",
    );
    assert!(p["detail"]
        .as_str()
        .is_some_and(|d| d.contains("no-such-route")));

    // An agent reranks the passages of all its knowledge bases for its question.
    ok_json(server.send(
        "PATCH",
        "/v1/agents/helper/config",
        Some(
            &json!({"rerank": "rr-fallback", "rerank_candidates": 8, "answer_mode": "extractive"}),
        ),
        &[],
    ));
    let answer = ok_json(server.post(
        "/v1/agents/helper/chat",
        &json!({"message": "What happens to a value when its owner goes out of scope?"}),
    ));
    assert_eq!(answer["found"], true, "{answer}");
    // (The route's first target answers again: its 500 was scripted once.)
    let asked = up.requests("rerank-broken");
    let last = asked.last().expect("the agent's rerank call");
    assert!(
        last["query"].as_str().is_some_and(|q| q.contains("owner")),
        "{last}"
    );
    let agent_calls = wait_logs(&server, "agent=helper&route=rr-fallback", 1);
    assert_eq!(agent_calls[0]["kind"], "rerank");
    server.stop();
}

#[test]
fn a_local_cross_encoder_reranks_searches_and_answers_the_rerank_endpoint() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = dir.path().join("tiny-ce");
    tiny_cross_encoder(&model);
    let toml = format!(
        r#"
[gateway.local_rerankers]
tiny = "{}"

[gateway.routes.rr-local]
targets = ["local/tiny"]
"#,
        model.display()
    );
    let server = TestServer::start_with_config(dir.path(), &toml, &[]);
    let ce = CrossEncoder::load(&model).expect("loads");
    let docs = passages();
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let scores = ce.score(QUERY, &refs).expect("scores");
    let mut want: Vec<usize> = (0..docs.len()).collect();
    want.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let out = ok_json(server.post(
        "/v1/rerank",
        &json!({"model": "rr-local", "query": QUERY, "documents": docs}),
    ));
    let got: Vec<usize> = out["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["index"].as_u64().expect("index") as usize)
        .collect();
    assert_eq!(got, want, "{out}");
    for r in out["results"].as_array().expect("results") {
        let i = r["index"].as_u64().expect("index") as usize;
        let s = r["relevance_score"].as_f64().expect("score") as f32;
        assert!((s - scores[i]).abs() < 1e-5);
    }
    assert!(out["usage"]["total_tokens"].as_u64().expect("tokens") > 500);

    // A search's stage: the candidates in the cross-encoder's order, each with its score.
    upload_notes(&server);
    let found = search(
        &server,
        json!({"query": QUERY, "top_k": 3, "mode": "hybrid", "rerank": {"model": "rr-local", "candidates": 6}}),
    );
    let hits = found["results"].as_array().expect("results");
    assert_eq!(hits.len(), 3);
    let texts: Vec<&str> = hits
        .iter()
        .map(|h| h["text"].as_str().expect("text"))
        .collect();
    let expect = ce.score(QUERY, &texts).expect("scores");
    for (h, e) in hits.iter().zip(&expect) {
        let s = h["rerank_score"].as_f64().expect("score") as f32;
        assert!((s - e).abs() < 1e-5, "{h}");
    }
    assert!(expect.windows(2).all(|w| w[0] >= w[1]), "{expect:?}");
    let logged = wait_logs(&server, "route=rr-local", 2);
    assert!(logged
        .iter()
        .all(|l| l["provider"] == "local" && l["cost_usd"] == 0.0));
    server.stop();
}
