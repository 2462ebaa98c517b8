//! Gateway benchmarks, written to `bench-results/gateway.json`:
//!
//! - overhead: the latency the gateway adds to a chat completion over calling the upstream
//!   directly, at 1, 100 and 1,000 requests/s (open loop: requests are sent on schedule
//!   whatever the answers do), p50/p99, and the same for LiteLLM's proxy in front of the same
//!   upstream in the same run. The upstream is a minimal OpenAI-style server in a child
//!   process; Groundwork runs as its release binary with its default guardrails and call log.
//! - local: the local SmolLM2-135M-Instruct (Q4_1 GGUF, requantized to Q8_0 at load) on a
//!   ~470-token grounded prompt — time to first token (prefill), decode tokens/s and a follow-up
//!   turn's first token, on the native pass, on candle's quantized llama (the engine before it)
//!   and on llama.cpp (llama-cpp-python, same GGUF, same threads), with ratios (over HTTP a
//!   stream's first chunk also waits for the guardrails' 48-character window).
//!
//! `benches/gateway.sh` installs LiteLLM (pinned) into `.venv-gateway` and runs this;
//! `cargo bench --bench gateway [-- --quick] [-- --only overhead|local]`.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use groundwork::gateway::local::{Generate, LocalChat, LocalEngine};
use groundwork::gateway::types::{Delta, Message, Role};
use groundwork::gateway::GatewayConfig;
use serde_json::{json, Value};

mod support;
use support::{only, percentile, root, save_results, spawn_until, Proc};

const ANSWER: &str = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.";

/// The upstream: answers every chat completion at once with a fixed body.
fn run_upstream() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let body = json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": 14, "completion_tokens": 17, "total_tokens": 31},
        })
        .to_string();
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let body = body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("listening on {}", listener.local_addr().expect("addr"));
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("serve");
    });
}

struct Target {
    name: &'static str,
    url: String,
    model: &'static str,
}

struct Run {
    latencies: Vec<f64>,
    errors: usize,
    seconds: f64,
}

