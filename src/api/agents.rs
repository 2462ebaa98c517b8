//! Agent routes: state and config with compare-and-set (`If-Match` / `ETag` carry the
//! version), chat (JSON or Server-Sent Events, resumable with `Last-Event-ID`),
//! conversations, tasks, schedules, and a WebSocket for chat and live state sync.

use std::convert::Infallible;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::body::ApiJson;
use super::dto::{
    self, AgentSummary, ChatAnswer, Conversation, MessageRecord, ScheduleRecord, TaskRecord,
};
use super::params::{ApiPath, ApiQuery};
use super::{ApiError, AppState, Caller};
use crate::agent::answer::{ChatInput, ChatStart};
use crate::agent::stream::{Event, Reader, TERMINAL};
use crate::agent::{
    AgentConfig, AgentError, AgentEvent, AgentView, Agents, ScheduleRequest, TaskRequest, Write,
};
use crate::error::Classify;
use crate::service::Principal;

/// Paging of a listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Skip this many (default 0).
    #[serde(default)]
    pub offset: u64,
    /// At most this many (default 100).
    pub limit: Option<u64>,
}

/// A page of agents.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    /// By id.
    pub items: Vec<AgentSummary>,
    /// Agents in all.
    pub total: u64,
}

/// Messages of a conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    /// The conversation (title, running summary).
    pub conversation: Conversation,
    /// Oldest first.
    pub items: Vec<MessageRecord>,
}

/// Conversations of an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationList {
    /// Most recent first.
    pub items: Vec<Conversation>,
}

/// Tasks of an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    /// Newest first.
    pub items: Vec<TaskRecord>,
}

/// Schedules of an agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// Oldest first.
    pub items: Vec<ScheduleRecord>,
}

/// Which conversations to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationQuery {
    /// Only conversations whose title or a message contains this text (case-insensitive
    /// for ASCII letters; at most 200 characters).
    pub q: Option<String>,
}

/// `PATCH /v1/agents/{id}/conversations/{conversation_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationPatch {
    /// The new title (trimmed; 1 to 200 characters).
    #[schema(pattern = r"\S", max_length = 200)]
    pub title: String,
}

/// What stopping a stream did.
#[derive(Debug, Serialize, ToSchema)]
pub struct StopAnswer {
    /// True when the answer was being generated and stops now; false when it had finished.
    pub stopped: bool,
}

/// Which messages to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageQuery {
    /// Only messages with a greater id (default 0).
    #[serde(default)]
    pub after: i64,
    /// At most this many (default 200).
    pub limit: Option<u64>,
}

/// Where to resume a stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResumeQuery {
    /// Events after this id (the `Last-Event-ID` header wins when both are given).
    pub after: Option<u64>,
}

/// The version named by `If-Match` (`"7"`, `W/"7"` or `7`); `*` or none: any.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let raw = v.to_str().unwrap_or_default().trim();
    if raw == "*" {
        return Ok(None);
    }
    raw.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "If-Match must be the agent's version as an entity tag, e.g. \"7\"",
            )
        })
}

/// `body` as JSON with the agent's `version` as its entity tag.
fn with_etag(body: impl Serialize, version: u64) -> Response {
    let etag = format!("\"{version}\"");
    let mut res = Json(body).into_response();
    if let Ok(h) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, h);
    }
    res
}

fn view(v: AgentView) -> Response {
    let version = v.version;
    with_etag(v, version)
}

fn is_json_patch(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json-patch+json"))
}

/// Every agent of the caller's tenant.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(Paging),
    responses((status = 200, body = AgentList)))]
pub async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiQuery(q): ApiQuery<Paging>,
) -> Result<Json<AgentList>, ApiError> {
    let page = s.agents.list(&p, q.offset, q.limit.unwrap_or(100)).await?;
    Ok(Json(AgentList {
        items: dto::all(page.items),
        total: page.total,
    }))
}

/// The agent (created on first use) with its config, state and version (also the `ETag`).
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "agent id: 1-128 letters, digits, - _ . : @")),
    responses((status = 200, body = AgentView), (status = 422, body = super::Problem)))]
pub async fn get(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(view(s.agents.get(&p, &id).await?))
}

