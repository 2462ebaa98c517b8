//! The OpenAPI 3 description of the HTTP API, generated from the handlers' annotations so it
//! cannot drift from the code.

use axum::Json;
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{agents, documents, gateway, kbs, system, workflows};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Groundwork", description = "Self-hosted knowledge assistant: knowledge bases, uploads, search, durable workflows, an OpenAI-compatible model gateway, and stateful agents with grounded, cited chat."),
    paths(
        system::healthz, system::readyz, system::metrics, system::status, system::job,
        kbs::create, kbs::list, kbs::get, kbs::update, kbs::delete, kbs::search, kbs::suggestions,
        documents::upload, documents::list, documents::events, documents::get, documents::chunks, documents::chunk, documents::delete,
        workflows::list, workflows::get, workflows::cancel, workflows::retry, workflows::send_event,
        workflows::events, workflows::reindex, workflows::add_source, workflows::list_sources,
        workflows::delete_source, workflows::sync_source,
        gateway::chat_completions, gateway::embeddings, gateway::rerank, gateway::models, gateway::logs,
        gateway::usage,
        agents::list, agents::get, agents::delete, agents::get_state, agents::put_state,
        agents::patch_state, agents::get_config, agents::put_config, agents::patch_config,
        agents::chat, agents::resume, agents::stop_stream, agents::conversations,
        agents::rename_conversation, agents::delete_conversation, agents::messages, agents::enqueue,
        agents::tasks, agents::task, agents::schedule, agents::schedules, agents::delete_schedule,
        agents::ws,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// Routes anyone may call: no key, never rate limited.
const PUBLIC: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The document served: the annotations, then [`shapes_as_parsed`] and [`errors_as_answered`].
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    shapes_as_parsed(&mut doc);
    errors_as_answered(&mut doc);
    doc
}

/// Schedules `workflow::schedule::Schedule::parse` reads: `every <n><unit>` or five cron fields
/// (minute, hour, day of month, month, day of week), each `*` or a number in its range.
const SCHEDULE: &str =
    "^(every [1-9][0-9]{0,3}(s|m|h|d)|(\\*|[0-5]?[0-9]) (\\*|[01]?[0-9]|2[0-3]) \
     (\\*|[1-9]|[12][0-9]|3[01]) (\\*|[1-9]|1[0-2]) (\\*|[0-6]))$";

/// What agent ids may be (the agent runtime refuses others with 422).
const AGENT_ID: &str = "^[A-Za-z0-9._:@-]{1,128}$";

/// Schemas serde's attributes cannot say: untagged unions (a string or a list), any-JSON
/// state, the OpenAI message shape, the agent id pattern, and the answers that are either JSON
/// or an event stream. Each edit names the code it describes.
fn shapes_as_parsed(doc: &mut Value) {
    gateway_shapes(doc);
    agent_shapes(doc);
    upload_and_workflow_shapes(doc);
    unsigned_bounds(doc);
    agent_id_pattern(doc);
}

/// Replaces the value at `pointer`, when the document has one.
fn set(doc: &mut Value, pointer: &str, v: Value) {
    if let Some(slot) = doc.pointer_mut(pointer) {
        *slot = v;
    }
}

/// A non-empty string or a non-empty list of them (at most `max`).
fn strings(max: Option<u64>) -> Value {
    let mut list =
        json!({"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1});
    if let Some(m) = max {
        list["maxItems"] = json!(m);
    }
    json!({"oneOf": [{"type": "string", "minLength": 1}, list]})
}

/// The OpenAI-compatible request shapes.
fn gateway_shapes(doc: &mut Value) {
    // gateway::types::{Stop, EmbeddingInput, Message}
    set(
        doc,
        "/components/schemas/ChatRequest/properties/stop",
        strings(Some(4)),
    );
    set(
        doc,
        "/components/schemas/EmbeddingRequest/properties/input",
        json!({"oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
            {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
            {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}, "minItems": 1},
        ]}),
    );
    set(
        doc,
        "/components/schemas/RerankRequest/properties/documents",
        json!({"type": "array", "minItems": 1, "maxItems": 1000, "items": {"oneOf": [
            {"type": "string"},
            {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}},
             "additionalProperties": false}]}}),
    );
    set(
        doc,
        "/components/schemas/SearchRequestBody/properties/rerank",
        json!({"nullable": true, "oneOf": [
            {"type": "boolean"},
            {"type": "string", "minLength": 1},
            {"type": "object", "required": ["model"], "additionalProperties": false, "properties": {
                "model": {"type": "string", "minLength": 1},
                "candidates": {"type": "integer", "minimum": 1, "maximum": 1000, "nullable": true}}}]}),
    );
    let part = json!({"type": "object", "required": ["type"],
        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}});
    set(
        doc,
        "/components/schemas/ChatRequest/properties/messages",
        json!({"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
                "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": part}], "nullable": true},
                "name": {"type": "string", "nullable": true}}}}),
    );
}

