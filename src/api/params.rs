//! Path and query parameters read with the API's error vocabulary: a parameter that cannot be
//! what the route expects (a task id past `i64`, a malformed query string, an unknown query
//! member) is 422 `invalid_request`, never axum's plain-text 400. Parsing only.

use axum::extract::rejection::PathRejection;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;

use super::ApiError;

/// `axum::extract::Path` whose rejections are problem documents.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` whose rejections are problem documents.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            r.body_text(),
        )
    }
}
