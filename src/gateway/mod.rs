//! The model gateway: the one place every model call passes through — local candle models
//! (a GGUF chat model, the embedder) and remote providers (OpenAI, Anthropic, any
//! OpenAI-compatible server).
//!
//! A call is resolved to a route (an alias with ordered targets, or one `provider/model`),
//! checked by the prompt guardrails, answered from the response cache when it may be, charged
//! against the budgets by an atomic reservation, sent with per-attempt timeouts, retried with
//! backoff and moved to the next target on the failures the route names, scanned by the answer
//! guardrails (streams through a sliding window), settled, logged (SQLite via a writer thread,
//! a `tracing` span, Prometheus metrics) and returned whole or as a stream of deltas.
//!
//! Owns providers, routes, cache, budgets, guardrails and the call log. It must never speak
//! HTTP to its own clients (the `api` module does) and never log credentials.

pub mod budget;
pub mod cache;
mod chat;
pub mod config;
mod error;
pub mod guard;
pub mod local;
mod log;
pub mod providers;
mod rerank;
pub mod route;
mod tokens;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;

pub use chat::{ChatReply, ReplyMeta, StreamEvent, StreamEvents};
pub use config::GatewayConfig;
pub use error::{GatewayError, Result};
pub use rerank::MAX_DOCUMENTS as MAX_RERANK_DOCUMENTS;

use budget::{Budgets, Refused, Subjects};
use config::{Price, ProviderKind};
use guard::Guardrails;
use local::LocalChat;
use log::LogWriter;
use providers::{Provider, ProviderError};
use route::{Route, Target};
use types::{EmbeddingOutput, EmbeddingRequest};

use crate::embed::Embedder;
use crate::error::Classify;
use crate::store::gateway::{CallLog, GatewayStore, LogQuery, UsageGroup, UsageRow};
use crate::store::Page;
use crate::supervisor::Supervisor;

/// What a one-shot call's answer bills: its tokens, and the model that answered.
trait Billed {
    fn tokens(&self) -> u32;
    fn model(&self) -> &str;
}

impl Billed for EmbeddingOutput {
    fn tokens(&self) -> u32 {
        self.prompt_tokens
    }
    fn model(&self) -> &str {
        &self.model
    }
}

impl Billed for types::RerankOutput {
    fn tokens(&self) -> u32 {
        self.tokens
    }
    fn model(&self) -> &str {
        &self.model
    }
}

/// Name of the local chat model in routes (`local/smollm2-135m-instruct`).
pub const LOCAL_CHAT_MODEL: &str = "smollm2-135m-instruct";
/// Name of the local embedding model in routes (`local/all-minilm-l6-v2`).
pub const LOCAL_EMBED_MODEL: &str = "all-minilm-l6-v2";

/// How a request treats the cache (`X-Groundwork-Cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Use it for deterministic requests (or as the route allows).
    #[default]
    Default,
    /// Neither read nor write.
    Bypass,
    /// Do not read; write the fresh answer.
    Refresh,
    /// Read and write even for a sampled request.
    Use,
}

/// Who is calling and how.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Request id (logs, `x-request-id`).
    pub request_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// API key id (`demo` without keys).
    pub key_id: String,
    /// End user.
    pub user: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// Cache behaviour.
    pub cache: CacheMode,
    /// Overrides payload logging for this call.
    pub log_payloads: Option<bool>,
    /// Most USD this call may cost (what is left of a caller's own limit, e.g. an agent's
    /// budget): a call whose worst case is above it is refused like an exhausted budget.
    pub spend_cap_usd: Option<f64>,
}

/// A model as `GET /v1/models` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// Route alias or `provider/model`.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds (start of this process).
    pub created: i64,
    /// `groundwork` for routes, else the provider's name.
    pub owned_by: String,
}

struct Inner {
    /// Starts the calls detached from their callers (a stream's producer, a completion).
    supervisor: Supervisor,
    config: GatewayConfig,
    providers: HashMap<String, Arc<Provider>>,
    routes: BTreeMap<String, Route>,
    /// Model names answered by a route or `provider/model` (`config::DEFAULT_ALIASES` and
    /// `gateway.aliases`).
    aliases: BTreeMap<String, String>,
    guard: Guardrails,
    budgets: Budgets,
    store: Arc<dyn GatewayStore>,
    log: LogWriter,
    local_chat: Arc<LocalChat>,
    started: i64,
    /// Cache hits and lookups since start (for the hit-ratio gauge).
    cache_stats: (AtomicU64, AtomicU64),
}

/// The gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

