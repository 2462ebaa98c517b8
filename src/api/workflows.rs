//! Workflow routes: runs and their steps, cancel/retry/events, progress as Server-Sent
//! Events; reindex and folder sources of a knowledge base.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::body::ApiJson;
use super::dto::{
    self, ChunkingStamp, Source, WorkflowEvent, WorkflowRecord, WorkflowStatus, WorkflowView,
};
use super::params::ApiPath;
use super::{blocking, ApiError, AppState, Caller};
use crate::service::ReindexRequest;

/// Filters of a workflow listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkflowFilter {
    /// Only this type (`ingest`, `reindex`, `sync`).
    pub kind: Option<String>,
    /// Only this status.
    pub status: Option<WorkflowStatus>,
    /// Only about this knowledge base (id or name).
    pub kb: Option<String>,
    /// Skip this many (default 0).
    #[serde(default)]
    pub offset: u64,
    /// At most this many (default 50, at most 500).
    pub limit: Option<u64>,
}

/// A page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    /// The runs, newest first.
    pub items: Vec<WorkflowRecord>,
    /// Matching runs in all.
    pub total: u64,
    /// Offset of the first item.
    pub offset: u64,
}

/// The `Idempotency-Key` header, if any.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "Idempotency-Key must be visible ASCII",
        )
    })?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "Idempotency-Key must be 1-255 characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// List the caller's workflow runs, newest first.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(WorkflowFilter),
    responses((status = 200, body = WorkflowList),
              (status = 404, body = super::Problem, description = "no such knowledge base `kb`")))]
pub async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    query: Result<Query<WorkflowFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WorkflowList>, ApiError> {
    let Query(q) = query?;
    let service = s.service.clone();
    let offset = q.offset;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let page = blocking(move || {
        service.list_workflows(
            &p,
            q.kind,
            q.status.map(Into::into),
            q.kb.as_deref(),
            q.offset,
            limit,
        )
    })
    .await?;
    Ok(Json(WorkflowList {
        items: dto::all(page.items),
        total: page.total,
        offset,
    }))
}

/// One run: status, progress, steps with attempts, errors and timings.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows", params(("id" = String, Path)),
    responses((status = 200, body = WorkflowView), (status = 404, body = super::Problem)))]
pub async fn get(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let service = s.service.clone();
    Ok(Json(
        blocking(move || service.workflow(&p, &id)).await?.into(),
    ))
}

/// Ask a run to stop (at its next step; at once when it is not executing).
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", tag = "workflows",
    params(("id" = String, Path)),
    responses((status = 202, body = WorkflowRecord), (status = 409, body = super::Problem)))]
pub async fn cancel(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<WorkflowRecord>), ApiError> {
    let service = s.service.clone();
    let wf = blocking(move || service.cancel_workflow(&p, &id)).await?;
    Ok((StatusCode::ACCEPTED, Json(wf.into())))
}

/// Run a failed or cancelled run again from its failed steps (an ingest run: its failed
/// documents).
#[utoipa::path(post, path = "/v1/workflows/{id}/retry", tag = "workflows",
    params(("id" = String, Path)),
    responses((status = 202, body = WorkflowRecord), (status = 409, body = super::Problem)))]
pub async fn retry(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<WorkflowRecord>), ApiError> {
    let service = s.service.clone();
    let wf = blocking(move || service.retry_workflow(&p, &id)).await?;
    Ok((StatusCode::ACCEPTED, Json(wf.into())))
}

/// Send an event to a run (for example `approve` to a reindex waiting for approval). The
/// body, any JSON, is the payload the run receives.
#[utoipa::path(post, path = "/v1/workflows/{id}/events/{name}", tag = "workflows",
    params(("id" = String, Path), ("name" = String, Path)),
    request_body = Object,
    responses((status = 202), (status = 409, body = super::Problem)))]
pub async fn send_event(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((id, name)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let payload: Value = if body.is_empty() {
        Value::Null
    } else {
        super::body::parse(&body)?
    };
    let service = s.service.clone();
    blocking(move || service.send_workflow_event(&p, &id, &name, &payload)).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Progress of a run as Server-Sent Events: a `snapshot` event (the run with its steps),
/// then `status`, `step` and `progress` events, ending after the run finishes.
#[utoipa::path(get, path = "/v1/workflows/{id}/events", tag = "workflows",
    params(("id" = String, Path)),
    responses((status = 200, content_type = "text/event-stream"), (status = 404, body = super::Problem)))]
