//! Agent benchmarks, written to `bench-results/agents.json`; each part runs the release
//! `groundwork serve` on a fresh data directory:
//!
//! - chat: grounded chat turns with the embedded default (local SmolLM2-135M on `fast` and
//!   `main`) over the seeded user guide — where a turn's time goes: rewriting the follow-up,
//!   retrieval, time to the first answer token, decode tokens/s; first questions and
//!   follow-ups separately, plus the very first turn (which loads the model); once generated
//!   (`answer_mode` generative) and once extractive (the default on a local model).
//! - activation: latency of the first request to an agent that is in the store but not in
//!   memory (after a restart), against the same request once it is live.
//! - throughput: state writes (JSON Merge Patch, each committed before its answer) and reads
//!   spread over 1,000 agents by 64 concurrent clients: messages/s and latency percentiles.
//!
//! `cargo bench --bench agents [-- --quick] [-- --only chat|activation|throughput]`.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::{only, percentile, root, save_results, spawn_until, Proc};

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({
        "n": v.len(),
        "p50": percentile(&v, 0.5),
        "p90": percentile(&v, 0.9),
        "p99": percentile(&v, 0.99),
        "max": v.last().copied().unwrap_or(f64::NAN),
    })
}

fn serve(data: &Path, config: &str, seed: bool) -> (Proc, String) {
    let toml = data.with_extension("toml");
    std::fs::write(&toml, config).expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_groundwork"));
    cmd.current_dir(root())
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("GROUNDWORK_CONFIG", &toml)
        .env("RUST_LOG", "warn,groundwork=info");
    if seed {
        cmd.args(["--seed", "data/guide"]);
    }
    spawn_until(cmd, "listening on ", &data.with_extension("log"), 300)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .build()
        .expect("client")
}