/// Sends `rate` requests/s for `secs` on schedule; latency of each from its send.
async fn open_loop(http: &reqwest::Client, t: &Target, rate: u32, secs: f64) -> Run {
    let n = (rate as f64 * secs).round().max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let body = json!({"model": t.model, "max_tokens": 64, "temperature": 0.7,
                      "messages": [{"role": "user", "content": "Summarise the Eiffel Tower's history in one sentence."}]})
    .to_string();
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until(started + interval * i as u32).await;
        let (http, url, body) = (http.clone(), t.url.clone(), body.clone());
        tasks.spawn(async move {
            let t0 = Instant::now();
            let res = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let ok = match res {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            (t0.elapsed().as_secs_f64() * 1e3, ok)
        });
    }
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((ms, true)) => latencies.push(ms),
            _ => errors += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    Run {
        latencies,
        errors,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn wait_http_ok(url: &str, secs: u64) -> bool {
    let client = reqwest::blocking::Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        if client
            .get(url)
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

fn overhead(quick: bool, with_litellm: bool) -> Value {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut up = Command::new(std::env::current_exe().expect("exe"));
    up.env("GW_BENCH_UPSTREAM", "1");
    let (_upstream, up_addr) =
        spawn_until(up, "listening on ", &tmp.path().join("upstream.log"), 120);
    let upstream = format!("http://{up_addr}/v1");

    let config = tmp.path().join("groundwork.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway.providers.up]\nkind = \"openai_compatible\"\nbase_url = \"{upstream}\"\n\n\
             [gateway.routes.bench]\ntargets = [\"up/bench-model\"]\n"
        ),
    )
    .expect("config");
    let mut gw = Command::new(env!("CARGO_BIN_EXE_groundwork"));
    gw.current_dir(root())
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("GROUNDWORK_CONFIG", &config)
        .env(
            "RUST_LOG",
            std::env::var("GW_BENCH_RUST_LOG").unwrap_or_else(|_| "warn,groundwork=info".into()),
        );
    let (_groundwork, gw_url) =
        spawn_until(gw, "listening on ", &tmp.path().join("groundwork.log"), 120);

    let mut targets = vec![
        Target {
            name: "direct",
            url: format!("{upstream}/chat/completions"),
            model: "bench-model",
        },
        Target {
            name: "groundwork",
            url: format!("{gw_url}/v1/chat/completions"),
            model: "bench",
        },
    ];
    let litellm_bin = root().join(".venv-gateway/bin/litellm");
    let mut _litellm = None;
    let mut litellm_version = None;
    if with_litellm && litellm_bin.exists() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let yaml = tmp.path().join("litellm.yaml");
        std::fs::write(
            &yaml,
            format!(
                "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench-model\n      \
                 api_base: {upstream}\n      api_key: sk-bench\n"
            ),
        )
        .expect("yaml");
        let log = std::fs::File::create(tmp.path().join("litellm.log")).expect("log");
        let child = Command::new(&litellm_bin)
            .process_group(0)
            .args(["--config"])
            .arg(&yaml)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            // One worker process per core: LiteLLM's advice for production, its best case here.
            .args(["--num_workers", "2"])
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            // No auth, as Groundwork in demo mode: both proxies compared without key checks.
            .env(
                "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY",
                "true",
            )
            .env("LITELLM_TELEMETRY", "False")
            .env("LITELLM_LOG", "ERROR")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("litellm");
        _litellm = Some(Proc(child));
        let base = format!("http://127.0.0.1:{port}");
        if wait_http_ok(&format!("{base}/health/liveliness"), 180) {
            targets.push(Target {
                name: "litellm",
                url: format!("{base}/v1/chat/completions"),
                model: "bench",
            });
            litellm_version = Command::new(root().join(".venv-gateway/bin/python"))
                .args([
                    "-c",
                    "import importlib.metadata as m; print(m.version('litellm'))",
                ])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        } else {
            eprintln!("LiteLLM did not start; see its log");
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let rates: [(u32, f64); 3] = if quick {
        [(1, 5.0), (100, 5.0), (1000, 5.0)]
    } else {
        [(1, 30.0), (100, 20.0), (1000, 20.0)]
    };
    let mut out = serde_json::Map::new();
    rt.block_on(async {
        for t in &targets {
            let _ = open_loop(&http, t, 200, 2.0).await; // warm connections and caches
        }
        for (rate, secs) in rates {
            let mut row = serde_json::Map::new();
            let mut direct = (f64::NAN, f64::NAN);
            for t in &targets {
                let r = open_loop(&http, t, rate, secs).await;
                let (p50, p99) = (percentile(&r.latencies, 0.5), percentile(&r.latencies, 0.99));
                if t.name == "direct" {
                    direct = (p50, p99);
                }
                let achieved = r.latencies.len() as f64 / r.seconds;
                eprintln!(
                    "{:>5} req/s {:<10} p50 {:>8.3} ms  p99 {:>8.3} ms  overhead p50 {:>8.3} p99 {:>8.3}  ok {} err {} ({achieved:.0}/s)",
                    rate, t.name, p50, p99, p50 - direct.0, p99 - direct.1, r.latencies.len(), r.errors
                );
                row.insert(
                    t.name.into(),
                    json!({"p50_ms": p50, "p99_ms": p99, "max_ms": r.latencies.last(),
                           "overhead_p50_ms": p50 - direct.0, "overhead_p99_ms": p99 - direct.1,
                           "ok": r.latencies.len(), "errors": r.errors, "achieved_rps": achieved}),
                );
            }
            if let (Some(g), Some(l)) = (row.get("groundwork"), row.get("litellm")) {
                let ratio = |k: &str| l[k].as_f64().unwrap_or(f64::NAN) / g[k].as_f64().unwrap_or(f64::NAN);
                row.insert(
                    "litellm_over_groundwork".into(),
                    json!({"overhead_p50": ratio("overhead_p50_ms"), "overhead_p99": ratio("overhead_p99_ms")}),
                );
            }
            out.insert(format!("{rate}_rps"), Value::Object(row));
        }
    });
    json!({"rates": out, "litellm_version": litellm_version, "duration_s": rates.map(|r| r.1)})
}

/// One engine's figures on a grounded prompt: first-token latency (prefill), decode rate, and
/// the first token of a follow-up turn that shares the prompt's system part and sources.
fn local_engine(engine: LocalEngine, runs: usize) -> Value {
    let dir = root().join("models/SmolLM2-135M-Instruct");
    let chat = LocalChat::start(
        &dir,
        4,
        4096,
        GatewayConfig::default().local_repeat_penalty,
        engine,
        &groundwork::supervisor::Supervisor::new(),
    );
    let ask = |messages: Vec<Message>| {
        let started = Instant::now();
        let mut rx = chat
            .generate(Generate {
                messages,
                temperature: Some(0.0),
                top_p: None,
                max_tokens: 64,
                stop: Vec::new(),
                seed: Some(1),
            })
            .expect("queued");
        let mut first = None;
        let mut usage = None;
        while let Some(ev) = rx.blocking_recv() {
            match ev.expect("generation") {
                Delta::Text(_) => {
                    first.get_or_insert_with(|| started.elapsed());
                }
                Delta::Finish { usage: u, .. } => usage = u,
            }
        }
        let u = usage.expect("usage");
        (first.expect("a token"), started.elapsed(), u)
    };
    let mut ttft = Vec::new();
    let mut decode = Vec::new();
    let mut follow_ttft = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for i in 0..=runs {
        // A different first line each run, so no run reuses another's cache.
        let (first, total, u) = ask(grounded_prompt(i, None));
        if i == 0 {
            continue; // warm-up: the model loads on the first request
        }
        prompt_tokens = u.prompt_tokens;
        completion_tokens = u.completion_tokens;
        ttft.push(first.as_secs_f64() * 1e3);
        decode.push(u.completion_tokens.saturating_sub(1) as f64 / (total - first).as_secs_f64());
        let (first, _, _) = ask(grounded_prompt(i, Some("Which sources mention a date?")));
        follow_ttft.push(first.as_secs_f64() * 1e3);
    }
    chat.shutdown();
    for v in [&mut ttft, &mut decode, &mut follow_ttft] {
        v.sort_by(f64::total_cmp);
    }
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "first_token_ms_median": percentile(&ttft, 0.5),
        "prefill_tokens_per_s": prompt_tokens as f64 / (percentile(&ttft, 0.5) / 1e3),
        "decode_tokens_per_s_median": percentile(&decode, 0.5),
        "follow_up_first_token_ms_median": percentile(&follow_ttft, 0.5),
    })
}

/// A grounded prompt as agents send it (~470 tokens): a rule, numbered sources, a question;
/// `run` makes its first line unique.
fn grounded_prompt(run: usize, question: Option<&str>) -> Vec<Message> {
    let sources = [
        "The Eiffel Tower in Paris was completed in March 1889 as the entrance arch to the 1889 \
         World's Fair. It was the tallest structure in the world until the Chrysler Building in \
         New York was finished in 1930, and it remains the most visited paid monument.",
        "Gustave Eiffel's company designed and built the tower; the engineers Maurice Koechlin \
         and Émile Nouguier drew the first plans in 1884, and the architect Stephen Sauvestre \
         redesigned the base with its monumental arches.",
        "The tower is 330 metres tall including its antennas. Its wrought-iron lattice weighs \
         about 7,300 tonnes, and it is repainted every seven years with 60 tonnes of paint to \
         protect it from rust.",
        "Many artists protested against the tower while it was being built, calling it useless \
         and monstrous; the city granted a permit for twenty years, after which it was to be \
         dismantled, but its value for radio transmission saved it.",
        "Visitors reach the first and second levels by stairs or lifts; the top level is served \
         by lifts only. About seven million people visit each year, most of them from abroad.",
        "In 1909 the tower became a radiotelegraph station, and during the First World War its \
         transmitter intercepted enemy communications, which contributed to the arrest of Mata \
         Hari in 1917.",
        "Lifts were installed from the start by Otis and Roux-Combaluzier-Lepape; the original \
         hydraulic machinery of the east and west pillars still runs today, restored in the \
         1980s, and the tower sways by up to seven centimetres in strong wind.",
    ];
    let context: Vec<String> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| format!("[{}] {s}", i + 1))
        .collect();
    let question = question.unwrap_or("When was the Eiffel Tower completed, and who designed it?");
    vec![
        Message {
            role: Role::System,
            content: format!(
                "Request {run}. You answer questions using only the numbered sources below. \
                 Cite every claim with its source number in brackets, like [2]. If the sources \
                 do not contain the answer, reply that the answer was not found in the \
                 documents. Be concise and do not add facts from memory."
            ),
            name: None,
        },
        Message {
            role: Role::User,
            content: format!("Sources:\n{}\n\nQuestion: {question}", context.join("\n")),
            name: None,
        },
    ]
}

