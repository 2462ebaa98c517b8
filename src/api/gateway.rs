//! The gateway's HTTP surface: OpenAI-compatible `POST /v1/chat/completions` (plain and SSE),
//! `POST /v1/embeddings`, `GET /v1/models`, Cohere-style `POST /v1/rerank`, and the call log
//! and usage aggregates.
//!
//! Request headers: `X-Groundwork-Cache: bypass|refresh|use`, `X-Groundwork-User`,
//! `X-Groundwork-Agent`, `X-Groundwork-Log-Payload: false`, `X-Request-Id`. Answers carry
//! `X-Request-Id`, `X-Groundwork-Route` and `X-Groundwork-Cache`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::dto::{self, CallLog, UsageRow};
use super::params::ApiQuery;
use super::{blocking, ApiError, AppState, Caller};
use crate::error::Classify;
use crate::gateway::types::{ChatOutput, ChatRequest, EmbeddingRequest, RerankRequest, Usage};
use crate::gateway::{
    CacheMode, CallContext, ChatReply, ModelInfo, ReplyMeta, StreamEvent, StreamEvents,
};
use crate::service::ratelimit::Unit;
use crate::store::gateway::{LogQuery, UsageGroup};
use crate::store::{Page, Scope};

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn context(
    caller: &Caller,
    headers: &HeaderMap,
    user: Option<&str>,
) -> Result<CallContext, ApiError> {
    let cache = match header(headers, "x-groundwork-cache") {
        None => CacheMode::Default,
        Some("bypass" | "no-store") => CacheMode::Bypass,
        Some("refresh") => CacheMode::Refresh,
        Some("use") => CacheMode::Use,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("X-Groundwork-Cache `{other}`: use bypass, refresh or use"),
            ))
        }
    };
    let log_payloads = header(headers, "x-groundwork-log-payload")
        .map(|v| !matches!(v, "false" | "0" | "off" | "no"));
    let request_id = header(headers, "x-request-id")
        .filter(|v| v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let bounded = |v: Option<&str>| v.map(|s| s.chars().take(128).collect::<String>());
    Ok(CallContext {
        request_id,
        tenant_id: caller.0.tenant_id.clone(),
        key_id: caller.0.key_id.clone().unwrap_or_else(|| "demo".into()),
        user: bounded(header(headers, "x-groundwork-user").or(user)),
        agent: bounded(header(headers, "x-groundwork-agent")),
        cache,
        log_payloads,
        spend_cap_usd: None,
    })
}

/// The opening of every model call: the `infer` scope, the body, and the call's context
/// (with the end user the body names, unless a header does).
fn model_call<T: serde::de::DeserializeOwned + 'static>(
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    user: impl Fn(&T) -> Option<&str>,
) -> Result<(T, CallContext), ApiError> {
    caller.0.require(Scope::Infer)?;
    let req: T = super::body::parse(body)?;
    let ctx = context(caller, headers, user(&req))?;
    Ok((req, ctx))
}

/// Names the request on its answer (`X-Request-Id`).
fn with_request_id(res: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        res.headers_mut().insert("x-request-id", v);
    }
}

fn with_meta(mut res: Response, meta: &ReplyMeta) -> Response {
    let h = res.headers_mut();
    for (name, value) in [
        ("x-request-id", meta.request_id.as_str()),
        ("x-groundwork-route", meta.route.as_str()),
        ("x-groundwork-cache", meta.cache),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    res
}

fn completion_json(out: &ChatOutput, meta: &ReplyMeta) -> serde_json::Value {
    json!({
        "id": format!("chatcmpl-{}", meta.request_id),
        "object": "chat.completion",
        "created": meta.created,
        "model": out.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": out.text},
            "finish_reason": out.finish_reason,
            "logprobs": null,
        }],
        "usage": out.usage,
    })
}

fn chunk(
    meta: &ReplyMeta,
    model: &str,
    delta: serde_json::Value,
    finish: Option<&str>,
) -> SseEvent {
    let body = json!({
        "id": format!("chatcmpl-{}", meta.request_id),
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    });
    SseEvent::default().data(body.to_string())
}