/// Waits until every file of the seeded guide is searchable.
fn wait_seeded(http: &reqwest::blocking::Client, url: &str) {
    let files = std::fs::read_dir(root().join("data/guide"))
        .expect("data/guide")
        .count() as u64;
    let started = Instant::now();
    loop {
        let ready = http
            .get(format!("{url}/v1/kbs/guide"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|kb| kb["stats"]["ready"].as_u64().unwrap_or(0) >= files);
        if ready {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the guide was not ingested"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn chat(quick: bool) -> Value {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_server, url) = serve(&tmp.path().join("data"), "", true);
    let http = client();
    wait_seeded(&http, &url);
    let ask = |agent: &str, message: &str, conversation: Option<&str>, mode: &str| -> Value {
        let res = http
            .post(format!("{url}/v1/agents/{agent}/chat"))
            .json(
                &json!({"message": message, "conversation_id": conversation, "answer_mode": mode}),
            )
            .send()
            .expect("chat");
        assert!(res.status().is_success(), "{:?}", res.text());
        res.json().expect("answer")
    };
    // A question asked nowhere else: answers are greedy and cached by the gateway, so a
    // repeated question would be a cache hit, not a model turn.
    let cold = ask("bench-cold", "What is Groundwork?", None, "generative");
    let pairs: &[(&str, &str)] = &[
        ("How do I upload a PDF?", "How large may it be?"),
        ("How do I create an API key?", "Which scopes can it have?"),
        (
            "What does hybrid search combine?",
            "Can I use only one of them?",
        ),
        (
            "How do I run a reindex?",
            "Does search keep working meanwhile?",
        ),
        (
            "Where does Groundwork keep its data?",
            "How do I back it up?",
        ),
    ];
    let pairs = if quick { &pairs[..2] } else { pairs };
    // Each conversation once per answer mode, on its own agent.
    let run = |mode: &str| -> (Vec<Value>, Vec<Value>) {
        let mut first = Vec::new();
        let mut follow = Vec::new();
        for (i, (q1, q2)) in pairs.iter().enumerate() {
            let agent = format!("bench-{mode}-{i}");
            let a = ask(&agent, q1, None, mode);
            let conv = a["conversation_id"]
                .as_str()
                .expect("conversation")
                .to_owned();
            first.push(a);
            follow.push(ask(&agent, q2, Some(&conv), mode));
        }
        (first, follow)
    };
    let (first, follow) = run("generative");
    let (ext_first, ext_follow) = run("extractive");
    let breakdown = |answers: &[Value]| -> Value {
        let field = |f: &str| -> Vec<f64> {
            answers
                .iter()
                .filter_map(|a| a["timings"][f].as_f64())
                .collect()
        };
        json!({
            "turns": answers.len(),
            "found": answers.iter().filter(|a| a["found"] == true).count(),
            "with_citations": answers.iter().filter(|a| !a["citations"].as_array().is_none_or(Vec::is_empty)).count(),
            "rewrite_ms": summary(field("rewrite_ms")),
            "retrieval_ms": summary(field("retrieval_ms")),
            "grounding_ms": summary(field("grounding_ms")),
            "first_token_ms": summary(field("first_token_ms")),
            "model_ttft_ms": summary(field("model_ttft_ms")),
            "tokens_per_s": summary(field("tokens_per_s")),
            "total_ms": summary(field("total_ms")),
            "prompt_tokens": summary(answers.iter().filter_map(|a| a["usage"]["prompt_tokens"].as_f64()).collect()),
            "completion_tokens": summary(answers.iter().filter_map(|a| a["usage"]["completion_tokens"].as_f64()).collect()),
        })
    };
    json!({
        "model": "local SmolLM2-135M-Instruct (Q4_1 GGUF requantized to Q8_0) on fast and main",
        "kb": "data/guide (the seeded user guide)",
        "first_turn_with_model_load": cold["timings"],
        "first_questions": breakdown(&first),
        "follow_ups": breakdown(&follow),
        "extractive": {
            "note": "answer_mode extractive (the default on a local main route): no model call but the follow-up rewrite",
            "first_questions": breakdown(&ext_first),
            "follow_ups": breakdown(&ext_follow),
            "sample": {
                "question": pairs[0].0,
                "answer": ext_first[0]["message"]["content"],
                "citations": ext_first[0]["citations"],
            },
        },
        "sample": {
            "question": pairs[0].1,
            "rewritten": follow[0]["query"],
            "answer": follow[0]["message"]["content"],
            "citations": follow[0]["citations"],
        },
    })
}

fn activation(quick: bool) -> Value {
    let n = if quick { 100 } else { 500 };
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let http = client();
    {
        let (_server, url) = serve(&data, "", false);
        for i in 0..n {
            let res = http
                .put(format!("{url}/v1/agents/cold-{i}/state"))
                .json(&json!({"notes": format!("agent {i}"), "counter": i}))
                .send()
                .expect("put");
            assert!(res.status().is_success());
        }
    }
    let (_server, url) = serve(&data, "", false);
    let time = |path: &str| {
        let t0 = Instant::now();
        let res = http.get(format!("{url}{path}")).send().expect("get");
        assert!(res.status().is_success());
        let _ = res.bytes();
        t0.elapsed().as_secs_f64() * 1e3
    };
    // Warm the connection and the server's code paths with another agent.
    time("/v1/agents/warmup");
    let cold: Vec<f64> = (0..n)
        .map(|i| time(&format!("/v1/agents/cold-{i}")))
        .collect();
    let warm: Vec<f64> = (0..n)
        .map(|i| time(&format!("/v1/agents/cold-{i}")))
        .collect();
    json!({
        "agents": n,
        "cold_ms": summary(cold),
        "warm_ms": summary(warm),
        "note": "cold = first GET after a restart (actor spawned, agent row loaded from SQLite, task queue read); warm = the same GET answered by the live actor",
    })
}

fn throughput(quick: bool) -> Value {
    let agents = 1000;
    let clients = 64;
    let secs = if quick { 5.0 } else { 15.0 };
    let tmp = tempfile::tempdir().expect("tmp");
    let (_server, url) = serve(&tmp.path().join("data"), "", false);
    let run = |write: bool| -> Value {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (next, url) = (next.clone(), url.clone());
                std::thread::spawn(move || {
                    let http = client();
                    let mut lat = Vec::new();
                    let mut errors = 0usize;
                    while started.elapsed().as_secs_f64() < secs {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let agent = format!("{url}/v1/agents/a-{}/state", k % agents);
                        let t0 = Instant::now();
                        let res = if write {
                            http.patch(&agent).json(&json!({ "last": k })).send()
                        } else {
                            http.get(&agent).send()
                        };
                        match res {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes();
                                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                            }
                            _ => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in threads {
            let (l, e) = t.join().expect("client");
            all.extend(l);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        json!({
            "messages": all.len(),
            "errors": errors,
            "seconds": elapsed,
            "messages_per_s": all.len() as f64 / elapsed,
            "latency_ms": summary(all),
        })
    };
    let writes = run(true);
    let reads = run(false);
    json!({
        "agents": agents,
        "clients": clients,
        "writes": writes,
        "reads": reads,
        "note": "writes: PATCH /v1/agents/{id}/state (merge patch) over keep-alive HTTP/1.1, each answered after its SQLite commit (WAL, synchronous=FULL); reads: GET of the same state from the live actor",
    })
}

fn main() {
    groundwork::runtime::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = only(&args);
    let wants = |part: &str| only.as_deref().is_none_or(|o| o == part);
    save_results("agents", |results| {
        if wants("throughput") {
            results["throughput"] = throughput(quick);
        }
        if wants("activation") {
            results["activation"] = activation(quick);
        }
        if wants("chat") {
            results["chat"] = chat(quick);
        }
    });
}