/// llama.cpp (llama-cpp-python built from source in `.venv-llama` by `benches/gateway.sh`) on
/// the same GGUF and thread count, or why it did not run.
fn llama_cpp(runs: usize) -> Value {
    let python = root().join(".venv-llama/bin/python");
    if !python.exists() {
        return json!({"skipped": "no .venv-llama (benches/gateway.sh builds it)"});
    }
    let prompts: Vec<Value> = (1..=runs)
        .map(|i| serde_json::to_value(grounded_prompt(i, None)).expect("messages"))
        .collect();
    let out = Command::new(python)
        .arg(root().join("benches/py/llama_cpp_peer.py"))
        .arg(root().join("models/SmolLM2-135M-Instruct"))
        .arg(serde_json::to_string(&prompts).expect("json"))
        .output()
        .expect("python");
    if !out.status.success() {
        return json!({"skipped": String::from_utf8_lossy(&out.stderr).to_string()});
    }
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| json!({"skipped": e.to_string()}))
}

fn local(quick: bool) -> Value {
    let runs = if quick { 2 } else { 5 };
    let candle = local_engine(LocalEngine::Candle, runs);
    let native = local_engine(LocalEngine::Native, runs);
    let peer = llama_cpp(runs);
    let ratio = |a: &Value, ka: &str, b: &Value, kb: &str| {
        a[ka].as_f64().unwrap_or(f64::NAN) / b[kb].as_f64().unwrap_or(f64::NAN)
    };
    let v = json!({
        "model": "SmolLM2-135M-Instruct Q4_1 (requantized to Q8_0 at load)",
        "threads": rayon::current_num_threads(),
        "native": native,
        "candle": candle,
        "llama_cpp": peer,
        "native_over_candle": {
            "prefill": ratio(&native, "prefill_tokens_per_s", &candle, "prefill_tokens_per_s"),
            "decode": ratio(&native, "decode_tokens_per_s_median", &candle, "decode_tokens_per_s_median"),
        },
        "native_over_llama_cpp": {
            "prefill": ratio(&native, "prefill_tokens_per_s", &peer, "prefill_tokens_per_s"),
            "decode": ratio(&native, "decode_tokens_per_s_median", &peer, "decode_tokens_per_s"),
        },
    });
    eprintln!("local chat: {v}");
    v
}

fn main() {
    if std::env::var_os("GW_BENCH_UPSTREAM").is_some() {
        run_upstream();
        return;
    }
    // As the server binary does: candle allocates large short-lived buffers per op.
    groundwork::runtime::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = only(&args);
    save_results("gateway", |results| {
        if only.as_deref().is_none_or(|o| o == "overhead") {
            results["overhead"] = overhead(quick, !args.iter().any(|a| a == "--no-litellm"));
        }
        if only.as_deref().is_none_or(|o| o == "local") {
            results["local_chat"] = local(quick);
        }
    });
}