fn sse_events(
    mut events: StreamEvents,
    meta: ReplyMeta,
    model: String,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream::stream! {
        yield Ok(chunk(&meta, &model, json!({"role": "assistant", "content": ""}), None));
        while let Some(ev) = events.next().await {
            match ev {
                StreamEvent::Text(t) => yield Ok(chunk(&meta, &model, json!({"content": t}), None)),
                StreamEvent::Done { finish_reason, usage, model: answered, .. } => {
                    let reason = serde_json::to_value(finish_reason).unwrap_or_default();
                    yield Ok(chunk(&meta, &answered, json!({}), reason.as_str()));
                    if include_usage {
                        let body = json!({
                            "id": format!("chatcmpl-{}", meta.request_id),
                            "object": "chat.completion.chunk",
                            "created": meta.created,
                            "model": answered,
                            "choices": [],
                            "usage": usage,
                        });
                        yield Ok(SseEvent::default().data(body.to_string()));
                    }
                    break;
                }
                StreamEvent::Error(e) => {
                    let body = json!({"error": {"message": e.to_string(), "type": "server_error", "code": e.code()}});
                    yield Ok(SseEvent::default().data(body.to_string()));
                    break;
                }
            }
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    }
}

/// OpenAI-compatible chat completions; `stream: true` answers with Server-Sent Events.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway", request_body = ChatRequest,
    responses((status = 200, description = "chat.completion, or chat.completion.chunk events"),
              (status = 400, body = super::Problem), (status = 404, body = super::Problem),
              (status = 429, body = super::Problem), (status = 502, body = super::Problem)))]
pub async fn chat_completions(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (req, ctx): (ChatRequest, _) = model_call(&caller, &headers, &body, |r: &ChatRequest| {
        r.user.as_deref()
    })?;
    let model = req.model.clone();
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    // Tokens per minute: the request's bound is taken now, what it did not use given back.
    let bound = u64::from(s.service.gateway().token_bound(&req));
    super::admit(&s, &caller.0, Unit::Tokens, bound).await?;
    let reply = s.service.gateway().chat(ctx, req).await;
    let used = match &reply {
        Ok(ChatReply::Complete { output, .. }) => {
            u64::from(output.usage.prompt_tokens + output.usage.completion_tokens)
        }
        Ok(ChatReply::Stream { .. }) => bound,
        Err(_) => 0,
    };
    super::refund_tokens(&s, &caller.0, bound.saturating_sub(used)).await;
    match reply? {
        ChatReply::Complete { output, meta } => Ok(with_meta(
            Json(completion_json(&output, &meta)).into_response(),
            &meta,
        )),
        ChatReply::Stream { events, meta } => {
            let stream = sse_events(events, meta.clone(), model, include_usage);
            let res = Sse::new(stream)
                .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
                .into_response();
            Ok(with_meta(res, &meta))
        }
    }
}

/// OpenAI-compatible embeddings: texts or tiktoken token ids, `encoding_format` `float` or
/// `base64`, `dimensions` to shorten the vectors.
#[utoipa::path(post, path = "/v1/embeddings", tag = "gateway", request_body = EmbeddingRequest,
    responses((status = 200, description = "list of embeddings"), (status = 400, body = super::Problem),
              (status = 404, body = super::Problem), (status = 429, body = super::Problem)))]
pub async fn embeddings(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (req, ctx): (EmbeddingRequest, _) =
        model_call(&caller, &headers, &body, |r: &EmbeddingRequest| {
            r.user.as_deref()
        })?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("encoding_format `{other}`: use float or base64"),
            ))
        }
    };
    let request_id = ctx.request_id.clone();
    let bound = req.input.token_bound();
    super::admit(&s, &caller.0, Unit::Tokens, bound).await?;
    let out = s.service.gateway().embeddings(ctx, req).await;
    let used = out.as_ref().map_or(0, |o| u64::from(o.prompt_tokens));
    super::refund_tokens(&s, &caller.0, bound.saturating_sub(used)).await;
    let out = out?;
    let data: Vec<_> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: &[u8] = bytemuck::cast_slice(v.as_slice());
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let usage = Usage::new(out.prompt_tokens, 0);
    let mut res = Json(json!({
        "object": "list",
        "data": data,
        "model": out.model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }))
    .into_response();
    with_request_id(&mut res, &request_id);
    Ok(res)
}

/// Orders passages by relevance to a query with a cross-encoder or rerank API (Cohere's
/// request and answer shapes; Jina's and most rerank clients' are the same).
#[utoipa::path(post, path = "/v1/rerank", tag = "gateway", request_body = RerankRequest,
    responses((status = 200, description = "results, most relevant first"),
              (status = 404, body = super::Problem), (status = 422, body = super::Problem),
              (status = 429, body = super::Problem), (status = 502, body = super::Problem)))]