fn api_key(name: &str, c: &config::ProviderConfig) -> Option<String> {
    if let Some(k) = &c.api_key {
        return Some(k.0.clone());
    }
    let var = c.api_key_env.clone().or_else(|| match c.kind {
        ProviderKind::Openai => Some("OPENAI_API_KEY".to_owned()),
        ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY".to_owned()),
        ProviderKind::Cohere => Some("COHERE_API_KEY".to_owned()),
        ProviderKind::Jina => Some("JINA_API_KEY".to_owned()),
        ProviderKind::Voyage => Some("VOYAGE_API_KEY".to_owned()),
        ProviderKind::OpenaiCompatible | ProviderKind::Tei => None,
    })?;
    let key = std::env::var(&var).ok().filter(|k| !k.is_empty());
    if key.is_none() && !matches!(c.kind, ProviderKind::OpenaiCompatible | ProviderKind::Tei) {
        tracing::warn!(provider = name, env = %var, "no API key for provider");
    }
    key
}

/// How long a reservation of a replica that died before settling it holds the money.
const BUDGET_HOLD: std::time::Duration = std::time::Duration::from_secs(600);

impl Gateway {
    /// Releases budget reservations whose replica died before settling them (shared stores;
    /// housekeeping calls it every minute).
    pub fn expire_budget_holds(&self) {
        self.inner.budgets.expire_holds();
    }

