//! The Model Context Protocol surface at `/mcp` (streamable HTTP, stateless: every request
//! stands alone, so any replica answers any of them): tools `search`,
//! `list_knowledge_bases`, `get_document`, `get_chunk` and `ask`, and every document of the
//! caller's knowledge bases as a resource (`groundwork://kbs/{kb}/documents/{id}`).
//!
//! A tool call is answered by the REST route that serves the same request, called in-process
//! with the caller's own `Authorization` header: keys, scopes, tenants, rate limits and the
//! agents' forwarding to the replica holding them are exactly the API's, and so are the
//! results' shapes. It owns the translation between MCP and those routes only: it must never
//! reach a service directly, nor answer a caller the API would refuse.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Map, Value};
use tower::ServiceExt as _;

use super::{authenticate, AppState};

/// Most characters of a document's text one `get_document` or resource read returns.
const MAX_TEXT_BYTES: usize = 400_000;
/// Documents per page of `resources/list`.
const RESOURCES_PAGE: u64 = 500;
/// The scheme of resource URIs.
const URI_PREFIX: &str = "groundwork://kbs/";

/// `/mcp`: the MCP service behind the API's key check. `api` is the router whose routes
/// answer the tools.
pub fn routes(api: Router, state: AppState) -> Router {
    let handler = Mcp { api };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        // Callers are checked by their key, as on every other route; the Host check would refuse
        // a replica reached by its public name.
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(state, require_key))
}

/// Refuses a request without a valid key (401/403 as the API answers them).
async fn require_key(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match authenticate(&parts, &s).await {
        Ok(_) => next.run(Request::from_parts(parts, body)).await,
        Err(e) => e.into_response(),
    }
}

#[derive(Clone)]
struct Mcp {
    api: Router,
}

/// A route's refusal, as a tool reports it.
struct Refusal {
    status: u16,
    code: String,
    detail: String,
}

impl Refusal {
    fn tool_result(&self) -> CallToolResult {
        let mut r = CallToolResult::error(vec![ContentBlock::text(format!(
            "{} ({}): {}",
            self.code, self.status, self.detail
        ))]);
        r.structured_content =
            Some(json!({"status": self.status, "code": self.code, "detail": self.detail}));
        r
    }

    fn protocol_error(&self) -> ErrorData {
        let data = Some(json!({"status": self.status, "code": self.code}));
        if self.status == 404 {
            ErrorData::resource_not_found(self.detail.clone(), data)
        } else if self.status < 500 {
            ErrorData::invalid_params(self.detail.clone(), data)
        } else {
            ErrorData::internal_error(self.detail.clone(), data)
        }
    }
}

/// One path segment, percent-encoded.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The resource URI of a document.
fn document_uri(kb: &str, id: &str) -> String {
    format!("{URI_PREFIX}{}/documents/{}", segment(kb), segment(id))
}

/// `(kb, document id)` of a resource URI.
fn parse_document_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix(URI_PREFIX)?;
    let (kb, rest) = rest.split_once('/')?;
    let id = rest.strip_prefix("documents/")?;
    if kb.is_empty() || id.is_empty() || id.contains('/') {
        return None;
    }
    Some((decode_segment(kb)?, decode_segment(id)?))
}

/// A document's extracted text rebuilt from its chunks (in order, with their byte ranges):
/// overlaps are taken once, gaps between chunks become a blank line. A chunk whose text is
/// not its range (a repeated table header) is taken whole.
fn text_from_chunks(chunks: &[Value], limit: usize) -> (String, bool) {
    let mut text = String::new();
    let mut covered = 0u64;
    for c in chunks {
        let (Some(start), Some(end), Some(t)) =
            (c["start"].as_u64(), c["end"].as_u64(), c["text"].as_str())
        else {
            continue;
        };
        let exact = end.saturating_sub(start) == t.len() as u64;
        let piece = if exact && start < covered {
            t.get((covered.min(end) - start) as usize..).unwrap_or(t)
        } else {
            if !text.is_empty() && (!exact || start > covered) {
                text.push_str("\n\n");
            }
            t
        };
        text.push_str(piece);
        covered = covered.max(end);
        if text.len() > limit {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            return (text, true);
        }
    }
    (text, false)
}

fn string_arg(args: &Map<String, Value>, name: &str) -> Result<String, ErrorData> {
    match args.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(ErrorData::invalid_params(
            format!("argument `{name}` is required (a non-empty string)"),
            None,
        )),
    }
}