/// Agent state, config patches, streams, tasks and schedules.
fn agent_shapes(doc: &mut Value) {
    // agent::AgentView::state and the state routes: any JSON.
    set(
        doc,
        "/components/schemas/AgentView/properties/state",
        json!({"description": "Any JSON; `null` until set."}),
    );
    for method in ["put", "patch"] {
        set(
            doc,
            &format!("/paths/~1v1~1agents~1{{id}}~1state/{method}/requestBody/content"),
            json!({"application/json": {"schema": {}}}),
        );
    }
    // Streams: `"stream": true` answers Server-Sent Events.
    for (path, schema) in [
        (
            "/paths/~1v1~1agents~1{id}~1chat/post/responses/200",
            "ChatAnswer",
        ),
        ("/paths/~1v1~1chat~1completions/post/responses/200", ""),
    ] {
        if let Some(r) = doc.pointer_mut(path) {
            let body = if schema.is_empty() {
                json!({"type": "object"})
            } else {
                json!({"$ref": format!("#/components/schemas/{schema}")})
            };
            r["content"] = json!({"application/json": {"schema": body}, "text/event-stream": {}});
        }
    }
    // The state itself is any JSON too.
    set(
        doc,
        "/paths/~1v1~1agents~1{id}~1state/get/responses/200/content",
        json!({"application/json": {"schema": {}}}),
    );
    // A config merge patch: any of the config's members, nothing else.
    if let Some(mut config) = doc.pointer("/components/schemas/AgentConfig").cloned() {
        if let Some(o) = config.as_object_mut() {
            o.remove("required");
            o.insert("additionalProperties".into(), json!(false));
            // In a merge patch, null removes a member (back to its default).
            for prop in o
                .get_mut("properties")
                .and_then(Value::as_object_mut)
                .into_iter()
                .flat_map(|p| p.values_mut())
            {
                *prop = json!({"anyOf": [prop.take(), {"type": "null"}]});
            }
        }
        set(
            doc,
            "/paths/~1v1~1agents~1{id}~1config/patch/requestBody/content",
            json!({"application/json": {"schema": config}}),
        );
    }
    agent_task_shapes(doc);
}

