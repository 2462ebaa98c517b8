//! Document routes: upload (multipart files or JSON text), list (also live, as events), get,
//! chunks, delete.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body::ApiJson;
use super::dto::{self, ChunkRecord, Document, DocumentStatus, KbView, Receipt, Source};
use super::params::ApiPath;
use super::{blocking, ApiError, AppState, Caller};
use crate::service::{Refused, Upload};
use crate::store::DocumentQuery;

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Body of a JSON upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextDocument {
    /// Name (display only; `.md` makes it Markdown, `.html` HTML).
    pub name: String,
    /// The document's text (not empty; control characters other than tab and line breaks
    /// are read as spaces).
    #[schema(min_length = 1)]
    pub text: String,
    /// Free metadata, filterable in search.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: JsonObject,
}

/// Paging and filtering of document listings.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<DocumentStatus>,
    /// Only ready documents whose chunks were made with another model or chunking than the
    /// knowledge base's (a reindex brings them up to date).
    #[serde(default)]
    pub stale: bool,
    /// Skip this many (default 0).
    #[serde(default)]
    pub offset: u64,
    /// At most this many (default 50, at most 500).
    pub limit: Option<u64>,
}

/// A page of documents.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    /// Newest first.
    pub items: Vec<Document>,
    /// Matches in all pages.
    pub total: u64,
    /// Offset of this page.
    pub offset: u64,
}

/// Paging of chunk listings.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChunkQuery {
    /// Skip this many (default 0).
    #[serde(default)]
    pub offset: u64,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u64>,
}

/// A page of one document's chunks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkList {
    /// In document order.
    pub items: Vec<ChunkRecord>,
}

/// The files of a multipart upload; a file over the size limit is read through (not kept) and
/// refused on its own.
async fn read_multipart(
    mut multipart: Multipart,
    max_file_bytes: u64,
    max_files: usize,
) -> Result<(Vec<Upload>, Vec<Refused>), ApiError> {
    let mut files = Vec::new();
    let mut refused = Vec::new();
    let mut metadata = JsonObject::new();
    let mut password = None;
    while let Some(mut field) = multipart.next_field().await? {
        match field.name() {
            Some("file") | Some("files") | Some("file[]") => {
                if files.len() + refused.len() == max_files {
                    while let Ok(Some(_)) = field.chunk().await {}
                    while let Ok(Some(mut f)) = multipart.next_field().await {
                        while let Ok(Some(_)) = f.chunk().await {}
                    }
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("more than {max_files} files in one request"),
                    ));
                }
                let name = field.file_name().unwrap_or("document").to_owned();
                let declared = field.content_type().map(str::to_owned);
                let index = files.len() + refused.len();
                let mut buf = Vec::new();
                let mut size = 0u64;
                while let Some(chunk) = field.chunk().await? {
                    size += chunk.len() as u64;
                    if size > max_file_bytes {
                        buf = Vec::new();
                    } else {
                        buf.extend_from_slice(&chunk);
                    }
                }
                if size > max_file_bytes {
                    refused.push(Refused {
                        index,
                        name: crate::service::display_name(&name),
                        code: "payload_too_large".into(),
                        detail: format!(
                            "`{name}` is {size} bytes; the limit is {max_file_bytes} bytes per file"
                        ),
                    });
                    continue;
                }
                files.push(Upload {
                    name,
                    bytes: buf.into(),
                    metadata: JsonObject::new(),
                    declared,
                    password: None,
                });
            }
            Some("metadata") => {
                let text = field.text().await?;
                metadata = super::body::parse(text.as_bytes()).map_err(|e| {
                    ApiError::new(
                        e.status(),
                        e.code(),
                        format!("the `metadata` part must be a JSON object: {}", e.detail()),
                    )
                })?;
            }
            Some("password") => {
                let text = field.text().await?;
                if text.len() > 1024 {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_request",
                        "the `password` part is longer than 1,024 bytes",
                    ));
                }
                password = Some(text);
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    format!(
                        "unexpected form part `{}`: send `file` parts, an optional `metadata` \
                         part and an optional `password` part",
                        other.unwrap_or("")
                    ),
                ))
            }
        }
    }
    for f in &mut files {
        f.metadata = metadata.clone();
        f.password = password.clone();
    }
    Ok((files, refused))
}