fn object_schema(properties: Value, required: &[&str]) -> Arc<Map<String, Value>> {
    let schema = json!({"type": "object", "properties": properties, "required": required,
        "additionalProperties": false});
    match schema {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(Map::new()),
    }
}

fn tools() -> Vec<Tool> {
    let kb = json!({"type": "string", "description": "Knowledge base id or name (see list_knowledge_bases)."});
    vec![
        Tool::new(
            "search",
            "Search a knowledge base: the best passages for a query, each with its document, \
             chunk id, byte range and pages so that it can be cited and checked (get_chunk).",
            object_schema(
                json!({
                    "kb": kb,
                    "query": {"type": "string", "description": "What to look for."},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
                    "mode": {"type": "string", "enum": ["hybrid", "dense", "bm25"], "default": "hybrid"},
                    "filter": {"type": "object", "description": "Restrictions.", "properties": {
                        "document_ids": {"type": "array", "items": {"type": "string"}},
                        "metadata": {"type": "object", "description": "Exact metadata values."}},
                        "additionalProperties": false},
                    "rerank": {"description": "false, a gateway route, or {model, candidates}: \
                        reorder the candidates with a reranker (default: the knowledge base's own)."}
                }),
                &["kb", "query"],
            ),
        ),
        Tool::new(
            "list_knowledge_bases",
            "The knowledge bases this key may read, with their documents and chunk counts.",
            object_schema(json!({}), &[]),
        ),
        Tool::new(
            "get_document",
            "One document: name, status, pages, chunk count, metadata, and its extracted text.",
            object_schema(
                json!({"kb": kb, "document_id": {"type": "string"},
                       "include_text": {"type": "boolean", "default": true}}),
                &["kb", "document_id"],
            ),
        ),
        Tool::new(
            "get_chunk",
            "One passage by its chunk id (as search results and citations name it), with its \
             exact byte range in the document's text.",
            object_schema(
                json!({"kb": kb, "chunk_id": {"type": "integer", "minimum": 0}}),
                &["kb", "chunk_id"],
            ),
        ),
        Tool::new(
            "ask",
            "Ask an agent: an answer grounded on its knowledge bases, with citations, or a \
             plain 'not found' when the sources do not say.",
            object_schema(
                json!({"agent": {"type": "string", "description": "Agent id."},
                       "question": {"type": "string"},
                       "conversation_id": {"type": "string", "description": "Continue this conversation."},
                       "answer_mode": {"type": "string", "enum": ["auto", "extractive", "generative"],
                           "description": "Instead of the agent's own: extractive quotes the sources, generative writes from them."}}),
                &["agent", "question"],
            ),
        ),
    ]
}