pub async fn events(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Subscribe before reading the snapshot, so that no change falls in between.
    let mut rx = s.service.subscribe_workflows();
    let service = s.service.clone();
    let (pp, iid) = (p.clone(), id.clone());
    let snapshot = blocking(move || service.workflow(&pp, &iid)).await?;
    let service = s.service.clone();
    let stream = async_stream::stream! {
        let done = snapshot.workflow.status.is_terminal();
        yield Ok(json_event("snapshot", &WorkflowView::from(snapshot)));
        if done {
            return;
        }
        loop {
            match rx.recv().await {
                Ok(ev) if ev.workflow_id == id => {
                    let end = ev.event == "status" && ev.status.is_terminal();
                    yield Ok(json_event(ev.event, &WorkflowEvent::from(ev)));
                    if end {
                        return;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow a reader: send the state instead of the missed changes.
                    let (pp, iid) = (p.clone(), id.clone());
                    let svc = service.clone();
                    match blocking(move || svc.workflow(&pp, &iid)).await {
                        Ok(view) => {
                            let end = view.workflow.status.is_terminal();
                            yield Ok(json_event("snapshot", &WorkflowView::from(view)));
                            if end {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn json_event(name: &str, data: &impl Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_else(|_| "{}".into()))
}

/// What a reindex switches to.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReindexBody {
    /// Model: the default model's name or id, a name from `[embed.models]`, or an absolute
    /// model folder on the server. The current model when absent.
    pub embedding_model: Option<String>,
    /// Chunking. The current one when absent.
    pub chunking: Option<ChunkingStamp>,
    /// Wait for an `approve` event before switching.
    #[serde(default)]
    pub approve_swap: bool,
}

/// Rebuild a knowledge base's index with another model and/or chunking. Search keeps using
/// the current index until the new one is complete; the switch is atomic.
#[utoipa::path(post, path = "/v1/kbs/{kb}/reindex", tag = "workflows",
    params(("kb" = String, Path, description = "id or name")),
    request_body = ReindexBody,
    responses((status = 202, body = WorkflowRecord), (status = 409, body = super::Problem),
              (status = 422, body = super::Problem)))]
pub async fn reindex(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<WorkflowRecord>), ApiError> {
    let key = idempotency_key(&headers)?;
    let req: ReindexBody = super::body::parse_or_default(&body)?;
    let service = s.service.clone();
    let wf = blocking(move || {
        service.reindex(
            &p,
            &kb,
            ReindexRequest {
                embedding_model: req.embedding_model,
                chunking: req.chunking.map(Into::into),
                approve_swap: req.approve_swap,
                idempotency_key: key,
            },
        )
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(wf.into())))
}

/// A folder to sync.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSource {
    /// Absolute directory on the server.
    #[schema(pattern = "^/")]
    pub path: String,
    /// `every <duration>` (e.g. `every 15m`) or a cron expression (UTC); none: on demand.
    pub schedule: Option<String>,
}

/// A source with the sync run it started.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceCreated {
    /// The source.
    pub source: Source,
    /// The first sync's workflow.
    pub workflow_id: String,
}

/// Register a folder synced into the knowledge base now and on its schedule: new and changed
/// files are ingested, documents of deleted files removed.
#[utoipa::path(post, path = "/v1/kbs/{kb}/sources", tag = "workflows",
    params(("kb" = String, Path, description = "id or name")),
    request_body = NewSource,
    responses((status = 201, body = SourceCreated), (status = 409, body = super::Problem),
              (status = 422, body = super::Problem)))]
pub async fn add_source(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
    ApiJson(body): ApiJson<NewSource>,
) -> Result<(StatusCode, Json<SourceCreated>), ApiError> {
    let service = s.service.clone();
    let (source, workflow_id) =
        blocking(move || service.add_source(&p, &kb, &body.path, body.schedule)).await?;
    Ok((
        StatusCode::CREATED,
        Json(SourceCreated {
            source: source.into(),
            workflow_id,
        }),
    ))
}

/// A knowledge base's folder sources.
#[utoipa::path(get, path = "/v1/kbs/{kb}/sources", tag = "workflows",
    params(("kb" = String, Path, description = "id or name")),
    responses((status = 200, body = [Source])))]
pub async fn list_sources(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
) -> Result<Json<Vec<Source>>, ApiError> {
    let service = s.service.clone();
    Ok(Json(dto::all(
        blocking(move || service.list_sources(&p, &kb)).await?,
    )))
}

/// Forget a source (its documents stay).
#[utoipa::path(delete, path = "/v1/kbs/{kb}/sources/{id}", tag = "workflows",
    params(("kb" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::Problem)))]
pub async fn delete_source(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((kb, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let service = s.service.clone();
    blocking(move || service.delete_source(&p, &kb, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The sync run started.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStarted {
    /// Its workflow.
    pub workflow_id: String,
}

/// Sync a source now.
#[utoipa::path(post, path = "/v1/kbs/{kb}/sources/{id}/sync", tag = "workflows",
    params(("kb" = String, Path), ("id" = String, Path)),
    responses((status = 202, body = SyncStarted), (status = 404, body = super::Problem)))]
pub async fn sync_source(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((kb, id)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Json<SyncStarted>), ApiError> {
    let service = s.service.clone();
    let workflow_id = blocking(move || service.sync_source(&p, &kb, &id)).await?;
    Ok((StatusCode::ACCEPTED, Json(SyncStarted { workflow_id })))
}
