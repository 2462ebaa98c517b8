//! Fake OpenAI and Anthropic upstreams: real HTTP servers on loopback speaking the real wire
//! formats (JSON answers, Server-Sent Events streams), scripted per model to fail, stall,
//! answer 429/500, cut a stream, send malformed JSON or answer normally — and the rerank APIs
//! (Cohere, Jina, Voyage, text-embeddings-inference), which score passages in reverse of the
//! order sent.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the upstream does with the next request for a model.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Answers `text` (whole or streamed word by word).
    Answer(String),
    /// Answers with this HTTP status and an error body.
    Status(u16),
    /// Waits this long before answering normally.
    Stall(Duration),
    /// Streams this many pieces of the answer, then breaks the connection.
    Cut(usize),
    /// Answers 200 with a body (or stream chunk) that is not valid JSON.
    Malformed,
}

#[derive(Default)]
struct Shared {
    scripts: HashMap<String, VecDeque<Behavior>>,
    answers: HashMap<String, String>,
    requests: HashMap<String, Vec<Value>>,
}

/// A running fake upstream serving both APIs.
pub struct FakeLlm {
    /// Base URL including `/v1`.
    pub base: String,
    shared: Arc<Mutex<Shared>>,
    _runtime: tokio::runtime::Runtime,
}

/// Default answer when none was scripted.
pub const DEFAULT_ANSWER: &str = "The Eiffel Tower was completed in 1889 for the World's Fair.";

impl FakeLlm {
    /// Starts on an ephemeral loopback port.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/embeddings", post(openai_embeddings))
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/rerank", post(rerank))
            .with_state(shared.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://{addr}/v1"),
            shared,
            _runtime: runtime,
        }
    }

    /// Queues behaviours for requests naming `model`.
    pub fn script(&self, model: &str, behaviors: &[Behavior]) {
        let mut s = self.shared.lock().expect("lock");
        s.scripts
            .entry(model.to_owned())
            .or_default()
            .extend(behaviors.iter().cloned());
    }

    /// Sets the normal answer for `model`.
    pub fn answer(&self, model: &str, text: &str) {
        let mut s = self.shared.lock().expect("lock");
        s.answers.insert(model.to_owned(), text.to_owned());
    }

    /// Request bodies received for `model`.
    pub fn requests(&self, model: &str) -> Vec<Value> {
        let s = self.shared.lock().expect("lock");
        s.requests.get(model).cloned().unwrap_or_default()
    }
}

struct Turn {
    behavior: Behavior,
    text: String,
}

async fn next_turn(shared: &Arc<Mutex<Shared>>, body: &Value) -> Turn {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let (behavior, text) = {
        let mut s = shared.lock().expect("lock");
        s.requests
            .entry(model.clone())
            .or_default()
            .push(body.clone());
        let b = s
            .scripts
            .get_mut(&model)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Behavior::Answer(String::new()));
        let t = s
            .answers
            .get(&model)
            .cloned()
            .unwrap_or_else(|| DEFAULT_ANSWER.to_owned());
        (b, t)
    };
    match behavior {
        Behavior::Stall(d) => {
            tokio::time::sleep(d).await;
            Turn {
                behavior: Behavior::Answer(String::new()),
                text,
            }
        }
        Behavior::Answer(t) if !t.is_empty() => Turn {
            behavior: Behavior::Answer(String::new()),
            text: t,
        },
        b => Turn { behavior: b, text },
    }
}

fn pieces(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

fn words(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

fn sse(events: Vec<String>, cut_after: Option<usize>) -> Response {
    let stream = async_stream::stream! {
        for (i, e) in events.into_iter().enumerate() {
            // The pause comes first so that everything before a cut has been flushed.
            tokio::time::sleep(Duration::from_millis(3)).await;
            if cut_after == Some(i) {
                yield Err(std::io::Error::other("cut"));
                return;
            }
            yield Ok::<Bytes, std::io::Error>(Bytes::from(e));
        }
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}

fn status_answer(code: u16, anthropic: bool) -> Response {
    let body = if anthropic {
        json!({"type": "error", "error": {"type": "api_error", "message": format!("scripted {code}")}})
    } else {
        json!({"error": {"message": format!("scripted {code}"), "type": "server_error"}})
    };
    (StatusCode::from_u16(code).expect("status"), Json(body)).into_response()
}

async fn openai_chat(
    State(shared): State<Arc<Mutex<Shared>>>,
    Json(body): Json<Value>,
) -> Response {
    let turn = next_turn(&shared, &body).await;
    let stream = body["stream"].as_bool().unwrap_or(false);
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    // A `greedy` model bills the most a real one could: a token per byte of every message,
    // 3 tokens of framing per message and 3 for the reply, and every allowed answer token.
    let greedy = model.contains("greedy");
    let prompt_tokens: u32 = if greedy {
        body["messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| m["content"].as_str().map_or(0, str::len) + 3)
                    .sum::<usize>()
                    + 3
            })
            .unwrap_or(0) as u32
    } else {
        10
    };
    let turn = if greedy {
        let max = body["max_tokens"]
            .as_u64()
            .or(body["max_completion_tokens"].as_u64())
            .unwrap_or(16) as usize;
        Turn {
            text: vec!["word"; max].join(" "),
            ..turn
        }
    } else {
        turn
    };
    match turn.behavior {
        Behavior::Status(code) => status_answer(code, false),
        Behavior::Malformed if !stream => (StatusCode::OK, "{\"choices\": [ {\"mess").into_response(),
        Behavior::Malformed => sse(vec!["data: {not json\n\n".into()], None),
        b if stream => {
            // The first event carries the role; a cut after `n` pieces keeps n + 1 events.
            let cut = match b {
                Behavior::Cut(n) => Some(n + 1),
                _ => None,
            };
            let mut events = vec![format!(
                "data: {}\n\n",
                json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
            )];
            for p in pieces(&turn.text) {
                events.push(format!(
                    "data: {}\n\n",
                    json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                           "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
                ));
            }
            events.push(format!(
                "data: {}\n\n",
                json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            ));
            events.push(format!(
                "data: {}\n\n",
                json!({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": words(&turn.text), "total_tokens": prompt_tokens + words(&turn.text)}})
            ));
            events.push("data: [DONE]\n\n".into());
            sse(events, cut)
        }
        _ => Json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": turn.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": words(&turn.text), "total_tokens": prompt_tokens + words(&turn.text)},
        }))
        .into_response(),
    }
}