/// Deletes the agent with its conversations, tasks, schedules and buffered events. Its id stays
/// addressable: a later request meets a fresh, empty agent.
#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path)), responses((status = 204), (status = 404, body = super::Problem)))]
pub async fn delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    s.agents.delete(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent's state (any JSON); `ETag` is its version.
#[utoipa::path(get, path = "/v1/agents/{id}/state", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = Object)))]
pub async fn get_state(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let v = s.agents.get(&p, &id).await?;
    Ok(with_etag(v.state, v.version))
}

/// Replaces the state; with `If-Match: "<version>"` only if the agent is at that version
/// (else 412 with `current_version`).
#[utoipa::path(put, path = "/v1/agents/{id}/state", tag = "agents", params(("id" = String, Path)),
    request_body = Object,
    responses((status = 200, body = AgentView), (status = 412, body = super::Problem)))]
pub async fn put_state(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    Ok(view(
        s.agents
            .write(&p, &id, Write::SetState(body), expect)
            .await?,
    ))
}

/// Changes the state: a JSON Merge Patch (RFC 7396; `application/json` or
/// `application/merge-patch+json`) or a JSON Patch (RFC 6902; `application/json-patch+json`).
/// Patches are applied one at a time by the agent, so concurrent patches never lose updates.
#[utoipa::path(patch, path = "/v1/agents/{id}/state", tag = "agents", params(("id" = String, Path)),
    request_body = Object,
    responses((status = 200, body = AgentView), (status = 412, body = super::Problem),
              (status = 422, body = super::Problem)))]
pub async fn patch_state(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    let write = if is_json_patch(&headers) {
        Write::PatchState(serde_json::from_value(body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("not a JSON Patch: {e}"),
            )
        })?)
    } else {
        Write::MergeState(body)
    };
    Ok(view(s.agents.write(&p, &id, write, expect).await?))
}

/// The agent's config.
#[utoipa::path(get, path = "/v1/agents/{id}/config", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = AgentConfig)))]
pub async fn get_config(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AgentConfig>, ApiError> {
    Ok(Json(s.agents.get(&p, &id).await?.config))
}

/// Replaces the config (admin scope): knowledge bases, system prompt, routes, retrieval,
/// budget. Honours `If-Match`.
#[utoipa::path(put, path = "/v1/agents/{id}/config", tag = "agents", params(("id" = String, Path)),
    request_body = AgentConfig,
    responses((status = 200, body = AgentView), (status = 422, body = super::Problem)))]
pub async fn put_config(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AgentConfig>,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    Ok(view(
        s.agents
            .write(&p, &id, Write::SetConfig(Box::new(body)), expect)
            .await?,
    ))
}

/// Changes some config fields (JSON Merge Patch; admin scope).
#[utoipa::path(patch, path = "/v1/agents/{id}/config", tag = "agents", params(("id" = String, Path)),
    request_body = Object,
    responses((status = 200, body = AgentView), (status = 422, body = super::Problem)))]
pub async fn patch_config(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let expect = if_match(&headers)?;
    if !body.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "a config merge patch is a JSON object",
        ));
    }
    Ok(view(
        s.agents
            .write(&p, &id, Write::MergeConfig(body), expect)
            .await?,
    ))
}

fn sse_event(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.name.clone())
        .data(e.data.clone())
}

fn sse_stream(reader: Reader) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        match reader {
            Reader::Stored(events) => {
                for e in events {
                    yield Ok(sse_event(&e));
                }
            }
            Reader::Live { cursor, live } => {
                let mut cursor = cursor;
                loop {
                    let events = live.next_after(cursor).await;
                    if events.is_empty() {
                        break;
                    }
                    for e in events {
                        cursor = e.seq;
                        let end = TERMINAL.contains(&e.name.as_str());
                        yield Ok(sse_event(&e));
                        if end {
                            return;
                        }
                    }
                }
            }
        }
    }
}

fn sse_response(agent: &str, stream_id: &str, reader: Reader) -> Response {
    let mut res = Sse::new(sse_stream(reader))
        .keep_alive(KeepAlive::default())
        .into_response();
    let location = format!("/v1/agents/{agent}/streams/{stream_id}");
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(stream_id) {
        res.headers_mut().insert("x-groundwork-stream-id", v);
    }
    res
}

/// Asks the agent. The follow-up is rewritten from the history, the agent's knowledge bases
/// are searched, and the answer comes with checked citations. With `stream: true` the answer
/// is Server-Sent Events — `meta`, `status`, `sources`, `delta`…, `citations`, then `done`
/// (the whole answer) or `error` — each with an `id`; a client that lost the stream resumes
/// at `Content-Location` with `Last-Event-ID`.
#[utoipa::path(post, path = "/v1/agents/{id}/chat", tag = "agents", params(("id" = String, Path)),
    request_body = ChatInput,
    responses((status = 200, body = ChatAnswer, description = "JSON, or text/event-stream with `stream: true`"),
              (status = 404, body = super::Problem), (status = 429, body = super::Problem)))]
