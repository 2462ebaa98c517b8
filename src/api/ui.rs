//! The chat UI: one self-contained HTML page (no build step, no Node toolchain) served at `/`
//! under a policy that lets it reach this server alone. It talks to the public API only:
//! knowledge bases, uploads and the live document list, suggested questions, passage search,
//! agents' chat over SSE (stop, resume), conversations. It must never hold data of its own
//! beyond the tab: the API key lives in the tab's session storage.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("ui/index.html");

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        INDEX,
    )
}
