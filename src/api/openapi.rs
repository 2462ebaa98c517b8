//! The OpenAPI 3 description of the HTTP API, generated from the handlers' annotations so it
//! cannot drift from the code.

use axum::Json;
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
        kbs::create, kbs::list, kbs::get, kbs::delete, kbs::search,
        documents::upload, documents::list, documents::get, documents::chunks, documents::delete,
        workflows::list, workflows::get, workflows::cancel, workflows::retry, workflows::send_event,
        workflows::events, workflows::reindex, workflows::add_source, workflows::list_sources,
        workflows::delete_source, workflows::sync_source,
        gateway::chat_completions, gateway::embeddings, gateway::models, gateway::logs,
        gateway::usage,
        agents::list, agents::get, agents::delete, agents::get_state, agents::put_state,
        agents::patch_state, agents::get_config, agents::put_config, agents::patch_config,
        agents::chat, agents::resume, agents::conversations, agents::messages, agents::enqueue,
        agents::tasks, agents::task, agents::schedule, agents::schedules, agents::delete_schedule,
        agents::ws,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