pub async fn chat(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ChatInput>,
) -> Result<Response, ApiError> {
    match s.agents.chat(&p, &id, body).await? {
        ChatStart::Complete(answer) => Ok(Json(ChatAnswer::from(*answer)).into_response()),
        ChatStart::Stream { stream_id, reader } => Ok(sse_response(&id, &stream_id, reader)),
    }
}

/// The events of a streamed answer after `Last-Event-ID` (or `?after=`): replayed, then live
/// while the answer is still being generated. Kept for `agents.event_retention_secs`.
#[utoipa::path(get, path = "/v1/agents/{id}/streams/{stream_id}", tag = "agents",
    params(("id" = String, Path), ("stream_id" = String, Path), ResumeQuery),
    responses((status = 200, description = "text/event-stream"), (status = 404, body = super::Problem)))]
pub async fn resume(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((id, stream_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ResumeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    "Last-Event-ID must be an event id of this stream",
                )
            })?,
        None => q.after.unwrap_or(0),
    };
    let reader = s.agents.resume(&p, &id, &stream_id, after).await?;
    Ok(sse_response(&id, &stream_id, reader))
}

/// The agent's conversations (at most 200, most recent first); `q` keeps those whose title
/// or a message contains it.
#[utoipa::path(get, path = "/v1/agents/{id}/conversations", tag = "agents",
    params(("id" = String, Path), ConversationQuery),
    responses((status = 200, body = ConversationList), (status = 422, body = super::Problem)))]
pub async fn conversations(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ConversationQuery>,
) -> Result<Json<ConversationList>, ApiError> {
    Ok(Json(ConversationList {
        items: dto::all(s.agents.conversations(&p, &id, q.q).await?),
    }))
}

/// Renames a conversation.
#[utoipa::path(patch, path = "/v1/agents/{id}/conversations/{conversation_id}", tag = "agents",
    params(("id" = String, Path), ("conversation_id" = String, Path)),
    request_body = ConversationPatch,
    responses((status = 200, body = Conversation), (status = 404, body = super::Problem),
        (status = 422, body = super::Problem)))]
pub async fn rename_conversation(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((id, conversation)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ConversationPatch>,
) -> Result<Json<Conversation>, ApiError> {
    Ok(Json(
        s.agents
            .rename_conversation(&p, &id, &conversation, &body.title)
            .await?
            .into(),
    ))
}

/// Deletes a conversation and its messages (after a turn under way in the agent finishes).
#[utoipa::path(delete, path = "/v1/agents/{id}/conversations/{conversation_id}", tag = "agents",
    params(("id" = String, Path), ("conversation_id" = String, Path)),
    responses((status = 204), (status = 404, body = super::Problem)))]
pub async fn delete_conversation(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((id, conversation)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.agents.delete_conversation(&p, &id, &conversation).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops a streamed answer being generated: the text so far is checked and stored, marked
/// `stopped`, and the stream ends with `done`. `stopped: false` when it had already finished.
#[utoipa::path(post, path = "/v1/agents/{id}/streams/{stream_id}/stop", tag = "agents",
    params(("id" = String, Path), ("stream_id" = String, Path)),
    responses((status = 200, body = StopAnswer), (status = 404, body = super::Problem)))]
pub async fn stop_stream(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((id, stream_id)): ApiPath<(String, String)>,
) -> Result<Json<StopAnswer>, ApiError> {
    Ok(Json(StopAnswer {
        stopped: s.agents.stop_stream(&p, &id, &stream_id).await?,
    }))
}

/// Messages of a conversation (questions and answers with citations, tokens, cost).
#[utoipa::path(get, path = "/v1/agents/{id}/conversations/{conversation_id}/messages", tag = "agents",
    params(("id" = String, Path), ("conversation_id" = String, Path), MessageQuery),
    responses((status = 200, body = MessageList), (status = 404, body = super::Problem)))]