    /// Builds the providers, starts the local chat model thread and the log writer.
    /// `root` resolves the default local model folder. `replica` is this process's id when
    /// the store is shared by several replicas: budgets are then counted in the store.
    pub fn new(
        config: GatewayConfig,
        store: Arc<dyn GatewayStore>,
        embedder: Arc<dyn Embedder>,
        root: &Path,
        supervisor: Supervisor,
        replica: Option<&str>,
    ) -> Result<Self> {
        config.validate().map_err(GatewayError::Invalid)?;
        let guard = config.guardrails.compile().map_err(GatewayError::Invalid)?;
        let chat_path = config
            .local_chat_model
            .clone()
            .unwrap_or_else(|| root.join("models").join("SmolLM2-135M-Instruct"));
        let local_chat = Arc::new(LocalChat::start(
            &chat_path,
            config.local_queue,
            config.local_context_tokens,
            config.local_repeat_penalty,
            config.local_engine,
            &supervisor,
        ));
        let mut rerankers = BTreeMap::new();
        for (name, dir) in &config.local_rerankers {
            let ce = crate::embed::CrossEncoder::load(&root.join(dir)).map_err(|e| {
                GatewayError::Invalid(format!("gateway.local_rerankers.{name}: {e}"))
            })?;
            tracing::info!(reranker = %name, model = ce.model_id(), "local reranker loaded");
            rerankers.insert(name.clone(), Arc::new(ce));
        }
        let mut providers = HashMap::new();
        providers.insert(
            "local".to_owned(),
            Arc::new(Provider::Local(
                providers::local::Local::new(
                    local_chat.clone(),
                    LOCAL_CHAT_MODEL,
                    embedder,
                    LOCAL_EMBED_MODEL,
                )
                .with_rerankers(rerankers),
            )),
        );
        for (name, p) in &config.providers {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(p.max_idle_connections)
                .tcp_nodelay(true)
                .build()
                .map_err(|e| GatewayError::Invalid(format!("HTTP client: {e}")))?;
            let key = api_key(name, p);
            let provider = match p.kind {
                ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
                    Provider::OpenAi(providers::openai::OpenAi::new(
                        http,
                        p.base_url.as_deref().unwrap_or("https://api.openai.com/v1"),
                        key,
                        p.kind == ProviderKind::Openai,
                    ))
                }
                ProviderKind::Anthropic => {
                    Provider::Anthropic(providers::anthropic::Anthropic::new(
                        http,
                        p.base_url
                            .as_deref()
                            .unwrap_or("https://api.anthropic.com/v1"),
                        key,
                    ))
                }
                ProviderKind::Cohere
                | ProviderKind::Jina
                | ProviderKind::Voyage
                | ProviderKind::Tei => {
                    use providers::rerank::{Flavor, RerankApi};
                    let (flavor, base) = match p.kind {
                        ProviderKind::Cohere => (Flavor::Cohere, "https://api.cohere.com/v2"),
                        ProviderKind::Jina => (Flavor::Jina, "https://api.jina.ai/v1"),
                        ProviderKind::Voyage => (Flavor::Voyage, "https://api.voyageai.com/v1"),
                        _ => (Flavor::Tei, ""),
                    };
                    let base = p.base_url.as_deref().unwrap_or(base);
                    Provider::Rerank(RerankApi::new(http, base, key, flavor))
                }
            };
            providers.insert(name.clone(), Arc::new(provider));
        }
        let routes = config
            .routes
            .iter()
            .map(|(n, c)| (n.clone(), Route::from_config(n, c)))
            .collect();
        let loader_store = store.clone();
        let mut budgets = Budgets::new(
            config.budgets.clone(),
            Box::new(move |column, subject, since| {
                loader_store
                    .spend_since(column, subject, since)
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "cannot read past spend; counting from 0");
                        0.0
                    })
            }),
        );
        if let Some(holder) = replica {
            budgets = budgets.shared(budget::Shared {
                store: store.clone(),
                holder: holder.to_owned(),
                hold_for: BUDGET_HOLD,
            });
        }
        let log = LogWriter::start(store.clone(), 8192, &supervisor);
        Ok(Self {
            inner: Arc::new(Inner {
                aliases: config.aliases(),
                config,
                providers,
                routes,
                guard,
                budgets,
                store,
                log,
                local_chat,
                started: Utc::now().timestamp(),
                cache_stats: (AtomicU64::new(0), AtomicU64::new(0)),
                supervisor,
            }),
        })
    }

    /// Stops the local model and flushes the call log.
    pub fn shutdown(&self) {
        self.inner.local_chat.shutdown();
        self.inner.log.shutdown();
    }

    /// The compiled guardrails (e.g. to check retrieved passages for injected instructions).
    pub fn guardrails(&self) -> &Guardrails {
        &self.inner.guard
    }

    /// True when `model` names a route, a model alias or a configured `provider/model`.
    pub fn knows_model(&self, model: &str) -> bool {
        self.route(model).is_ok()
    }

    /// True when route (or `provider/model`) `model` first tries a local model.
    pub fn route_is_local(&self, model: &str) -> bool {
        self.route(model)
            .ok()
            .and_then(|r| r.targets.first().map(|t| t.provider == "local"))
            .unwrap_or(false)
    }

    /// Resolves a request's `model`: a route, a model alias, or `provider/model`.
    fn route(&self, model: &str) -> Result<Route> {
        let model = self.inner.aliases.get(model).map_or(model, String::as_str);
        if let Some(r) = self.inner.routes.get(model) {
            return Ok(r.clone());
        }
        let target = Target::parse(model)
            .filter(|t| self.inner.providers.contains_key(&t.provider))
            .ok_or_else(|| GatewayError::UnknownModel(model.to_owned()))?;
        Ok(Route {
            name: model.to_owned(),
            targets: vec![target],
            budget_fallback: None,
            policy: config::RouteConfig {
                targets: vec![model.to_owned()],
                ..config::RouteConfig::default()
            },
        })
    }

    fn provider(&self, t: &Target) -> Result<&Arc<Provider>> {
        self.inner
            .providers
            .get(&t.provider)
            .ok_or_else(|| GatewayError::UnknownModel(t.label()))
    }

    /// Price of a target's model.
    fn price(&self, t: &Target) -> Price {
        let p = &self.inner.config.prices;
        if let Some(p) = p.get(&t.label()).or_else(|| p.get(&t.model)) {
            return *p;
        }
        if t.provider == "local" {
            Price {
                input: 0.0,
                output: 0.0,
            }
        } else {
            self.inner.config.default_price
        }
    }

    /// Routes and configured targets.
    pub fn models(&self) -> Vec<ModelInfo> {
        let mut out: Vec<ModelInfo> = self
            .inner
            .routes
            .keys()
            .map(|id| ModelInfo {
                id: id.clone(),
                object: "model",
                created: self.inner.started,
                owned_by: "groundwork".into(),
            })
            .collect();
        out.extend(self.inner.aliases.keys().map(|id| ModelInfo {
            id: id.clone(),
            object: "model",
            created: self.inner.started,
            owned_by: "groundwork".into(),
        }));
        let mut targets: Vec<String> = vec![
            format!("local/{LOCAL_CHAT_MODEL}"),
            format!("local/{LOCAL_EMBED_MODEL}"),
        ];
        for r in self.inner.routes.values() {
            targets.extend(r.targets.iter().map(Target::label));
        }
        targets.sort();
        targets.dedup();
        out.extend(targets.into_iter().map(|id| ModelInfo {
            owned_by: id.split('/').next().unwrap_or_default().to_owned(),
            id,
            object: "model",
            created: self.inner.started,
        }));
        out
    }

    /// Embeddings through the route's targets (retries and fallback as for chat).
    pub async fn embeddings(
        &self,
        ctx: CallContext,
        req: EmbeddingRequest,
    ) -> Result<EmbeddingOutput> {
        let started = Instant::now();
        let route = self.route(&req.model)?;
        if !(1..=2048).contains(&req.input.count()) {
            return Err(GatewayError::Invalid(
                "input must hold 1 to 2048 texts".into(),
            ));
        }
        if req.dimensions == Some(0) {
            return Err(GatewayError::Invalid(
                "dimensions must be at least 1".into(),
            ));
        }
        let inputs = if tokens::has_ids(&req.input) {
            let (model, input) = (req.model.clone(), req.input);
            tokio::task::spawn_blocking(move || tokens::texts(&model, input))
                .await
                .map_err(|e| GatewayError::Invalid(format!("token ids: {e}")))??
        } else {
            tokens::texts(&req.model, req.input)?
        };
        // A token is at least a byte: the prompt's bytes bound what it can cost.
        let bytes: usize = inputs.iter().map(|t| t.len() + 2).sum();
        let mut out: EmbeddingOutput = self
            .one_shot(&ctx, &route, "embeddings", bytes, started, |p, model| {
                let inputs = inputs.clone();
                async move { p.embed(&model, inputs).await }
            })
            .await?;
        if let Some(d) = req.dimensions {
            out.shorten(d).map_err(GatewayError::Invalid)?;
        }
        Ok(out)
    }

    /// A call answered in one piece (embeddings, rerank) through `route`: the worst case
    /// (`bytes` of input priced as tokens) reserved against the budgets, the targets tried in
    /// order with the route's retries and fallback (an attempt longer than the route's
    /// `total_timeout_ms` is a timeout), the cost of the tokens billed settled, and the call
    /// logged as `kind`.
    async fn one_shot<T, F, Fut>(
        &self,
        ctx: &CallContext,
        route: &Route,
        kind: &str,
        bytes: usize,
        started: Instant,
        call: F,
    ) -> Result<T>
    where
        T: Billed,
        F: Fn(Arc<Provider>, String) -> Fut,
        Fut: std::future::Future<Output = providers::Result<T>>,
    {
        let who = subjects(ctx, route);
        let worst = route
            .targets
            .iter()
            .map(|t| self.price(t).input * bytes as f64 / 1e6)
            .fold(0.0, f64::max);
        let reservation = match self.inner.budgets.reserve(&who, worst) {
            Ok(r) => r,
            Err(Refused::Exceeded(e)) => {
                self.log_refusal(ctx, route, kind, "budget_exceeded", started)
                    .await;
                return Err(GatewayError::BudgetExceeded(e));
            }
            Err(Refused::Store(e)) => return Err(GatewayError::Store(e)),
        };
        let mut attempts = Vec::new();
        let mut last: Option<ProviderError> = None;
        'targets: for target in &route.targets {
            let provider = self.provider(target)?.clone();
            for n in 0..=route.policy.retries {
                let t0 = Instant::now();
                let limit = std::time::Duration::from_millis(route.policy.total_timeout_ms);
                let answer =
                    tokio::time::timeout(limit, call(provider.clone(), target.model.clone()))
                        .await
                        .unwrap_or_else(|_| {
                            Err(ProviderError::new(
                                route::FailureKind::Timeout,
                                format!("no answer within {} ms", limit.as_millis()),
                            ))
                        });
                match answer {
                    Ok(out) => {
                        attempts.push(chat::attempt_json(target, None, t0));
                        let cost = self.price(target).input * f64::from(out.tokens()) / 1e6;
                        self.inner.budgets.settle(reservation, cost);
                        let mut log = self.call_log(ctx, &route.name, kind, started);
                        log.provider = Some(target.provider.clone());
                        log.model = Some(out.model().to_owned());
                        log.status = "ok".into();
                        log.attempts = serde_json::Value::Array(attempts);
                        log.tokens_in = out.tokens();
                        log.cost_usd = cost;
                        self.inner.log.record(log).await;
                        return Ok(out);
                    }
                    Err(e) => {
                        attempts.push(chat::attempt_json(target, Some(&e), t0));
                        let failure = e.kind;
                        last = Some(e);
                        match route.after_failure(target, failure, n).await {
                            route::Next::Retry => continue,
                            route::Next::NextTarget => break,
                            route::Next::Stop => break 'targets,
                        }
                    }
                }
            }
        }
        self.inner.budgets.settle(reservation, 0.0);
        let last = last.unwrap_or_else(|| {
            ProviderError::new(route::FailureKind::Server, "no target was tried")
        });
        let err = GatewayError::Upstream {
            kind: last.kind,
            message: last.message.clone(),
            attempts: attempts.len(),
        };
        let mut log = self.call_log(ctx, &route.name, kind, started);
        log.status = "error".into();
        log.error = Some(err.code().into());
        log.attempts = serde_json::Value::Array(attempts);
        self.inner.log.record(log).await;
        Err(err)
    }

    /// A log record with the caller and route filled in.
    fn call_log(&self, ctx: &CallContext, route: &str, kind: &str, started: Instant) -> CallLog {
        CallLog {
            id: ctx.request_id.clone(),
            tenant_id: ctx.tenant_id.clone(),
            ts: Utc::now() - chrono::Duration::from_std(started.elapsed()).unwrap_or_default(),
            kind: kind.to_owned(),
            key_id: ctx.key_id.clone(),
            user_id: ctx.user.clone(),
            agent_id: ctx.agent.clone(),
            route: route.to_owned(),
            provider: None,
            model: None,
            status: "ok".into(),
            error: None,
            attempts: serde_json::Value::Array(Vec::new()),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            ttft_ms: None,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.0,
            cache: "off".into(),
            guardrails: serde_json::Value::Array(Vec::new()),
            stream: false,
            request: None,
            response: None,
        }
    }

    async fn log_refusal(
        &self,
        ctx: &CallContext,
        route: &Route,
        kind: &str,
        code: &str,
        started: Instant,
    ) {
        let mut log = self.call_log(ctx, &route.name, kind, started);
        log.status = code.to_owned();
        log.error = Some(code.to_owned());
        count_request(&route.name, code);
        self.inner.log.record(log).await;
    }

    /// Embeds `texts` with a local `embedder` on the calling (blocking) thread for the service
    /// itself — ingest and query embeddings, which must not take an async detour — recorded
    /// like any gateway call: route `internal/<purpose>`, provider `local`, cost 0, no payload.
    pub fn embed_internal(
        &self,
        tenant_id: &str,
        purpose: &'static str,
        embedder: &dyn Embedder,
        texts: &[&str],
    ) -> crate::embed::Result<Vec<Vec<f32>>> {
        let started = Instant::now();
        let out = embedder.embed(texts);
        self.log_internal_embedding(tenant_id, purpose, embedder, texts, started, &out);
        out
    }

    /// Embeds one search query ahead of bulk work (batched with concurrent queries), logged
    /// as [`Gateway::embed_internal`] logs.
    pub fn embed_query_internal(
        &self,
        tenant_id: &str,
        purpose: &'static str,
        embedder: &dyn Embedder,
        query: &str,
    ) -> crate::embed::Result<Vec<f32>> {
        let started = Instant::now();
        let out = embedder.embed_query(query);
        self.log_internal_embedding(tenant_id, purpose, embedder, &[query], started, &out);
        out
    }

    fn log_internal_embedding<T>(
        &self,
        tenant_id: &str,
        purpose: &'static str,
        embedder: &dyn Embedder,
        texts: &[&str],
        started: Instant,
        out: &crate::embed::Result<T>,
    ) {
        let ctx = CallContext {
            request_id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant_id.to_owned(),
            key_id: "service".into(),
            ..CallContext::default()
        };
        let route = format!("internal/{purpose}");
        let mut log = self.call_log(&ctx, &route, "embeddings", started);
        log.provider = Some("local".into());
        log.model = Some(embedder.model_id().to_owned());
        log.tokens_in = texts.iter().map(|t| providers::estimate_tokens(t)).sum();
        match out {
            Ok(_) => log.status = "ok".into(),
            Err(e) => {
                log.status = "error".into();
                log.error = Some(e.to_string());
            }
        }
        count_request(&route, &log.status);
        self.inner.log.record_blocking(log);
    }

    /// A page of the call log.
    pub fn calls(&self, q: &LogQuery) -> Result<Page<CallLog>> {
        Ok(self.inner.store.calls(q)?)
    }

    /// Usage aggregates.
    pub fn usage(
        &self,
        tenant_id: &str,
        since: Option<chrono::DateTime<Utc>>,
        until: Option<chrono::DateTime<Utc>>,
        group: &[UsageGroup],
    ) -> Result<Vec<UsageRow>> {
        Ok(self.inner.store.usage(tenant_id, since, until, group)?)
    }
}

fn subjects(ctx: &CallContext, route: &Route) -> Subjects {
    Subjects {
        key: ctx.key_id.clone(),
        user: ctx.user.clone(),
        agent: ctx.agent.clone(),
        route: route.name.clone(),
    }
}

/// Counts a finished request by route and status (`groundwork_gateway_requests_total`).
fn count_request(route: &str, status: &str) {
    metrics::counter!("groundwork_gateway_requests_total", "route" => route.to_owned(), "status" => status.to_owned()).increment(1);
}
