//! The HTTP API: axum routes, request/response shapes, authentication, metrics middleware and
//! the OpenAPI description.
//!
//! It owns translation only — HTTP in, service call, HTTP out — and must never hold business
//! rules or touch storage directly. Service calls block, so they run on blocking threads.

mod agents;
mod body;
mod documents;
pub mod dto;
mod error;
mod forward;
mod gateway;
mod kbs;
mod mcp;
pub mod openapi;
mod params;
mod server;
mod system;
mod ui;
mod workflows;

pub(crate) use workflows::idempotency_key;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::{ApiError, Problem};
pub use server::{install_metrics, serve};

use crate::error::Classify;
use crate::service::ratelimit::Unit;
use crate::service::{Principal, Service};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The knowledge-base service.
    pub service: Service,
    /// The agent runtime.
    pub agents: crate::agent::Agents,
    /// Renders the Prometheus metrics.
    pub metrics: Option<PrometheusHandle>,
    started: Arc<Instant>,
    /// Carries requests to the replica holding their agent.
    forwarder: forward::Forwarder,
    /// Cancelled when a graceful shutdown begins: streams that would never end by
    /// themselves (live document lists) end then, so that shutdown does not wait on them.
    draining: tokio_util::sync::CancellationToken,
}

/// Runs a blocking service call off the async workers.
pub(crate) async fn blocking<T: Send + 'static, E: Classify>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "a blocking task failed");
            Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                crate::error::INTERNAL_DETAIL,
            ))
        }
    }
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

/// A caller already authenticated by a middleware (the agents' forwarding), so that the
/// handler's [`Caller`] does not ask the key store again.
#[derive(Clone)]
struct Authenticated(Principal);

/// The principal of a request's bearer key (or the demo tenant), without counting the
/// request against any limit.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    if state.service.demo_mode() {
        // No key store to consult: answer without a trip to a blocking thread.
        Ok(state.service.authenticate(None)?)
    } else {
        let service = state.service.clone();
        blocking(move || service.authenticate(bearer.as_deref())).await
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = match parts.extensions.get::<Authenticated>() {
            Some(a) => a.0.clone(),
            None => authenticate(parts, state).await?,
        };
        // Every authenticated request counts against its key's and tenant's rate limits
        // (where it is served: a request forwarded to another replica counts there).
        let quota = admit(state, &principal, Unit::Requests, 1).await?;
        if let (Some(q), Some(slot)) = (quota, parts.extensions.get::<RateSlot>()) {
            *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(q);
        }
        Ok(Caller(principal))
    }
}

/// Counts `amount` against the caller's rate limits; off the async workers when the limits
/// are counted in the shared store.
pub(crate) async fn admit(
    state: &AppState,
    p: &Principal,
    unit: Unit,
    amount: u64,
) -> Result<Option<crate::service::ratelimit::Quota>, ApiError> {
    if state.service.rate_limits_shared() {
        let (service, p) = (state.service.clone(), p.clone());
        blocking(move || service.admit(&p, unit, amount)).await
    } else {
        Ok(state.service.admit(p, unit, amount)?)
    }
}

/// Gives back what [`admit`] took and a call did not use (on a blocking thread when the limits
/// are shared).
pub(crate) async fn refund_tokens(state: &AppState, p: &Principal, amount: u64) {
    if amount == 0 {
        return;
    }
    if state.service.rate_limits_shared() {
        let (service, p) = (state.service.clone(), p.clone());
        let _ = tokio::task::spawn_blocking(move || service.refund_tokens(&p, amount)).await;
    } else {
        state.service.refund_tokens(p, amount);
    }
}

/// Where the caller's extractor leaves the rate-limit quota for [`rate_limit_headers`].
#[derive(Clone, Default)]
struct RateSlot(Arc<std::sync::Mutex<Option<crate::service::ratelimit::Quota>>>);

/// Adds `RateLimit-*` headers to answers of requests that counted against a limit.
async fn rate_limit_headers(mut req: Request, next: Next) -> Response {
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut res = next.run(req).await;
    let quota = *slot.0.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(q) = quota {
        if !res.headers().contains_key("ratelimit-limit") {
            error::rate_headers(res.headers_mut(), (q.limit, q.remaining, q.reset_secs));
        }
    }
    res
}