pub async fn messages(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((id, conversation)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<MessageQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let (conversation, items) = s
        .agents
        .messages(&p, &id, &conversation, q.after, q.limit.unwrap_or(200))
        .await?;
    Ok(Json(MessageList {
        conversation: conversation.into(),
        items: dto::all(items),
    }))
}

/// Queues a task: `state.patch` {patch}, `chat` {message, conversation_id?}, `http` {url,
/// method?, body?} or `summarize` {conversation_id}. Tasks run in order, one at a time,
/// retried with exponential backoff.
#[utoipa::path(post, path = "/v1/agents/{id}/tasks", tag = "agents", params(("id" = String, Path)),
    request_body = TaskRequest,
    responses((status = 202, body = TaskRecord), (status = 422, body = super::Problem)))]
pub async fn enqueue(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TaskRequest>,
) -> Result<(StatusCode, Json<TaskRecord>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(s.agents.enqueue(&p, &id, body).await?.into()),
    ))
}

/// The agent's tasks, newest first.
#[utoipa::path(get, path = "/v1/agents/{id}/tasks", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = TaskList)))]
pub async fn tasks(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskList>, ApiError> {
    Ok(Json(TaskList {
        items: dto::all(s.agents.tasks(&p, &id, 200).await?),
    }))
}

/// One task: status, attempts, last error, result.
#[utoipa::path(get, path = "/v1/agents/{id}/tasks/{task_id}", tag = "agents",
    params(("id" = String, Path), ("task_id" = i64, Path)),
    responses((status = 200, body = TaskRecord), (status = 404, body = super::Problem)))]
pub async fn task(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((id, task)): ApiPath<(String, i64)>,
) -> Result<Json<TaskRecord>, ApiError> {
    Ok(Json(s.agents.task(&p, &id, task).await?.into()))
}

/// Schedules a task: once `at` a time, once `after_secs`, or on a `cron` expression. Stored,
/// so it fires after a restart; at least once.
#[utoipa::path(post, path = "/v1/agents/{id}/schedules", tag = "agents", params(("id" = String, Path)),
    request_body = ScheduleRequest,
    responses((status = 201, body = ScheduleRecord), (status = 422, body = super::Problem)))]
pub async fn schedule(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ScheduleRequest>,
) -> Result<(StatusCode, Json<ScheduleRecord>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.agents.schedule(&p, &id, body).await?.into()),
    ))
}

/// The agent's schedules.
#[utoipa::path(get, path = "/v1/agents/{id}/schedules", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleList)))]
pub async fn schedules(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ScheduleList>, ApiError> {
    Ok(Json(ScheduleList {
        items: dto::all(s.agents.schedules(&p, &id).await?),
    }))
}

/// Deletes a schedule.
#[utoipa::path(delete, path = "/v1/agents/{id}/schedules/{schedule_id}", tag = "agents",
    params(("id" = String, Path), ("schedule_id" = String, Path)),
    responses((status = 204), (status = 404, body = super::Problem)))]
pub async fn delete_schedule(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((id, schedule)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.agents.delete_schedule(&p, &id, &schedule).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// WebSocket: on connect `{"type":"hello","agent":…}`; then every change as it happens —
/// `state`, `config`, `message`, `delta` (answers being streamed), `task`. Clients send
/// `{"type":"chat","message":…,"conversation_id"?}`, `{"type":"state.set","state":…,"version"?}`,
/// `{"type":"state.patch","patch":…,"version"?}` or `{"type":"ping"}`; writes are answered
/// with `{"type":"ack","ref":…,"version":…}` or `{"type":"error",…}`.
#[utoipa::path(get, path = "/v1/agents/{id}/ws", tag = "agents", params(("id" = String, Path)),
    responses((status = 101, description = "WebSocket"),
              (status = 400, body = super::Problem, description = "not a WebSocket upgrade")))]
pub async fn ws(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let (view, rx) = s.agents.subscribe(&p, &id).await?;
    let agents = s.agents.clone();
    Ok(upgrade
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| session(socket, agents, p, id, view, rx)))
}

async fn send_json(socket: &mut WebSocket, v: &impl Serialize) -> bool {
    match serde_json::to_string(v) {
        Ok(text) => socket.send(WsMessage::Text(text.into())).await.is_ok(),
        Err(_) => true,
    }
}