/// Upload documents: `multipart/form-data` with `file` parts (and an optional `metadata` JSON
/// part applied to every file, and an optional `password` part for encrypted PDFs), or JSON
/// `{name, text, metadata}`. Read: PDF (with OCR of pages without text), PNG/JPEG/TIFF (OCR),
/// DOCX, PPTX, XLSX, ODS, ODT, EPUB, RTF, CSV, Markdown, HTML and plain text. Each file is admitted or
/// refused on its own: 202 when any was admitted, with the admitted documents and the job
/// tracking them, and every refused file with its code and reason; 413, 415 or 422 (with the
/// same `refused` list) only when none was.
#[utoipa::path(post, path = "/v1/kbs/{kb}/documents", tag = "documents",
    params(("kb" = String, Path, description = "id or name")),
    request_body(content(
        (TextDocument = "application/json"),
        (Object = "multipart/form-data")
    )),
    responses((status = 202, body = Receipt), (status = 413, body = super::Problem),
              (status = 415, body = super::Problem), (status = 422, body = super::Problem),
              (status = 429, body = super::Problem)))]
pub async fn upload(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
    req: Request,
) -> Result<(StatusCode, Json<Receipt>), ApiError> {
    let limits = s.service.config().ingest.clone();
    let idempotency_key = super::idempotency_key(req.headers())?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (uploads, refused) = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(req, &s).await?;
        read_multipart(
            multipart,
            limits.max_file_bytes,
            limits.max_files_per_request,
        )
        .await?
    } else if content_type.starts_with("application/json") {
        let ApiJson(doc) = ApiJson::<TextDocument>::from_request(req, &s).await?;
        // Sent as text, read as text: control characters (other than tab and line breaks),
        // which would make the bytes look binary, become spaces.
        let text: String = doc
            .text
            .chars()
            .map(|c| {
                if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let upload = Upload {
            name: doc.name,
            bytes: text.into_bytes().into(),
            metadata: doc.metadata,
            declared: None,
            password: None,
        };
        (vec![upload], Vec::new())
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send multipart/form-data with `file` parts, or application/json {name, text}",
        ));
    };
    let service = s.service.clone();
    let receipt =
        blocking(move || service.upload_some(&p, &kb, uploads, refused, idempotency_key)).await?;
    Ok((StatusCode::ACCEPTED, Json(receipt.into())))
}

/// List a knowledge base's documents, newest first.
#[utoipa::path(get, path = "/v1/kbs/{kb}/documents", tag = "documents",
    params(("kb" = String, Path, description = "id or name"), ListQuery),
    responses((status = 200, body = DocumentList), (status = 404, body = super::Problem)))]
pub async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DocumentList>, ApiError> {
    let Query(q) = query?;
    let query = DocumentQuery {
        status: q.status.map(Into::into),
        stale: q.stale,
        offset: q.offset,
        limit: q.limit.unwrap_or(50).clamp(1, 500),
    };
    let service = s.service.clone();
    let offset = query.offset;
    let page = blocking(move || service.list_documents(&p, &kb, &query)).await?;
    Ok(Json(DocumentList {
        items: dto::all(page.items),
        total: page.total,
        offset,
    }))
}

/// How many documents a live list shows.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// The newest this many (default 100, at most 500).
    pub limit: Option<u64>,
}

/// What a live document list shows at one moment.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentsSnapshot {
    /// The knowledge base with its counters.
    pub kb: KbView,
    /// The newest documents (status, error, chunks, pages, extraction).
    pub items: Vec<Document>,
    /// Documents in all.
    pub total: u64,
    /// Its folder sources with their last sync's status.
    pub sources: Vec<Source>,
}

/// The knowledge base's documents, live (Server-Sent Events): a `documents` event (a
/// [`DocumentsSnapshot`]) at once and again whenever anything in it changes — uploads,
/// progress to ready or failed (with the reason), deletions, folder syncs, on any replica.
/// Ends with an `error` event if the knowledge base is deleted, and when the server shuts
/// down (clients reconnect).
#[utoipa::path(get, path = "/v1/kbs/{kb}/documents/events", tag = "documents",
    params(("kb" = String, Path, description = "id or name"), LiveQuery),
    responses((status = 200, content_type = "text/event-stream", body = DocumentsSnapshot),
              (status = 404, body = super::Problem)))]