async fn openai_embeddings(
    State(shared): State<Arc<Mutex<Shared>>>,
    Json(body): Json<Value>,
) -> Response {
    let turn = next_turn(&shared, &body).await;
    if let Behavior::Status(code) = turn.behavior {
        return status_answer(code, false);
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": [t.len() as f32, 1.0, 0.5]}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 7, "total_tokens": 7}}))
        .into_response()
}

/// The rerank APIs, told apart by the request's shape: `texts` (TEI, recorded as model
/// `tei`), `top_k` (Voyage), a `jina-` model (Jina), else Cohere. The scripted relevance of
/// passage `i` of `n` is `(i + 1) / n`: the last one sent comes first.
async fn rerank(State(shared): State<Arc<Mutex<Shared>>>, Json(mut body): Json<Value>) -> Response {
    let tei = body.get("texts").is_some();
    if tei {
        body["model"] = json!("tei");
    }
    let turn = next_turn(&shared, &body).await;
    match turn.behavior {
        Behavior::Status(code) => return status_answer(code, false),
        Behavior::Malformed => return (StatusCode::OK, "{not json").into_response(),
        _ => {}
    }
    let docs = body["documents"]
        .as_array()
        .or_else(|| body["texts"].as_array())
        .cloned()
        .unwrap_or_default();
    let n = docs.len().max(1) as f64;
    let tokens: u32 = docs
        .iter()
        .filter_map(Value::as_str)
        .map(|d| words(d) + words(body["query"].as_str().unwrap_or_default()))
        .sum();
    let mut scored: Vec<(usize, f64)> = (0..docs.len()).map(|i| (i, (i + 1) as f64 / n)).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    let field = if tei { "score" } else { "relevance_score" };
    let results: Vec<Value> = scored
        .iter()
        .map(|(i, s)| json!({"index": i, field: s}))
        .collect();
    let model = body["model"].clone();
    let answer = if tei {
        json!(results)
    } else if body.get("top_k").is_some() {
        json!({"object": "list", "data": results, "model": model, "usage": {"total_tokens": tokens}})
    } else if model.as_str().is_some_and(|m| m.starts_with("jina")) {
        json!({"model": model, "results": results, "usage": {"total_tokens": tokens}})
    } else {
        json!({"id": "rr-1", "results": results, "meta": {"billed_units": {"search_units": 1}}})
    };
    Json(answer).into_response()
}

async fn anthropic_messages(
    State(shared): State<Arc<Mutex<Shared>>>,
    Json(body): Json<Value>,
) -> Response {
    let turn = next_turn(&shared, &body).await;
    let stream = body["stream"].as_bool().unwrap_or(false);
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    match turn.behavior {
        Behavior::Status(code) => status_answer(code, true),
        Behavior::Malformed if !stream => (StatusCode::OK, "{\"content\": [").into_response(),
        Behavior::Malformed => sse(vec!["event: message_start\ndata: {oops\n\n".into()], None),
        b if stream => {
            let cut = match b {
                Behavior::Cut(n) => Some(n + 2),
                _ => None,
            };
            let mut events = vec![
                format!(
                    "event: message_start\ndata: {}\n\n",
                    json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}}})
                ),
                format!(
                    "event: content_block_start\ndata: {}\n\n",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                ),
            ];
            for p in pieces(&turn.text) {
                events.push(format!("event: content_block_delta\ndata: {}\n\n", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})));
            }
            events.push("event: ping\ndata: {\"type\": \"ping\"}\n\n".into());
            events.push(format!(
                "event: content_block_stop\ndata: {}\n\n",
                json!({"type": "content_block_stop", "index": 0})
            ));
            events.push(format!("event: message_delta\ndata: {}\n\n", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": words(&turn.text)}})));
            events.push(format!(
                "event: message_stop\ndata: {}\n\n",
                json!({"type": "message_stop"})
            ));
            sse(events, cut)
        }
        _ => Json(json!({
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": turn.text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": words(&turn.text)},
        }))
        .into_response(),
    }
}
