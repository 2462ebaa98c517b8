//! Knowledge-base routes: create, list, get, delete, search.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body::ApiJson;
use super::dto::{self, ChunkingStamp, KbRerank, KbView, SearchHit};
use super::params::{ApiPath, ApiQuery};
use super::{blocking, ApiError, AppState, Caller};
use crate::index::SearchMode;
use crate::service::{CreateKb, Rerank, SearchParams};

/// Body of `POST /v1/kbs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKbRequest {
    /// Unique within the tenant: 1-64 letters, digits, `-`, `_`, `.` (not a UUID).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Model name or id; must be the server's embedder (the default).
    #[serde(default)]
    pub embedding_model: Option<String>,
    /// Chunk size in tokens (default from the configuration).
    #[serde(default)]
    pub chunking: Option<ChunkingStamp>,
    /// Its own rerank stage (default: the configured `search.rerank`, if any).
    #[serde(default)]
    pub rerank: Option<KbRerank>,
}

/// Body of `PATCH /v1/kbs/{kb}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKbRequest {
    /// The rerank stage; `null` removes it (searches then use `search.rerank`, if any).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<KbRerank>, nullable = true)]
    pub rerank: Option<Option<KbRerank>>,
}

/// A member that is present (even `null`) is `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The tenant's knowledge bases.
#[derive(Debug, Serialize, ToSchema)]
pub struct KbList {
    /// By name.
    pub items: Vec<KbView>,
}

/// Body of `POST /v1/kbs/{kb}/search`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequestBody {
    /// The question (not blank; at most `search.max_query_bytes`, 8 KiB by default).
    #[schema(pattern = r"\S", max_length = 8192)]
    pub query: String,
    /// Results wanted (default 10; at most `search.max_top_k`, 100 by default).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub top_k: Option<usize>,
    /// `dense`, `bm25` or `hybrid` (default).
    #[serde(default)]
    #[schema(value_type = String, example = "hybrid", pattern = "^(dense|bm25|hybrid)$")]
    pub mode: SearchMode,
    /// Restrictions.
    #[serde(default)]
    pub filter: SearchFilter,
    /// Read-your-writes across replicas: answer only once this replica's index reflects
    /// this sequence number of the knowledge base (an ingest run's `index_seq`, or the
    /// knowledge base's); 422 when it is ahead of the knowledge base's latest number, 503
    /// `index_behind` when this replica does not reach it within 10 s.
    #[serde(default)]
    pub min_seq: Option<u64>,
    /// Rerank the candidates: `false` (not even the configured default), a gateway route or
    /// `provider/model`, or `{"model": ..., "candidates": n}` (candidates handed to the
    /// reranker, default `search.rerank_candidates`). Absent: `search.rerank` if configured.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub rerank: Option<RerankBody>,
}

/// A search's `rerank`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RerankBody {
    /// `false`: no rerank (`true`: the configured one).
    Switch(bool),
    /// A route.
    Model(String),
    /// A route and the candidates it reads.
    Full {
        /// The route.
        model: String,
        /// Candidates handed to the reranker.
        #[serde(default)]
        candidates: Option<usize>,
    },
}

impl From<Option<RerankBody>> for Rerank {
    fn from(b: Option<RerankBody>) -> Self {
        match b {
            None | Some(RerankBody::Switch(true)) => Rerank::Default,
            Some(RerankBody::Switch(false)) => Rerank::Off,
            Some(RerankBody::Model(model)) => Rerank::With {
                model,
                candidates: None,
            },
            Some(RerankBody::Full { model, candidates }) => Rerank::With { model, candidates },
        }
    }
}

/// What the rerank stage did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RerankInfo {
    /// The route used.
    pub model: String,
    /// Candidates it was given.
    pub candidates: usize,
    /// Whether the results are in its order; `false`: it failed and the fused order is kept.
    pub applied: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which chunks a search may return.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchFilter {
    /// Only these documents.
    #[serde(default)]
    pub document_ids: Option<Vec<String>>,
    /// Only documents whose metadata has exactly these values.
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Search results, best first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    /// The knowledge base searched.
    pub kb_id: String,
    /// The mode used.
    #[schema(value_type = String)]
    pub mode: SearchMode,
    /// Results.
    pub results: Vec<SearchHit>,
    /// The knowledge base's sequence number the answering replica's index reflected.
    pub index_seq: u64,
    /// Server time spent, milliseconds.
    pub took_ms: f64,
    /// The rerank stage, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank: Option<RerankInfo>,
}

/// Create a knowledge base.
#[utoipa::path(post, path = "/v1/kbs", request_body = CreateKbRequest, tag = "knowledge bases",
    responses((status = 201, body = KbView), (status = 409, body = super::Problem),
              (status = 422, body = super::Problem)))]