async fn session(
    mut socket: WebSocket,
    agents: Agents,
    p: Principal,
    id: String,
    view: AgentView,
    mut rx: tokio::sync::broadcast::Receiver<AgentEvent>,
) {
    use tokio::sync::broadcast::error::RecvError;
    metrics::gauge!("groundwork_agent_websockets").increment(1.0);
    let (reply_tx, mut replies) = tokio::sync::mpsc::channel::<Value>(64);
    if send_json(&mut socket, &json!({"type": "hello", "agent": view})).await {
        loop {
            tokio::select! {
                msg = socket.recv() => match msg {
                    Some(Ok(WsMessage::Text(text))) => {
                        let (agents, p, id, tx) = (agents.clone(), p.clone(), id.clone(), reply_tx.clone());
                        let text = text.to_string();
                        agents.supervisor().clone().spawn(async move {
                            if let Some(v) = client_message(&agents, &p, &id, &text).await {
                                let _ = tx.send(v).await;
                            }
                        });
                    }
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                ev = rx.recv() => match ev {
                    Ok(e) => if !send_json(&mut socket, &dto::AgentEvent::from(e)).await { break },
                    Err(RecvError::Lagged(n)) => {
                        // Too slow a reader: tell it, and give it the current state.
                        let fresh = agents.get(&p, &id).await.ok();
                        if !send_json(&mut socket, &json!({"type": "lagged", "missed": n, "agent": fresh})).await {
                            break;
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                Some(v) = replies.recv() => if !send_json(&mut socket, &v).await { break },
            }
        }
    }
    metrics::gauge!("groundwork_agent_websockets").decrement(1.0);
}

/// Handles one client message; returns the answer for this client, if any.
async fn client_message(agents: &Agents, p: &Principal, id: &str, text: &str) -> Option<Value> {
    let v: Value = match super::body::parse(text.as_bytes()) {
        Ok(v) => v,
        Err(e) => return Some(json!({"type": "error", "code": e.code(), "message": e.detail()})),
    };
    let reference = v.get("ref").cloned().unwrap_or(Value::Null);
    let err = |e: AgentError| json!({"type": "error", "ref": reference, "code": e.code(), "message": e.to_string()});
    let expect = v.get("version").and_then(Value::as_u64);
    let write = |w: Write| {
        let reference = reference.clone();
        async move {
            match agents.write(p, id, w, expect).await {
                Ok(view) => json!({"type": "ack", "ref": reference, "version": view.version}),
                Err(e) => {
                    json!({"type": "error", "ref": reference, "code": e.code(), "message": e.to_string()})
                }
            }
        }
    };
    match v.get("type").and_then(Value::as_str).unwrap_or_default() {
        "ping" => Some(json!({"type": "pong"})),
        "state.set" => Some(
            write(Write::SetState(
                v.get("state").cloned().unwrap_or(Value::Null),
            ))
            .await,
        ),
        "state.patch" => Some(match v.get("patch") {
            Some(patch @ Value::Array(_)) => match serde_json::from_value(patch.clone()) {
                Ok(p) => write(Write::PatchState(p)).await,
                Err(e) => err(AgentError::Invalid(format!("not a JSON Patch: {e}"))),
            },
            Some(patch) => write(Write::MergeState(patch.clone())).await,
            None => err(AgentError::Invalid("state.patch needs `patch`".into())),
        }),
        "chat" => {
            let input = ChatInput {
                message: v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                conversation_id: v
                    .get("conversation_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                stream: true,
                answer_mode: v
                    .get("answer_mode")
                    .and_then(|m| serde_json::from_value(m.clone()).ok()),
            };
            // Every subscriber sees the question, the deltas and the answer; this client
            // also gets the stream id, and the error if the turn fails.
            match agents.chat(p, id, input).await {
                Ok(ChatStart::Stream { stream_id, reader }) => {
                    let mut last = None;
                    if let Reader::Live { live, .. } = &reader {
                        let mut cursor = 0;
                        loop {
                            let events = live.next_after(cursor).await;
                            let Some(e) = events.last() else { break };
                            cursor = e.seq;
                            last = Some(e.clone());
                        }
                    }
                    Some(match last {
                        Some(e) if e.name == "error" => {
                            json!({"type": "error", "ref": reference, "stream_id": stream_id,
                            "error": serde_json::from_str::<Value>(&e.data).unwrap_or_default()})
                        }
                        _ => json!({"type": "chat_done", "ref": reference, "stream_id": stream_id}),
                    })
                }
                Ok(ChatStart::Complete(_)) => None,
                Err(e) => Some(err(e)),
            }
        }
        other => Some(
            json!({"type": "error", "ref": reference, "code": "invalid_request",
            "message": format!("unknown message type `{other}`")}),
        ),
    }
}
