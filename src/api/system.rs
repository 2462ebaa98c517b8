//! Operational routes: liveness, readiness, Prometheus metrics, status, jobs.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::dto::Job;
use super::params::ApiPath;
use super::{blocking, ApiError, AppState, Caller};
use crate::service::Status;

/// Liveness and readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or why not (`stopping`; `store unavailable: …`).
    pub status: String,
    /// Seconds since start.
    pub uptime_secs: u64,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz(State(s): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        uptime_secs: s.started.elapsed().as_secs(),
    })
}

/// Readiness: indexes are loaded, the service accepts work and its database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    let service = s.service.clone();
    let ready = tokio::task::spawn_blocking(move || service.readiness())
        .await
        .unwrap_or_else(|e| Err(format!("readiness check failed: {e}")));
    let (code, status) = match ready {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    };
    (
        code,
        Json(Health {
            status,
            uptime_secs: s.started.elapsed().as_secs(),
        }),
    )
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let status = s.service.instance_status();
    metrics::gauge!("groundwork_ingest_queue_depth").set(status.queue_depth as f64);
    metrics::gauge!("groundwork_ingest_queue_capacity").set(status.queue_capacity as f64);
    metrics::gauge!("groundwork_index_chunks").set(status.indexed_chunks as f64);
    if let Some(pool) = s.service.store_pool() {
        let busy = pool.open.saturating_sub(pool.idle);
        metrics::gauge!("groundwork_store_connections", "state" => "busy").set(f64::from(busy));
        metrics::gauge!("groundwork_store_connections", "state" => "idle")
            .set(f64::from(pool.idle));
        metrics::gauge!("groundwork_store_connections_max").set(f64::from(pool.max));
    }
    let body = s.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The caller's tenant: knowledge bases, documents, queue depth, indexed chunks, embeddings
/// computed since start; instance-wide counters only for an admin key of the default tenant.
#[utoipa::path(get, path = "/v1/status", tag = "operations", responses((status = 200, body = Status)))]
pub async fn status(
    State(s): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Status>, ApiError> {
    let service = s.service.clone();
    Ok(Json(blocking(move || service.status(&p)).await?))
}

/// An ingest job's progress: documents done/total, chunks embedded, errors.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "documents",
    params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = super::Problem)))]
pub async fn job(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let service = s.service.clone();
    let job = blocking(move || service.job(&p, &id)).await?;
    Ok(Json(JobView {
        done: job.done(),
        finished: job.finished(),
        job: job.into(),
    }))
}

/// A job with derived fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// The job.
    #[serde(flatten)]
    pub job: Job,
    /// Documents ready or failed.
    pub done: u64,
    /// True when no document is waiting or in work.
    pub finished: bool,
}