/// Records request counts and latencies per route.
async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("groundwork_http_requests_total", &labels).increment(1);
    metrics::histogram!("groundwork_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    res
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Every route of the API.
pub fn router(
    service: Service,
    agents: crate::agent::Agents,
    metrics: Option<PrometheusHandle>,
    draining: tokio_util::sync::CancellationToken,
) -> Router {
    let limits = service.config().ingest.clone();
    let upload_limit = (limits.max_file_bytes as usize)
        .saturating_mul(limits.max_files_per_request)
        .saturating_add(1 << 20);
    let state = AppState {
        service,
        agents,
        metrics,
        started: Arc::new(Instant::now()),
        forwarder: forward::Forwarder::new(),
        draining,
    };
    let api = Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/status", get(system::status))
        .route("/v1/jobs/{id}", get(system::job))
        .merge(kb_routes(upload_limit))
        .merge(workflow_routes())
        .merge(model_routes())
        .merge(agent_routes(state.clone()))
        .route("/", get(ui::index))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(2 << 20))
        .with_state(state.clone());
    // The MCP tools are answered by these same routes, called in-process.
    let for_mcp = api
        .clone()
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked));
    api.merge(mcp::routes(for_mcp, state))
        .layer(axum::middleware::from_fn(rate_limit_headers))
        .layer(axum::middleware::from_fn(track))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// The answer of a request whose handler panicked.
fn panicked(_: Box<dyn std::any::Any + Send>) -> Response {
    axum::response::IntoResponse::into_response(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed to process the request; the cause is in its log",
    ))
}

/// Knowledge bases, their documents, search and folder sources.
fn kb_routes(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/kbs", post(kbs::create).get(kbs::list))
        .route(
            "/v1/kbs/{kb}",
            get(kbs::get).patch(kbs::update).delete(kbs::delete),
        )
        .route(
            "/v1/kbs/{kb}/documents",
            post(documents::upload)
                .get(documents::list)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/v1/kbs/{kb}/documents/events", get(documents::events))
        .route("/v1/kbs/{kb}/suggestions", get(kbs::suggestions))
        .route(
            "/v1/kbs/{kb}/documents/{id}",
            get(documents::get).delete(documents::delete),
        )
        .route("/v1/kbs/{kb}/documents/{id}/chunks", get(documents::chunks))
        .route("/v1/kbs/{kb}/chunks/{chunk_id}", get(documents::chunk))
        .route("/v1/kbs/{kb}/search", post(kbs::search))
        .route("/v1/kbs/{kb}/reindex", post(workflows::reindex))
        .route(
            "/v1/kbs/{kb}/sources",
            post(workflows::add_source).get(workflows::list_sources),
        )
        .route(
            "/v1/kbs/{kb}/sources/{id}",
            axum::routing::delete(workflows::delete_source),
        )
        .route(
            "/v1/kbs/{kb}/sources/{id}/sync",
            post(workflows::sync_source),
        )
}

/// Workflow runs: list, inspect, cancel, retry, events.
fn workflow_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", get(workflows::list))
        .route("/v1/workflows/{id}", get(workflows::get))
        .route("/v1/workflows/{id}/cancel", post(workflows::cancel))
        .route("/v1/workflows/{id}/retry", post(workflows::retry))
        .route("/v1/workflows/{id}/events", get(workflows::events))
        .route(
            "/v1/workflows/{id}/events/{name}",
            post(workflows::send_event),
        )
}

/// The model gateway's OpenAI-compatible endpoints, its logs and usage.
fn model_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(gateway::chat_completions))
        .route("/v1/embeddings", post(gateway::embeddings))
        .route("/v1/rerank", post(gateway::rerank))
        .route("/v1/models", get(gateway::models))
        .route("/v1/gateway/logs", get(gateway::logs))
        .route("/v1/gateway/usage", get(gateway::usage))
}

/// Agents: state, config, chat and streams, conversations, tasks, schedules, WebSocket —
/// each served by the replica holding the agent.
fn agent_routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/agents", get(agents::list))
        .route("/v1/agents/{id}", get(agents::get).delete(agents::delete))
        .route(
            "/v1/agents/{id}/state",
            get(agents::get_state)
                .put(agents::put_state)
                .patch(agents::patch_state),
        )
        .route(
            "/v1/agents/{id}/config",
            get(agents::get_config)
                .put(agents::put_config)
                .patch(agents::patch_config),
        )
        .route("/v1/agents/{id}/chat", post(agents::chat))
        .route("/v1/agents/{id}/streams/{stream_id}", get(agents::resume))
        .route(
            "/v1/agents/{id}/streams/{stream_id}/stop",
            post(agents::stop_stream),
        )
        .route("/v1/agents/{id}/conversations", get(agents::conversations))
        .route(
            "/v1/agents/{id}/conversations/{conversation_id}",
            axum::routing::patch(agents::rename_conversation).delete(agents::delete_conversation),
        )
        .route(
            "/v1/agents/{id}/conversations/{conversation_id}/messages",
            get(agents::messages),
        )
        .route(
            "/v1/agents/{id}/tasks",
            post(agents::enqueue).get(agents::tasks),
        )
        .route("/v1/agents/{id}/tasks/{task_id}", get(agents::task))
        .route(
            "/v1/agents/{id}/schedules",
            post(agents::schedule).get(agents::schedules),
        )
        .route(
            "/v1/agents/{id}/schedules/{schedule_id}",
            axum::routing::delete(agents::delete_schedule),
        )
        .route("/v1/agents/{id}/ws", get(agents::ws))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            forward::to_holder,
        ))
}