pub async fn events(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath(kb): ApiPath<String>,
    query: Result<Query<LiveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    // Subscribed before the first snapshot, so that no change falls in between. Changes
    // made by other replicas are seen by the poll.
    let mut changes = s.service.subscribe_workflows();
    let service = s.service.clone();
    let read = move || {
        let (service, p, kb) = (service.clone(), p.clone(), kb.clone());
        blocking(move || {
            let kb_view = service.get_kb(&p, &kb)?;
            let page = service.list_documents(
                &p,
                &kb,
                &DocumentQuery {
                    status: None,
                    stale: false,
                    offset: 0,
                    limit,
                },
            )?;
            let sources = service.list_sources(&p, &kb)?;
            Ok::<_, crate::service::ServiceError>(DocumentsSnapshot {
                kb: kb_view.into(),
                items: dto::all(page.items),
                total: page.total,
                sources: dto::all(sources),
            })
        })
    };
    let first = read().await?;
    let draining = s.draining.clone();
    let stream = async_stream::stream! {
        let mut last = serde_json::to_string(&first).unwrap_or_default();
        yield Ok(SseEvent::default().event("documents").data(last.clone()));
        loop {
            tokio::select! {
                got = changes.recv() => {
                    if matches!(got, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    // A burst of changes (a batch upload) is read once.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while changes.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = draining.cancelled() => return,
            }
            match read().await {
                Ok(now) => {
                    let text = serde_json::to_string(&now).unwrap_or_default();
                    if text != last {
                        yield Ok(SseEvent::default().event("documents").data(text.clone()));
                        last = text;
                    }
                }
                Err(e) => {
                    let body = serde_json::json!({"code": e.code(), "message": e.detail()});
                    yield Ok(SseEvent::default().event("error").data(body.to_string()));
                    return;
                }
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One document: status, error, chunk count, pages.
#[utoipa::path(get, path = "/v1/kbs/{kb}/documents/{id}", tag = "documents",
    params(("kb" = String, Path, description = "id or name"), ("id" = String, Path)),
    responses((status = 200, body = Document), (status = 404, body = super::Problem)))]
pub async fn get(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((kb, id)): ApiPath<(String, String)>,
) -> Result<Json<Document>, ApiError> {
    let service = s.service.clone();
    Ok(Json(
        blocking(move || service.get_document(&p, &kb, &id))
            .await?
            .into(),
    ))
}

/// A document's chunks in order.
#[utoipa::path(get, path = "/v1/kbs/{kb}/documents/{id}/chunks", tag = "documents",
    params(("kb" = String, Path, description = "id or name"), ("id" = String, Path), ChunkQuery),
    responses((status = 200, body = ChunkList), (status = 404, body = super::Problem)))]
pub async fn chunks(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((kb, id)): ApiPath<(String, String)>,
    query: Result<Query<ChunkQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ChunkList>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let service = s.service.clone();
    let items = blocking(move || service.list_chunks(&p, &kb, &id, q.offset, limit)).await?;
    Ok(Json(ChunkList {
        items: dto::all(items),
    }))
}

/// One chunk by its id (as search hits and citations name it), with its exact offsets in the
/// document's text.
#[utoipa::path(get, path = "/v1/kbs/{kb}/chunks/{chunk_id}", tag = "documents",
    params(("kb" = String, Path, description = "id or name"), ("chunk_id" = u64, Path)),
    responses((status = 200, body = ChunkRecord), (status = 404, body = super::Problem)))]
pub async fn chunk(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((kb, chunk_id)): ApiPath<(String, u64)>,
) -> Result<Json<ChunkRecord>, ApiError> {
    let service = s.service.clone();
    Ok(Json(
        blocking(move || service.get_chunk(&p, &kb, chunk_id))
            .await?
            .into(),
    ))
}

/// Delete a document; its chunks leave search at once.
#[utoipa::path(delete, path = "/v1/kbs/{kb}/documents/{id}", tag = "documents",
    params(("kb" = String, Path, description = "id or name"), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::Problem)))]
pub async fn delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    ApiPath((kb, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let service = s.service.clone();
    blocking(move || service.delete_document(&p, &kb, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