pub async fn create(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiJson(body): ApiJson<CreateKbRequest>,
) -> Result<(StatusCode, Json<KbView>), ApiError> {
    let service = s.service.clone();
    let kb = blocking(move || {
        service.create_kb(
            &p,
            CreateKb {
                name: body.name,
                description: body.description,
                embedding_model: body.embedding_model,
                chunking: body.chunking.map(Into::into),
                rerank: body.rerank.map(Into::into),
            },
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(kb.into())))
}

/// List the caller's knowledge bases.
#[utoipa::path(get, path = "/v1/kbs", tag = "knowledge bases", responses((status = 200, body = KbList)))]
pub async fn list(State(s): State<AppState>, Caller(p): Caller) -> Result<Json<KbList>, ApiError> {
    let service = s.service.clone();
    let items = blocking(move || service.list_kbs(&p)).await?;
    Ok(Json(KbList {
        items: dto::all(items),
    }))
}

/// One knowledge base (by id or name) with its counters.
#[utoipa::path(get, path = "/v1/kbs/{kb}", tag = "knowledge bases",
    params(("kb" = String, Path, description = "id or name")),
    responses((status = 200, body = KbView), (status = 404, body = super::Problem)))]
pub async fn get(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
) -> Result<Json<KbView>, ApiError> {
    let service = s.service.clone();
    Ok(Json(
        blocking(move || service.get_kb(&p, &kb)).await?.into(),
    ))
}

/// Change a knowledge base: its rerank stage (write scope).
#[utoipa::path(patch, path = "/v1/kbs/{kb}", tag = "knowledge bases", request_body = UpdateKbRequest,
    params(("kb" = String, Path, description = "id or name")),
    responses((status = 200, body = KbView), (status = 404, body = super::Problem),
              (status = 422, body = super::Problem)))]
pub async fn update(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateKbRequest>,
) -> Result<Json<KbView>, ApiError> {
    let service = s.service.clone();
    let view = blocking(move || match body.rerank {
        Some(rerank) => service.set_kb_rerank(&p, &kb, rerank.map(Into::into)),
        None => service.get_kb(&p, &kb),
    })
    .await?;
    Ok(Json(view.into()))
}

/// Delete a knowledge base with its documents (admin scope).
#[utoipa::path(delete, path = "/v1/kbs/{kb}", tag = "knowledge bases",
    params(("kb" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = super::Problem)))]
pub async fn delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let service = s.service.clone();
    blocking(move || service.delete_kb(&p, &kb)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Search a knowledge base.
#[utoipa::path(post, path = "/v1/kbs/{kb}/search", tag = "search", request_body = SearchRequestBody,
    params(("kb" = String, Path, description = "id or name")),
    responses((status = 200, body = SearchResponse), (status = 404, body = super::Problem),
              (status = 422, body = super::Problem),
              (status = 503, description = "`index_behind`: this replica's index has not reached `min_seq`", body = super::Problem)))]
pub async fn search(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
    ApiJson(body): ApiJson<SearchRequestBody>,
) -> Result<Json<SearchResponse>, ApiError> {
    let started = std::time::Instant::now();
    let service = s.service.clone();
    let mode = body.mode;
    let metadata = body
        .filter
        .metadata
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect();
    let params = SearchParams {
        query: body.query,
        top_k: body.top_k,
        mode,
        document_ids: body.filter.document_ids,
        metadata,
        min_seq: body.min_seq,
        rerank: body.rerank.into(),
    };
    let found = blocking(move || service.search(&p, &kb, &params)).await?;
    Ok(Json(SearchResponse {
        kb_id: found.kb_id,
        mode,
        results: dto::all(found.hits),
        index_seq: found.index_seq,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        rerank: found.rerank.map(|r| RerankInfo {
            model: r.model,
            candidates: r.candidates,
            applied: r.applied,
            error: r.error,
        }),
    }))
}

/// How many questions to suggest.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SuggestionQuery {
    /// At most this many (default 4; 1 to 20).
    #[param(minimum = 1, maximum = 20)]
    pub n: Option<u32>,
}

/// A suggested question.
#[derive(Debug, Serialize, ToSchema)]
pub struct Suggestion {
    /// The question.
    pub question: String,
    /// The document it is about.
    pub document_name: String,
    /// The section heading it was made from (absent: from the document's name).
    pub heading: Option<String>,
}

/// Suggested questions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuggestionList {
    /// Spread over the documents, in document order.
    pub items: Vec<Suggestion>,
}

/// Questions to start with: made from the section headings of the knowledge base's
/// documents (every document in turn), else from their names. Empty when nothing is ready.
#[utoipa::path(get, path = "/v1/kbs/{kb}/suggestions", tag = "knowledge bases",
    params(("kb" = String, Path, description = "id or name"), SuggestionQuery),
    responses((status = 200, body = SuggestionList), (status = 404, body = super::Problem),
              (status = 422, body = super::Problem)))]
pub async fn suggestions(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
    ApiQuery(q): ApiQuery<SuggestionQuery>,
) -> Result<Json<SuggestionList>, ApiError> {
    let n = q.n.unwrap_or(4);
    if !(1..=20).contains(&n) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "n must be within 1..=20",
        ));
    }
    let service = s.service.clone();
    let items = blocking(move || service.suggestions(&p, &kb, n as usize)).await?;
    Ok(Json(SuggestionList {
        items: items
            .into_iter()
            .map(|s| Suggestion {
                question: s.question,
                document_name: s.document_name,
                heading: s.heading,
            })
            .collect(),
    }))
}