pub async fn rerank(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (req, ctx): (RerankRequest, _) =
        model_call(&caller, &headers, &body, |r: &RerankRequest| {
            r.user.as_deref()
        })?;
    let request_id = ctx.request_id.clone();
    let documents: Vec<String> = req.documents.into_iter().map(|d| d.into_text()).collect();
    let bound: u64 = documents
        .iter()
        .map(|d| (d.len() + req.query.len() + 4) as u64)
        .sum();
    super::admit(&s, &caller.0, Unit::Tokens, bound).await?;
    let echo = req.return_documents.then(|| documents.clone());
    let out = s
        .service
        .gateway()
        .rerank(ctx, &req.model, &req.query, documents, req.top_n)
        .await;
    let used = out.as_ref().map_or(0, |o| u64::from(o.tokens));
    super::refund_tokens(&s, &caller.0, bound.saturating_sub(used)).await;
    let out = out?;
    let results: Vec<_> = out
        .results
        .iter()
        .map(|r| {
            let mut v = json!({"index": r.index, "relevance_score": r.relevance_score});
            if let Some(text) = echo.as_ref().and_then(|d| d.get(r.index)) {
                v["document"] = json!({"text": text});
            }
            v
        })
        .collect();
    let mut res = Json(json!({
        "id": request_id,
        "model": out.model,
        "results": results,
        "usage": {"total_tokens": out.tokens},
    }))
    .into_response();
    with_request_id(&mut res, &request_id);
    Ok(res)
}

/// The models list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// Route aliases, then `provider/model` targets.
    pub data: Vec<ModelInfo>,
}

/// Route aliases and `provider/model` targets clients may put in `model`.
#[utoipa::path(get, path = "/v1/models", tag = "gateway", responses((status = 200, body = ModelList)))]
pub async fn models(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<ModelList>, ApiError> {
    caller.0.require(Scope::Read)?;
    Ok(Json(ModelList {
        object: "list",
        data: s.service.gateway().models(),
    }))
}

/// Filters of the call log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// API key id (`demo` without keys).
    pub key: Option<String>,
    /// End user.
    pub user: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// Route.
    pub route: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// `ok`, `error`, `blocked`, `budget_exceeded`, `cancelled`.
    pub status: Option<String>,
    /// RFC 3339 lower bound.
    pub since: Option<DateTime<Utc>>,
    /// RFC 3339 upper bound (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Skip.
    #[serde(default)]
    pub offset: u64,
    /// Page size (1–500, default 50).
    pub limit: Option<u64>,
}

/// A page of calls.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallPage {
    /// Newest first.
    pub items: Vec<CallLog>,
    /// Matches over all pages.
    pub total: u64,
}

/// The gateway's call log (admin): every call with caller, route, attempts, latency, tokens,
/// cost, cache and guardrail decisions.
#[utoipa::path(get, path = "/v1/gateway/logs", tag = "gateway", params(LogParams),
    responses((status = 200, body = CallPage), (status = 403, body = super::Problem)))]
pub async fn logs(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<LogParams>,
) -> Result<Json<CallPage>, ApiError> {
    caller.0.require(Scope::Admin)?;
    let q = LogQuery {
        tenant_id: caller.0.tenant_id.clone(),
        key_id: p.key,
        user_id: p.user,
        agent_id: p.agent,
        route: p.route,
        model: p.model,
        status: p.status,
        since: p.since,
        until: p.until,
        offset: p.offset,
        limit: p.limit.unwrap_or(50).clamp(1, 500),
    };
    let gw = s.service.gateway().clone();
    let page: Page<crate::store::gateway::CallLog> = blocking(move || gw.calls(&q)).await?;
    Ok(Json(CallPage {
        items: dto::all(page.items),
        total: page.total,
    }))
}

/// Usage query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    /// RFC 3339 lower bound.
    pub since: Option<DateTime<Utc>>,
    /// RFC 3339 upper bound (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Comma-separated: `day`, `model`, `key`, `user`, `agent`, `route` (default `day,model,key`).
    pub group_by: Option<String>,
}

/// Usage aggregates.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    /// One row per group.
    pub rows: Vec<UsageRow>,
}

/// Requests, errors, cache hits, tokens and cost per day, model and caller (admin).
#[utoipa::path(get, path = "/v1/gateway/usage", tag = "gateway", params(UsageParams),
    responses((status = 200, body = UsageReport), (status = 403, body = super::Problem)))]
pub async fn usage(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<UsageParams>,
) -> Result<Json<UsageReport>, ApiError> {
    caller.0.require(Scope::Admin)?;
    let spec = p.group_by.unwrap_or_else(|| "day,model,key".into());
    let mut group = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let g: UsageGroup = serde_json::from_value(json!(part)).map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("group_by `{part}`: use day, model, key, user, agent, route"),
            )
        })?;
        group.push(g);
    }
    let gw = s.service.gateway().clone();
    let tenant = caller.0.tenant_id.clone();
    let rows = blocking(move || gw.usage(&tenant, p.since, p.until, &group)).await?;
    Ok(Json(UsageReport {
        rows: dto::all(rows),
    }))
}
