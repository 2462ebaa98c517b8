//! Forwarding: an agent's requests served by the replica that holds it.
//!
//! An agent is active in one replica at a time (its lease, see [`crate::agent::Place`]). A
//! request for an agent another live replica holds is carried there whole — method, path,
//! query, headers (the caller's own key: the holder authenticates and rate-limits it as if
//! the caller had come straight), body — and the answer streamed back, Server-Sent Events and
//! WebSocket upgrades included; so a client may reach any replica and a stream resumes
//! through any of them. A request that a replica forwarded is never forwarded again: it
//! carries [`FORWARDED_BY`], and a replica that is asked for an agent it does not hold
//! answers 503 (the lease moved meanwhile) rather than bounce it on.
//!
//! It owns the carrying only: it must never decide who holds an agent (the agent runtime
//! does) nor look into what it carries.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{authenticate, ApiError, AppState, Authenticated};
use crate::agent::Place;

/// Set on a forwarded request: the id of the replica that forwarded it.
pub const FORWARDED_BY: &str = "x-groundwork-forwarded-by";

/// Set on an answer a holder gave through another replica: the holder's id.
pub const SERVED_BY: &str = "x-groundwork-agent-replica";

/// The HTTP client replicas forward with. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    http: reqwest::Client,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    /// A client that connects within 2 s and then waits as long as the answer streams.
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }
}

/// Headers of one hop only (RFC 9110 §7.6.1), never carried on.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Middleware of the agent routes: serves the request here when this replica holds the agent
/// (or takes it now), else carries it to the replica that does.
pub async fn to_holder(
    State(s): State<AppState>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let Some(id) = params
        .iter()
        .find(|(k, _)| *k == "id")
        .map(|(_, v)| v.to_owned())
    else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let principal = match authenticate(&parts, &s).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let place = s.agents.place(&principal, &id).await;
    parts.extensions.insert(Authenticated(principal));
    match place {
        // Errors (an invalid id, the store unreachable) are the handler's to report.
        Ok(Place::Here) | Err(_) => next.run(Request::from_parts(parts, body)).await,
        Ok(Place::Elsewhere { replica, .. }) if parts.headers.contains_key(FORWARDED_BY) => {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "agent_moving",
                format!("agent `{id}` moved to replica {replica} while this request was forwarded; ask again"),
            )
            .with_retry_after(1)
            .into_response()
        }
        Ok(Place::Elsewhere { replica, address }) => {
            forward(&s, parts, body, &id, &replica, &address).await
        }
    }
}

fn unreachable(id: &str, replica: &str, why: impl std::fmt::Display) -> Response {
    tracing::warn!(agent = %id, %replica, error = %why, "the replica holding an agent did not answer");
    metrics::counter!("groundwork_agent_forward_failures_total").increment(1);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "agent_unreachable",
        format!(
            "agent `{id}` is active on replica {replica}, which does not answer; \
             another replica takes it over once that one has missed its heartbeats (about 15 s)"
        ),
    )
    .with_retry_after(2)
    .into_response()
}

/// Carries the request to `address` and streams the answer back.
async fn forward(
    s: &AppState,
    mut parts: axum::http::request::Parts,
    body: Body,
    id: &str,
    replica: &str,
    address: &str,
) -> Response {
    if address.is_empty() {
        return unreachable(id, replica, "it announced no address");
    }
    metrics::counter!("groundwork_agent_forwarded_total").increment(1);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let websocket = is_websocket(&parts.headers);
    let mut out = s
        .forwarder
        .http
        .request(parts.method.clone(), format!("{address}{path}"));
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    out = out.header(FORWARDED_BY, s.service.replica_id());
    let client_upgrade = if websocket {
        out = out
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket");
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        // A body only where the request has one (a GET stays without).
        let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
            || parts.headers.contains_key(header::TRANSFER_ENCODING);
        if has_body {
            out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
        }
        None
    };
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => return unreachable(id, replica, e),
    };
    let mut res = Response::builder().status(answer.status());
    if let Some(headers) = res.headers_mut() {
        for (name, value) in answer.headers() {
            if !hop_by_hop(name) {
                headers.append(name, value.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(replica) {
            headers.insert(SERVED_BY, v);
        }
    }
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return unreachable(id, replica, "the client's connection cannot be upgraded");
        };
        // Both ends switched: pipe the bytes both ways until either closes.
        s.agents.supervisor().spawn(async move {
            let holder = match answer.upgrade().await {
                Ok(u) => u,
                Err(e) => return tracing::warn!(error = %e, "holder's WebSocket not upgraded"),
            };
            let client = match client.await {
                Ok(u) => u,
                Err(e) => return tracing::warn!(error = %e, "client's WebSocket not upgraded"),
            };
            let (mut client, mut holder) = (hyper_util::rt::TokioIo::new(client), holder);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut holder).await;
        });
        return res
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response());
    }
    res.body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}