impl Mcp {
    /// Calls one API route as the MCP request's caller.
    async fn call(
        &self,
        ctx: &RequestContext<RoleServer>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Result<Value, Refusal> {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(parts) = ctx.extensions.get::<Parts>() {
            for name in [
                header::AUTHORIZATION,
                HeaderName::from_static("x-request-id"),
            ] {
                if let Some(v) = parts.headers.get(&name) {
                    req = req.header(name, v.clone());
                }
            }
        }
        let req = match body {
            Some(b) => req
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        let internal = |detail: String| Refusal {
            status: 500,
            code: "internal".into(),
            detail,
        };
        let req = req.map_err(|e| internal(format!("request: {e}")))?;
        // (`api` turns a handler's panic into a 500 answer, as for any other caller.)
        let res = self
            .api
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| internal(e.to_string()))?;
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 64 << 20)
            .await
            .map_err(|e| internal(format!("answer: {e}")))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| internal(format!("answer: {e}")))?
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(Refusal {
                status: status.as_u16(),
                code: value["code"].as_str().unwrap_or("error").to_owned(),
                detail: value["detail"]
                    .as_str()
                    .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
                    .to_owned(),
            })
        }
    }

    /// A document's text, rebuilt from its chunks (pages of 1000).
    async fn document_text(
        &self,
        ctx: &RequestContext<RoleServer>,
        kb: &str,
        id: &str,
    ) -> Result<(String, bool), Refusal> {
        let mut chunks = Vec::new();
        loop {
            let page = self
                .call(
                    ctx,
                    Method::GET,
                    &format!(
                        "/v1/kbs/{}/documents/{}/chunks?offset={}&limit=1000",
                        segment(kb),
                        segment(id),
                        chunks.len()
                    ),
                    None,
                )
                .await?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let done = items.len() < 1000;
            chunks.extend(items);
            let bytes: usize = chunks
                .iter()
                .map(|c| c["text"].as_str().map_or(0, str::len))
                .sum();
            if done || bytes > MAX_TEXT_BYTES * 2 {
                break;
            }
        }
        Ok(text_from_chunks(&chunks, MAX_TEXT_BYTES))
    }

    async fn run_tool(
        &self,
        name: &str,
        args: &Map<String, Value>,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Result<Value, Refusal>, ErrorData> {
        Ok(match name {
            "search" => {
                let kb = string_arg(args, "kb")?;
                let mut body = json!({"query": string_arg(args, "query")?,
                    "top_k": args.get("top_k").cloned().unwrap_or(json!(5))});
                for k in ["mode", "filter", "rerank"] {
                    if let Some(v) = args.get(k) {
                        body[k] = v.clone();
                    }
                }
                let uri = format!("/v1/kbs/{}/search", segment(&kb));
                self.call(ctx, Method::POST, &uri, Some(body))
                    .await
                    .map(|v| passages(&kb, &v))
            }
            "list_knowledge_bases" => self
                .call(ctx, Method::GET, "/v1/kbs", None)
                .await
                .map(|v| json!({"knowledge_bases": v["items"]})),
            "get_document" => {
                let (kb, id) = (string_arg(args, "kb")?, string_arg(args, "document_id")?);
                let uri = format!("/v1/kbs/{}/documents/{}", segment(&kb), segment(&id));
                match self.call(ctx, Method::GET, &uri, None).await {
                    Ok(mut doc) => {
                        doc["resource_uri"] = json!(document_uri(&kb, &id));
                        if args.get("include_text") != Some(&Value::Bool(false)) {
                            match self.document_text(ctx, &kb, &id).await {
                                Ok((text, truncated)) => {
                                    doc["text"] = json!(text);
                                    doc["text_truncated"] = json!(truncated);
                                }
                                Err(e) => return Ok(Err(e)),
                            }
                        }
                        Ok(doc)
                    }
                    Err(e) => Err(e),
                }
            }
            "get_chunk" => {
                let kb = string_arg(args, "kb")?;
                let id = args
                    .get("chunk_id")
                    .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                    .ok_or_else(|| {
                        ErrorData::invalid_params("argument `chunk_id` must be an integer", None)
                    })?;
                let uri = format!("/v1/kbs/{}/chunks/{id}", segment(&kb));
                self.call(ctx, Method::GET, &uri, None).await
            }
            "ask" => {
                let agent = string_arg(args, "agent")?;
                let mut body = json!({"message": string_arg(args, "question")?});
                for k in ["conversation_id", "answer_mode"] {
                    if let Some(v) = args.get(k).filter(|v| !v.is_null()) {
                        body[k] = v.clone();
                    }
                }
                let uri = format!("/v1/agents/{}/chat", segment(&agent));
                self.call(ctx, Method::POST, &uri, Some(body))
                    .await
                    .map(|a| {
                        json!({
                            "answer": a["message"]["content"],
                            "found": a["found"],
                            "mode": a["mode"],
                            "citations": a["message"]["citations"],
                            "conversation_id": a["conversation_id"],
                            "support": a["support"],
                        })
                    })
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool `{other}`: use search, list_knowledge_bases, get_document, get_chunk or ask"),
                    None,
                ))
            }
        })
    }
}

