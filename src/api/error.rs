//! The one place where errors become HTTP answers: `application/problem+json` (RFC 9457) with
//! a stable `code`. Clients get a safe message; internal details go to the log.

use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::QueryRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::ServiceError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    retry_after: Option<u64>,
    extra: serde_json::Map<String, serde_json::Value>,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` of a refused request.
    rate: Option<(u64, u64, u64)>,
}

/// The problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI reference naming the problem type (`/problems/<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the status.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// Seconds to wait before retrying (429 and 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Members particular to the problem (e.g. a budget's `limit_usd` and `resets_at`, and an
    /// OpenAI-style `error` object on the gateway's routes).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            extra: serde_json::Map::new(),
            rate: None,
        }
    }

    /// Adds extension members to the problem document.
    pub fn with_extra(mut self, extra: serde_json::Map<String, serde_json::Value>) -> Self {
        self.extra = extra;
        self
    }

    /// Sets `Retry-After`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What went wrong, for people.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let code = e.code();
        let (status, retry_after) = match &e {
            ServiceError::NotFound { .. } => (StatusCode::NOT_FOUND, None),
            ServiceError::Conflict { .. } => (StatusCode::CONFLICT, None),
            ServiceError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, None),
            ServiceError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None),
            ServiceError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, None),
            ServiceError::AllRefused(_) => match code {
                "payload_too_large" => (StatusCode::PAYLOAD_TOO_LARGE, None),
                "unsupported_media_type" => (StatusCode::UNSUPPORTED_MEDIA_TYPE, None),
                _ => (StatusCode::UNPROCESSABLE_ENTITY, None),
            },
            ServiceError::Unauthenticated => (StatusCode::UNAUTHORIZED, None),
            ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, None),
            ServiceError::QueueFull { retry_after, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, Some(*retry_after))
            }
            ServiceError::RateLimited(l) => {
                (StatusCode::TOO_MANY_REQUESTS, Some(l.retry_after_secs))
            }
            ServiceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, Some(5)),
            ServiceError::Store(s) if s.is_retryable() => {
                (StatusCode::SERVICE_UNAVAILABLE, Some(1))
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        let detail = if status.is_server_error() && retry_after.is_none() {
            tracing::error!(error = %e, code, "request failed");
            "the server failed to process the request; the cause is in its log".to_owned()
        } else {
            e.to_string()
        };
        let mut extra = serde_json::Map::new();
        let mut rate = None;
        match &e {
            ServiceError::AllRefused(refused) => {
                extra.insert(
                    "refused".into(),
                    serde_json::to_value(refused).unwrap_or_default(),
                );
            }
            ServiceError::RateLimited(l) => {
                extra.insert("limit".into(), l.limit.into());
                extra.insert("scope".into(), l.scope.into());
                rate = Some((l.limit, 0, l.retry_after_secs));
            }
            _ => {}
        }
        Self {
            status,
            code,
            detail,
            retry_after,
            extra,
            rate,
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            r.body_text(),
        )
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(r: MultipartRejection) -> Self {
        Self::new(r.status(), "invalid_multipart", r.body_text())
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "invalid_multipart"
        };
        Self::new(status, code, e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.to_owned(),
            retry_after: self.retry_after,
            extra: self.extra,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(q) = self.rate {
            rate_headers(headers, q);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// Sets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds).
pub(crate) fn rate_headers(
    headers: &mut axum::http::HeaderMap,
    (limit, remaining, reset): (u64, u64, u64),
) {
    headers.insert("ratelimit-limit", HeaderValue::from(limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
}