/// Agent tasks (a payload per kind) and schedules.
fn agent_task_shapes(doc: &mut Value) {
    // agent::tasks::validate: each kind has its payload.
    // RFC 6902 operations: a JSON Pointer is empty or starts with `/`.
    let pointer = json!({"type": "string", "pattern": "^(/([^~]|~[01])*)*$"});
    let op = json!({"oneOf": [
        {"type": "object", "required": ["op", "path", "value"], "properties": {
            "op": {"enum": ["add", "replace", "test"]}, "path": pointer, "value": {}}},
        {"type": "object", "required": ["op", "path"], "properties": {
            "op": {"enum": ["remove"]}, "path": pointer}},
        {"type": "object", "required": ["op", "path", "from"], "properties": {
            "op": {"enum": ["move", "copy"]}, "path": pointer, "from": pointer}}]});
    let kind = |k: &str, payload: Value| {
        json!({"type": "object", "required": ["kind", "payload"], "properties": {
            "kind": {"type": "string", "enum": [k]}, "payload": payload}})
    };
    set(
        doc,
        "/components/schemas/TaskSpec",
        json!({"description": "A task: its kind and input.", "oneOf": [
            kind("state.patch", json!({"type": "object", "required": ["patch"], "properties": {
                "patch": {"oneOf": [{"type": "object"}, {"type": "array", "items": op}]}}})),
            kind("chat", json!({"type": "object", "required": ["message"], "properties": {
                "message": {"type": "string", "pattern": "\\S"},
                "conversation_id": {"type": ["string", "null"]}}})),
            kind("summarize", json!({"type": "object", "required": ["conversation_id"],
                "properties": {"conversation_id": {"type": "string"}}})),
            kind("http", json!({"type": "object", "required": ["url"], "properties": {
                "url": {"type": "string",
                        "pattern": "^https?://[a-z][a-z0-9]*(\\.[a-z][a-z0-9]*)*(:[1-9][0-9]{0,3})?(/[a-z0-9]*)*$"},
                "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", null]},
                "body": {}}})),
        ]}),
    );
    // agent::tasks::new_schedule: exactly one of `at`, `after_secs`, `cron`.
    if let Some(o) = doc
        .pointer_mut("/components/schemas/ScheduleRequest")
        .and_then(Value::as_object_mut)
    {
        o.insert(
            "oneOf".into(),
            // (an absent member and `null` are the same to the server)
            json!([
                {"required": ["at"], "properties": {"at": {"type": "string", "format": "date-time"},
                    "after_secs": {"type": "null"}, "cron": {"type": "null"}}},
                {"required": ["after_secs"], "properties": {"after_secs": {"type": "number", "minimum": 0, "maximum": 31_536_000},
                    "at": {"type": "null"}, "cron": {"type": "null"}}},
                {"required": ["cron"], "properties": {"cron": {"type": "string", "pattern": SCHEDULE},
                    "at": {"type": "null"}, "after_secs": {"type": "null"}}}
            ]),
        );
    }
}

/// Uploads, reindex and workflow events, usage grouping, unknown models.
fn upload_and_workflow_shapes(doc: &mut Value) {
    // api::documents::read_multipart: `file` parts and one optional `metadata` JSON part.
    set(
        doc,
        "/paths/~1v1~1kbs~1{kb}~1documents/post/requestBody/content/multipart~1form-data/schema",
        json!({"type": "object", "required": ["file"], "additionalProperties": false,
               "properties": {
                   // A schema can only describe the text files; a PDF's bytes are binary.
                   "file": {"type": "string", "minLength": 1,
                       "pattern": "^[^\\u0000-\\u0008\\u000e-\\u0019\\u001c-\\u001f]+$",
                       "description":
                       "A document: Markdown, HTML or plain text (UTF-8 or Latin-1) with no \
                        control characters but tab, line breaks, form feed, SUB and ESC \
                        (ingest::detect), or a PDF (binary, `application/pdf`). Images and \
                        other binaries are refused (415) on their own."},
                   "metadata": {"type": "object", "description": "Applied to every file."}}}),
    );
    set(
        doc,
        "/paths/~1v1~1kbs~1{kb}~1documents/post/requestBody/content/multipart~1form-data/encoding",
        json!({"metadata": {"contentType": "application/json"}}),
    );
    // api::workflows::reindex: no body means the knowledge base's own model and chunking.
    set(
        doc,
        "/paths/~1v1~1kbs~1{kb}~1reindex/post/requestBody/required",
        json!(false),
    );
    // api::workflows::send_event: the payload is any JSON value; an empty body is `null`.
    set(
        doc,
        "/paths/~1v1~1workflows~1{id}~1events~1{name}/post/requestBody",
        json!({"required": false, "description": "The payload the run receives: any JSON value.",
               "content": {"application/json": {"schema": {}}}}),
    );
    // service::workflows::send_workflow_event: event names are 1-64 characters.
    if let Some(params) = doc
        .pointer_mut("/paths/~1v1~1workflows~1{id}~1events~1{name}/post/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params.iter_mut().filter(|p| p["name"] == "name") {
            p["schema"] = json!({"type": "string", "minLength": 1, "maxLength": 64});
        }
    }
    // api::gateway::usage: `group_by` is a comma list of these.
    if let Some(params) = doc
        .pointer_mut("/paths/~1v1~1gateway~1usage/get/parameters")
        .and_then(Value::as_array_mut)
    {
        for p in params.iter_mut().filter(|p| p["name"] == "group_by") {
            p["schema"] = json!({"type": "string",
                "pattern": "^((day|model|key|user|agent|route)(,(day|model|key|user|agent|route))*)?$"});
        }
    }
    // service::models::resolve: an unknown embedding model is 404, like a gateway model.
    for path in [
        "/paths/~1v1~1kbs/post/responses",
        "/paths/~1v1~1kbs~1{kb}~1reindex/post/responses",
    ] {
        if let Some(r) = doc.pointer_mut(path).and_then(Value::as_object_mut) {
            r.entry("404")
                .or_insert(json!({"description": "no such embedding model"}));
        }
    }
}