/// Search hits as passages to cite: the text, where it is, and how to check it.
fn passages(kb: &str, found: &Value) -> Value {
    let items: Vec<Value> = found["results"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .enumerate()
                .map(|(i, c)| {
                    // A hit is its chunk's fields and the scores (flattened).
                    json!({
                        "rank": i + 1,
                        "score": c["score"],
                        "rerank_score": c["rerank_score"],
                        "text": c["text"],
                        "chunk_id": c["chunk_id"],
                        "document_id": c["document_id"],
                        "document_name": c["document_name"],
                        "start": c["start"],
                        "end": c["end"],
                        "page_start": c["page_start"],
                        "page_end": c["page_end"],
                        "heading_path": c["heading_path"],
                        "resource_uri": c["document_id"].as_str().map(|d| document_uri(kb, d)),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({"kb_id": found["kb_id"], "mode": found["mode"], "passages": items})
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("groundwork", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Groundwork's knowledge bases: list_knowledge_bases, then search one; cite passages \
             by chunk_id and check them with get_chunk; ask an agent for a grounded answer.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.clone().unwrap_or_default();
        let result = match self.run_tool(&request.name, &args, &context).await? {
            Ok(value) => {
                let text = serde_json::to_string_pretty(&value).unwrap_or_default();
                let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
                r.structured_content = Some(value);
                r
            }
            Err(refusal) => refusal.tool_result(),
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        // The cursor is `<kb index>:<offset>` over the caller's knowledge bases in order.
        let cursor = request.and_then(|r| r.cursor).unwrap_or_default();
        let (mut kb_index, mut offset) = cursor
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<u64>().ok()?)))
            .unwrap_or((0, 0));
        let kbs = self
            .call(&context, Method::GET, "/v1/kbs", None)
            .await
            .map_err(|e| e.protocol_error())?;
        let kbs = kbs["items"].as_array().cloned().unwrap_or_default();
        let mut resources = Vec::new();
        while let Some(kb) = kbs.get(kb_index) {
            let kb_id = kb["id"].as_str().unwrap_or_default().to_owned();
            let kb_name = kb["name"].as_str().unwrap_or(&kb_id).to_owned();
            let want = RESOURCES_PAGE - resources.len() as u64;
            let uri = format!(
                "/v1/kbs/{}/documents?offset={offset}&limit={want}",
                segment(&kb_id)
            );
            let page = self
                .call(&context, Method::GET, &uri, None)
                .await
                .map_err(|e| e.protocol_error())?;
            let docs = page["items"].as_array().cloned().unwrap_or_default();
            for d in &docs {
                let id = d["id"].as_str().unwrap_or_default();
                let name = d["name"].as_str().unwrap_or(id);
                let mut r = Resource::new(document_uri(&kb_id, id), name)
                    .with_title(format!("{name} ({kb_name})"))
                    .with_mime_type("text/plain")
                    .with_description(format!(
                        "{} in knowledge base {kb_name}: {}, {} chunks",
                        d["media_type"].as_str().unwrap_or("document"),
                        d["status"].as_str().unwrap_or("unknown"),
                        d["chunk_count"]
                    ));
                if let Some(size) = d["size"].as_u64() {
                    r = r.with_size(size);
                }
                resources.push(r);
            }
            offset += docs.len() as u64;
            if (docs.len() as u64) < want {
                kb_index += 1;
                offset = 0;
            }
            if resources.len() as u64 >= RESOURCES_PAGE {
                break;
            }
        }
        let mut result = ListResourcesResult::with_all_items(resources);
        if kb_index < kbs.len() {
            result.next_cursor = Some(format!("{kb_index}:{offset}"));
        }
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(
                format!("{URI_PREFIX}{{kb}}/documents/{{document_id}}"),
                "document",
            )
            .with_title("A document's extracted text")
            .with_description("Any document of a knowledge base this key may read."),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let (kb, id) = parse_document_uri(&request.uri).ok_or_else(|| {
            ErrorData::invalid_params(
                Cow::Owned(format!(
                    "`{}` is not a document URI ({URI_PREFIX}{{kb}}/documents/{{id}})",
                    request.uri
                )),
                None,
            )
        })?;
        let (text, _) = self
            .document_text(&context, &kb, &id)
            .await
            .map_err(|e| e.protocol_error())?;
        let contents = ResourceContents::text(text, request.uri).with_mime_type("text/plain");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_uris_round_trip_any_name() {
        for (kb, id) in [("notes", "abc-123"), ("my kb/ü", "d%2F?x")] {
            let uri = document_uri(kb, id);
            assert_eq!(
                parse_document_uri(&uri),
                Some((kb.to_owned(), id.to_owned()))
            );
        }
        assert_eq!(parse_document_uri("groundwork://kbs/a/chunks/1"), None);
        assert_eq!(parse_document_uri("file:///etc/passwd"), None);
    }

    #[test]
    fn text_is_rebuilt_from_overlapping_chunks() {
        let doc = "Alpha beta gamma. Delta epsilon. Zeta eta theta.";
        let chunk = |s: usize, e: usize| json!({"start": s, "end": e, "text": &doc[s..e]});
        // Overlap (12..17 twice), then a gap (the space at 32 in no chunk).
        let chunks = [chunk(0, 17), chunk(12, 32), chunk(33, doc.len())];
        let (text, cut) = text_from_chunks(&chunks, 1000);
        assert_eq!(text, "Alpha beta gamma. Delta epsilon.\n\nZeta eta theta.");
        assert!(!cut);
        let (text, cut) = text_from_chunks(&chunks, 10);
        assert_eq!((text.as_str(), cut), ("Alpha beta", true));
    }
}