/// Every `{id}` under /v1/agents is an agent id.
fn agent_id_pattern(doc: &mut Value) {
    // agent::Agents::key: every `{id}` under /v1/agents.
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            if !path.starts_with("/v1/agents/{id}") {
                continue;
            }
            for op in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                for param in op
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if param["in"] == "path" && param["name"] == "id" {
                        param["schema"] = json!({"type": "string", "pattern": AGENT_ID});
                    }
                }
            }
        }
    }
}

/// Unsigned integers are what serde reads: 0 up to the type's maximum (the `int32`/`int64`
/// formats would claim a signed range the server does not have).
fn unsigned_bounds(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let unsigned = o.get("type").is_some_and(|t| {
                t == "integer"
                    || t.as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "integer"))
            }) && o
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| m >= 0.0);
            if unsigned {
                let max = match o.get("format").and_then(Value::as_str) {
                    Some("int32") => Some(json!(u32::MAX)),
                    Some("int64") => Some(json!(u64::MAX)),
                    _ => None,
                };
                if let Some(max) = max {
                    o.remove("format");
                    o.entry("maximum").or_insert(max);
                }
            }
            o.values_mut().for_each(unsigned_bounds);
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned_bounds),
        _ => {}
    }
}

/// Makes every operation list the errors it can answer, the way the API answers them (one
/// place, so no handler can forget one): `application/problem+json` bodies; 401, 403, 429 and
/// 503 on authenticated routes (no key, a missing scope, a rate limit, stopping); 404 and 422
/// where a path names something (absent, or an id that cannot be one); 422 for bad query
/// parameters; 400, 413, 415 and 422 where a body is read (malformed, too large, wrong content
/// type, wrong shape); 500 everywhere. Public routes need no key.
fn errors_as_answered(doc: &mut Value) {
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let public = PUBLIC.contains(&path.as_str());
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            if public {
                op.insert("security".into(), json!([]));
            }
            let params = op.get("parameters").and_then(Value::as_array);
            let has_query = params.is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let mut codes = vec![500];
            if !public {
                codes.extend([401, 403, 429, 503]);
            }
            if path.contains('{') {
                codes.extend([404, 422]);
            }
            if has_query {
                codes.push(422);
            }
            if op.contains_key("requestBody") {
                codes.extend([400, 413, 415, 422]);
            }
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            let Some(responses) = responses else {
                continue;
            };
            for code in codes {
                responses.entry(code.to_string()).or_insert_with(|| {
                    let reason = axum::http::StatusCode::from_u16(code)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("Error");
                    json!({"description": reason})
                });
            }
            for (code, r) in responses.iter_mut() {
                if !(code.starts_with('4') || code.starts_with('5')) {
                    continue;
                }
                // An error documented with another body (readiness answers its own) keeps it.
                let own = r
                    .get("content")
                    .and_then(|c| c.get("application/json"))
                    .and_then(|c| c.get("schema"))
                    .is_some_and(|s| *s != problem);
                if !own {
                    r["content"] = json!({"application/problem+json": {"schema": problem}});
                }
            }
        }
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<Value> {
    Json(document())
}
