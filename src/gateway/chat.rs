//! One chat call through the gateway: validation, prompt guardrails, cache, budget
//! reservation, attempts with retries and fallback, answer guardrails, settlement, logging.
//!
//! Every call runs in its own task, so a client that goes away never leaves a reservation
//! open or a call unlogged. A stream that breaks after text was sent is resumed on the next
//! attempt by skipping the part of the new answer that repeats what the client already has;
//! if the new answer differs from it, the stream ends with `stream_interrupted` rather than
//! sending the client text twice or a garbled mix.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::budget::Reservation;
use super::cache;
use super::guard::{Decision, StreamGuard};
use super::providers::{completion_token_bound, prompt_token_bound, Call, Provider, ProviderError};
use super::route::{FailureKind, Next, Route, Target};
use super::types::{ChatOutput, ChatRequest, Delta, FinishReason, Usage};
use super::{count_request, subjects, CacheMode, CallContext, Gateway, GatewayError, Result};
use crate::error::Classify;
use crate::store::gateway::{CacheEntry, CallLog};

/// What the client gets back.
#[derive(Debug, Clone)]
pub struct ReplyMeta {
    /// Request id.
    pub request_id: String,
    /// Route name.
    pub route: String,
    /// `hit`, `miss`, `bypass`, `refresh` or `off`.
    pub cache: &'static str,
    /// Unix seconds.
    pub created: i64,
}

/// One event of a streamed answer.
#[derive(Debug)]
pub enum StreamEvent {
    /// Text to append.
    Text(String),
    /// The end.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
        /// The model that answered.
        model: String,
        /// What the call cost, USD.
        cost_usd: f64,
    },
    /// The stream failed after it started.
    Error(GatewayError),
}

/// An answer.
#[derive(Debug)]
pub enum ChatReply {
    /// A whole answer.
    Complete {
        /// The answer.
        output: ChatOutput,
        /// About the call.
        meta: ReplyMeta,
    },
    /// A streamed answer.
    Stream {
        /// Its events (the first already received).
        events: StreamEvents,
        /// About the call.
        meta: ReplyMeta,
    },
}

/// The events of a streamed answer, in order.
#[derive(Debug)]
pub struct StreamEvents {
    first: Option<StreamEvent>,
    rest: mpsc::Receiver<StreamEvent>,
}

impl StreamEvents {
    fn new(first: StreamEvent, rest: mpsc::Receiver<StreamEvent>) -> Self {
        Self {
            first: Some(first),
            rest,
        }
    }

    /// The next event; `None` once the call has nothing more to say.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        match self.first.take() {
            Some(e) => Some(e),
            None => self.rest.recv().await,
        }
    }
}

impl ChatReply {
    /// The answer as events whichever way it came: a whole answer is its text, then its end.
    pub fn into_events(self) -> (StreamEvents, ReplyMeta) {
        match self {
            ChatReply::Stream { events, meta } => (events, meta),
            ChatReply::Complete { output, meta } => {
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(StreamEvent::Done {
                    finish_reason: output.finish_reason,
                    usage: output.usage,
                    model: output.model,
                    cost_usd: output.cost_usd,
                });
                (StreamEvents::new(StreamEvent::Text(output.text), rx), meta)
            }
        }
    }
}

/// An attempt as logged.
pub(crate) fn attempt_json(
    t: &Target,
    err: Option<&ProviderError>,
    started: Instant,
) -> serde_json::Value {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match err {
        None => json!({"target": t.label(), "outcome": "ok", "ms": ms}),
        Some(e) => json!({
            "target": t.label(),
            "outcome": e.kind.as_str(),
            "status": e.status,
            "error": e.message,
            "ms": ms,
        }),
    }
}

fn validate(req: &ChatRequest) -> Result<()> {
    let bad = |m: &str| Err(GatewayError::Invalid(m.to_owned()));
    if req.messages.is_empty() {
        return bad("messages must not be empty");
    }
    if req.n.is_some_and(|n| n != 1) {
        return bad("only n = 1 is supported");
    }
    if req.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return bad("temperature must be between 0 and 2");
    }
    // (0, 1]; the smallest mass kept is 1e-30, above what f32 rounds to zero.
    if req.top_p.is_some_and(|p| !((1.0e-30..=1.0).contains(&p))) {
        return bad("top_p must be within 1e-30..=1");
    }
    if req.max_tokens() == Some(0) {
        return bad("max_tokens must be positive");
    }
    if req
        .stop
        .as_ref()
        .is_some_and(|s| s.to_vec().len() > 4 || s.to_vec().iter().any(String::is_empty))
    {
        return bad("stop takes at most 4 non-empty sequences");
    }
    Ok(())
}

/// Everything a call needs once admitted.
struct Run {
    gw: Gateway,
    ctx: CallContext,
    route: Route,
    targets: Vec<Target>,
    call: Call,
    reservation: Reservation,
    cache_key: Option<String>,
    cache_label: &'static str,
    decisions: Vec<Decision>,
    prompt_tokens: u32,
    started: Instant,
    request_log: Option<serde_json::Value>,
    stream: bool,
}

/// What a streamed call keeps across its attempts and targets.
struct Streamed<'g> {
    /// The output guard over the answer.
    sg: StreamGuard<'g>,
    /// Provider text consumed so far.
    raw: String,
    /// Bytes of `raw` the current attempt has repeated.
    matched: usize,
    /// Text the client got.
    sent: String,
    /// Time to the first text sent, ms.
    ttft: Option<f64>,
    /// Every attempt, for the log.
    attempts: Vec<serde_json::Value>,
    /// The last attempt's failure.
    last: Option<ProviderError>,
}

impl<'g> Streamed<'g> {
    fn new(sg: StreamGuard<'g>) -> Self {
        Self {
            sg,
            raw: String::new(),
            matched: 0,
            sent: String::new(),
            ttft: None,
            attempts: Vec::new(),
            last: None,
        }
    }

    /// Forgets the text consumed (none of it was sent) to start over with another answer.
    fn restart(&mut self) {
        self.sg.reset();
        self.raw.clear();
        self.matched = 0;
    }
}

/// How one streaming attempt ended.
enum AttemptEnd {
    /// The answer is complete (or the guard ended it).
    Finished(FinishReason, Option<Usage>),
    /// The attempt failed; another may follow.
    Failed(ProviderError),
    /// A retry answered differently from text already sent: the stream cannot go on.
    Diverged(GatewayError),
}

/// What the log of a cache hit records.
struct Hit<'a> {
    route: &'a str,
    decisions: &'a [Decision],
    stream: bool,
    request_log: Option<serde_json::Value>,
    log_payloads: bool,
}

/// How an attempt loop ended without an answer.
struct Failed {
    error: GatewayError,
    attempts: Vec<serde_json::Value>,
}

impl Gateway {
    /// Most tokens a chat request can use: its prompt's byte bound plus its `max_tokens` (the
    /// route's default when absent). For per-minute token limits, taken before the call.
    pub fn token_bound(&self, req: &ChatRequest) -> u32 {
        let max = req.max_tokens().unwrap_or_else(|| {
            self.route(&req.model)
                .map(|r| r.policy.default_max_tokens)
                .unwrap_or(super::config::RouteConfig::default().default_max_tokens)
        });
        prompt_token_bound(&req.messages).saturating_add(max)
    }

    /// Answers a chat request, whole or streamed.
    pub async fn chat(&self, ctx: CallContext, req: ChatRequest) -> Result<ChatReply> {
        let started = Instant::now();
        validate(&req)?;
        let route = self.route(&req.model)?;
        let mut messages = req.messages.clone();
        let verdict = self.inner.guard.check_prompt(&mut messages);
        count_decisions(&verdict.decisions);
        let log_payloads = ctx
            .log_payloads
            .or(route.policy.log_payloads)
            .unwrap_or(self.inner.config.log_payloads);
        let request_log = log_payloads.then(|| {
            let mut r = serde_json::to_value(&req).unwrap_or_default();
            r["messages"] = serde_json::to_value(&messages).unwrap_or_default();
            r
        });
        if let Some(rule) = verdict.blocked {
            let mut log = self.call_log(&ctx, &route.name, "chat", started);
            log.status = "blocked".into();
            log.error = Some("guardrail_blocked".into());
            log.guardrails = serde_json::to_value(&verdict.decisions).unwrap_or_default();
            log.request = request_log;
            log.stream = req.stream;
            count_request(&route.name, "blocked");
            self.inner.log.record(log).await;
            return Err(GatewayError::Blocked(rule));
        }
        let call = Call {
            model: String::new(),
            messages,
            temperature: req.temperature,
            top_p: req.top_p,
            max_tokens: req.max_tokens().unwrap_or(route.policy.default_max_tokens),
            stop: req.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default(),
            seed: req.seed,
            first_byte: Duration::from_millis(route.policy.first_byte_timeout_ms),
        };
        let (request_id, route_name) = (ctx.request_id.clone(), route.name.clone());
        let meta = |cache: &'static str| ReplyMeta {
            request_id: request_id.clone(),
            route: route_name.clone(),
            cache,
            created: chrono::Utc::now().timestamp(),
        };

        let (cache_key, cache_label) = self.cache_plan(&ctx, &route, &req, &call);
        if let (Some(key), true) = (&cache_key, ctx.cache != CacheMode::Refresh) {
            if let Some(output) = self.cache_lookup(key).await {
                self.count_cache(true);
                let log = Hit {
                    route: &route.name,
                    decisions: &verdict.decisions,
                    stream: req.stream,
                    request_log,
                    log_payloads,
                };
                self.log_cache_hit(&ctx, log, &output, started).await;
                return Ok(replay(output, meta("hit"), req.stream));
            }
            self.count_cache(false);
        }

        let prompt_tokens = prompt_token_bound(&call.messages);
        let (reservation, targets) = match self.reserve(&ctx, &route, &call, prompt_tokens).await {
            Ok(r) => r,
            Err(super::budget::Refused::Exceeded(exceeded)) => {
                self.log_refusal(&ctx, &route, "chat", "budget_exceeded", started)
                    .await;
                return Err(GatewayError::BudgetExceeded(exceeded));
            }
            Err(super::budget::Refused::Store(e)) => return Err(GatewayError::Store(e)),
        };

        let run = Run {
            gw: self.clone(),
            ctx,
            route,
            targets,
            call,
            reservation,
            cache_key,
            cache_label,
            decisions: verdict.decisions,
            prompt_tokens,
            started,
            request_log,
            stream: req.stream,
        };
        self.dispatch(run, meta(cache_label)).await
    }

    /// Whether the answer may come from (and go to) the cache, under which key, and the
    /// label its log gets (`bypass`, `off`, `refresh` or `miss`).
    fn cache_plan(
        &self,
        ctx: &CallContext,
        route: &Route,
        req: &ChatRequest,
        call: &Call,
    ) -> (Option<String>, &'static str) {
        let cacheable = self.inner.config.cache.enabled
            && route.policy.cache_ttl_secs > 0
            && ctx.cache != CacheMode::Bypass
            && (req.deterministic()
                || route.policy.cache_nondeterministic
                || ctx.cache == CacheMode::Use);
        let key = cacheable.then(|| {
            cache::key(
                &route.name,
                &call.messages,
                call.temperature,
                call.top_p,
                call.max_tokens,
                &call.stop,
                call.seed,
            )
        });
        let label = match (cacheable, ctx.cache) {
            (false, CacheMode::Bypass) => "bypass",
            (false, _) => "off",
            (true, CacheMode::Refresh) => "refresh",
            (true, _) => "miss",
        };
        (key, label)
    }

    /// Runs the call in a supervised task: a stream answers once its first event is in (an
    /// error before any text is the call's error), a whole answer when it is complete.
    async fn dispatch(&self, run: Run, meta: ReplyMeta) -> Result<ChatReply> {
        let span = tracing::info_span!("gateway.call", request_id = %run.ctx.request_id, route = %run.route.name, stream = run.stream);
        if run.stream {
            let (tx, mut rx) = mpsc::channel(64);
            self.inner.supervisor.spawn(run.stream(tx).instrument(span));
            match rx.recv().await {
                Some(StreamEvent::Error(e)) => Err(e),
                Some(first) => Ok(ChatReply::Stream {
                    events: StreamEvents::new(first, rx),
                    meta,
                }),
                None => Err(GatewayError::Interrupted(
                    "the call ended without an answer".into(),
                )),
            }
        } else {
            match self
                .inner
                .supervisor
                .spawn(run.complete().instrument(span))
                .await
            {
                Ok(Ok(output)) => Ok(ChatReply::Complete { output, meta }),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(GatewayError::Interrupted(format!(
                    "the call task failed: {e}"
                ))),
            }
        }
    }

    /// Reserves the call's worst-case cost before any call: the route's targets, or its
    /// budget fallback when they do not fit. The local model's prompt is counted exactly by
    /// its own tokenizer and template, a remote one's bounded by the prompt's bytes, the
    /// answer by `max_tokens`; the caller's own cap applies first.
    async fn reserve(
        &self,
        ctx: &CallContext,
        route: &Route,
        call: &Call,
        prompt_tokens: u32,
    ) -> std::result::Result<(Reservation, Vec<Target>), super::budget::Refused> {
        let uses_local = route
            .targets
            .iter()
            .chain(route.budget_fallback.iter())
            .any(|t| t.provider == "local");
        let local_tokens = if uses_local {
            self.local_prompt_tokens(&call.messages).await
        } else {
            None
        };
        let prompt_of = |t: &Target| match (t.provider.as_str(), local_tokens) {
            ("local", Some(n)) => n,
            _ => prompt_tokens,
        };
        let estimate = |t: &Target| {
            let p = self.price(t);
            (p.input * prompt_of(t) as f64 + p.output * call.max_tokens as f64) / 1e6
        };
        let who = subjects(ctx, route);
        let worst = route.targets.iter().map(estimate).fold(0.0, f64::max);
        // The caller's own cap first (no shared state: its owner serialises its calls).
        let reserve = |amount: f64| match ctx.spend_cap_usd {
            Some(cap) if amount > 0.0 && amount > cap => {
                Err(super::budget::Refused::Exceeded(super::budget::Exceeded {
                    scope: super::budget::BudgetScope::Agent,
                    subject: ctx.agent.clone().unwrap_or_default(),
                    limit_usd: cap.max(0.0),
                    spent_usd: 0.0,
                    resets_at: None,
                }))
            }
            _ => self.inner.budgets.reserve(&who, amount),
        };
        match reserve(worst) {
            Ok(r) => Ok((r, route.targets.clone())),
            Err(exceeded) => {
                let fallback = route
                    .budget_fallback
                    .clone()
                    .and_then(|fb| reserve(estimate(&fb)).ok().map(|r| (r, vec![fb])));
                if fallback.is_some() {
                    tracing::info!(route = %route.name, "budget exhausted; using the route's budget fallback");
                }
                fallback.ok_or(exceeded)
            }
        }
    }

    /// The local model's exact prompt tokens (off the runtime), `None` when it cannot count
    /// them (the call itself will fail the same way; the byte bound stands in).
    async fn local_prompt_tokens(&self, messages: &[super::types::Message]) -> Option<u32> {
        let (chat, messages) = (self.inner.local_chat.clone(), messages.to_vec());
        match tokio::task::spawn_blocking(move || chat.prompt_tokens(&messages)).await {
            Ok(Ok(n)) => Some(n),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "local prompt not counted; using the byte bound");
                None
            }
            Err(_) => None,
        }
    }

    /// Logs a call answered from the cache.
    async fn log_cache_hit(
        &self,
        ctx: &CallContext,
        hit: Hit<'_>,
        output: &ChatOutput,
        started: Instant,
    ) {
        let mut log = self.call_log(ctx, hit.route, "chat", started);
        log.cache = "hit".into();
        log.model = Some(output.model.clone());
        log.tokens_in = output.usage.prompt_tokens;
        log.tokens_out = output.usage.completion_tokens;
        log.ttft_ms = Some(log.latency_ms);
        log.guardrails = serde_json::to_value(hit.decisions).unwrap_or_default();
        log.stream = hit.stream;
        log.request = hit.request_log;
        log.response = hit.log_payloads.then(|| output.text.clone());
        count_request(hit.route, "ok");
        self.inner.log.record(log).await;
    }

    /// Counts a cache lookup and updates the hit ratio gauge.
    pub(super) fn count_cache(&self, hit: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let (hits, lookups) = &self.inner.cache_stats;
        let h = hits.fetch_add(u64::from(hit), Relaxed) + u64::from(hit);
        let n = lookups.fetch_add(1, Relaxed) + 1;
        metrics::counter!("groundwork_gateway_cache_total", "result" => if hit { "hit" } else { "miss" }).increment(1);
        metrics::gauge!("groundwork_gateway_cache_hit_ratio").set(h as f64 / n as f64);
    }

    pub(super) async fn cache_lookup<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Option<T> {
        let store = self.inner.store.clone();
        let key = key.to_owned();
        let found = tokio::task::spawn_blocking(move || store.cache_get(&key, chrono::Utc::now()))
            .await
            .ok()?;
        match found {
            Ok(Some(e)) => serde_json::from_str(&e.value).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cache lookup failed");
                None
            }
        }
    }
}

impl Gateway {
    /// Caches an answer under `key` for the route's TTL (a failure is logged, not raised).
    pub(super) async fn cache_store(
        &self,
        key: &str,
        route: &Route,
        value: &impl serde::Serialize,
    ) {
        let entry = CacheEntry {
            key: key.to_owned(),
            route: route.name.clone(),
            value: serde_json::to_string(value).unwrap_or_default(),
            expires_at: chrono::Utc::now()
                + chrono::Duration::seconds(route.policy.cache_ttl_secs as i64),
        };
        let store = self.inner.store.clone();
        let max = self.inner.config.cache.max_bytes;
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.cache_put(&entry, max)).await
        {
            tracing::warn!(error = %e, "could not cache the answer");
        }
    }
}

/// A cached answer, whole or as a stream.
fn replay(output: ChatOutput, meta: ReplyMeta, stream: bool) -> ChatReply {
    if !stream {
        return ChatReply::Complete { output, meta };
    }
    let pieces = cache::replay_pieces(&output.text, 24);
    let (tx, rx) = mpsc::channel(pieces.len() + 1);
    let mut events = pieces.into_iter().map(StreamEvent::Text);
    let first = events.next().unwrap_or(StreamEvent::Done {
        finish_reason: output.finish_reason,
        usage: output.usage,
        model: output.model.clone(),
        cost_usd: 0.0,
    });
    let had_text = matches!(first, StreamEvent::Text(_));
    for e in events {
        let _ = tx.try_send(e);
    }
    if had_text {
        let _ = tx.try_send(StreamEvent::Done {
            finish_reason: output.finish_reason,
            usage: output.usage,
            model: output.model,
            cost_usd: 0.0,
        });
    }
    ChatReply::Stream {
        events: StreamEvents::new(first, rx),
        meta,
    }
}

/// Length of the common prefix of `a` and `b`, on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| a.len().min(b.len()))
}

impl Run {
    fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.route.policy.total_timeout_ms)
    }

    async fn complete(self) -> Result<ChatOutput> {
        let mut attempts = Vec::new();
        let mut last: Option<ProviderError> = None;
        'targets: for target in self.targets.clone() {
            let provider = self.gw.provider(&target)?.clone();
            let mut call = self.call.clone();
            call.model = target.model.clone();
            for n in 0..=self.route.policy.retries {
                let t0 = Instant::now();
                let result =
                    match tokio::time::timeout(self.attempt_timeout(), provider.complete(&call))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(ProviderError::new(
                            FailureKind::Timeout,
                            "the answer did not finish in time",
                        )),
                    };
                match result {
                    Ok(out) => {
                        attempts.push(attempt_json(&target, None, t0));
                        return Ok(self.succeed(&target, out, attempts, None).await);
                    }
                    Err(e) => {
                        attempts.push(attempt_json(&target, Some(&e), t0));
                        let kind = e.kind;
                        last = Some(e);
                        match self.route.after_failure(&target, kind, n).await {
                            Next::Retry => continue,
                            Next::NextTarget => break,
                            Next::Stop => break 'targets,
                        }
                    }
                }
            }
        }
        let error = upstream_error(last, attempts.len());
        Err(self.fail(Failed { error, attempts }).await)
    }

    /// Streams the answer to `tx`: targets and retries in the route's order, the output guard
    /// over the text, and a retry after text was sent continuing only where it repeats it.
    async fn stream(self, tx: mpsc::Sender<StreamEvent>) {
        let gw = self.gw.clone();
        let mut st = Streamed::new(gw.inner.guard.stream());
        'targets: for target in self.targets.clone() {
            let provider = match self.gw.provider(&target) {
                Ok(p) => p.clone(),
                Err(e) => {
                    let _ = tx.send(StreamEvent::Error(e)).await;
                    return;
                }
            };
            let mut call = self.call.clone();
            call.model = target.model.clone();
            for n in 0..=self.route.policy.retries {
                let t0 = Instant::now();
                match self
                    .stream_attempt(&mut st, &provider, &call, &target, &tx)
                    .await
                {
                    AttemptEnd::Finished(reason, usage) => {
                        st.attempts.push(attempt_json(&target, None, t0));
                        self.finish_stream(st, &target, reason, usage, &tx).await;
                        return;
                    }
                    AttemptEnd::Diverged(e) => {
                        st.attempts.push(json!({"target": target.label(), "outcome": "diverged", "ms": t0.elapsed().as_secs_f64() * 1e3}));
                        let decisions = std::mem::take(&mut st.sg.decisions);
                        let failed = Failed {
                            error: e,
                            attempts: st.attempts,
                        };
                        self.end_stream(&tx, failed, &st.sent, &decisions).await;
                        return;
                    }
                    AttemptEnd::Failed(e) if tx.is_closed() => {
                        st.attempts.push(attempt_json(&target, Some(&e), t0));
                        self.client_left(st, &target).await;
                        return;
                    }
                    AttemptEnd::Failed(e) => {
                        let mut a = attempt_json(&target, Some(&e), t0);
                        a["text_received"] = json!(st.raw.len());
                        a["text_sent"] = json!(st.sent.len());
                        st.attempts.push(a);
                        let kind = e.kind;
                        st.last = Some(e);
                        match self.route.after_failure(&target, kind, n).await {
                            Next::Retry => continue,
                            Next::NextTarget => break,
                            Next::Stop => break 'targets,
                        }
                    }
                }
            }
        }
        let error = upstream_error(st.last, st.attempts.len());
        let decisions = st.sg.decisions.clone();
        self.end_stream(
            &tx,
            Failed {
                error,
                attempts: st.attempts,
            },
            &st.sent,
            &decisions,
        )
        .await;
    }

    /// One streaming attempt on one target: opens the stream within the first-byte timeout,
    /// then passes its text through the guard to the client until it finishes or fails.
    async fn stream_attempt(
        &self,
        st: &mut Streamed<'_>,
        provider: &Provider,
        call: &Call,
        target: &Target,
        tx: &mpsc::Sender<StreamEvent>,
    ) -> AttemptEnd {
        let deadline = tokio::time::Instant::now() + self.attempt_timeout();
        let first_deadline = tokio::time::Instant::now() + call.first_byte;
        let mut deltas = match tokio::time::timeout_at(
            first_deadline.min(deadline),
            provider.stream(call),
        )
        .await
        {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return AttemptEnd::Failed(e),
            Err(_) => {
                return AttemptEnd::Failed(ProviderError::new(
                    FailureKind::Timeout,
                    "no first byte in time",
                ))
            }
        };
        st.matched = 0;
        let mut got_any = false;
        loop {
            let until = if got_any {
                deadline
            } else {
                first_deadline.min(deadline)
            };
            let next = match tokio::time::timeout_at(until, deltas.next()).await {
                Err(_) => {
                    return AttemptEnd::Failed(ProviderError::new(
                        FailureKind::Timeout,
                        if got_any {
                            "the answer did not finish in time"
                        } else {
                            "no first token in time"
                        },
                    ))
                }
                Ok(None) => {
                    return AttemptEnd::Failed(ProviderError::new(
                        FailureKind::Malformed,
                        "the stream ended without its end",
                    ))
                }
                Ok(Some(Err(e))) => return AttemptEnd::Failed(e),
                Ok(Some(Ok(d))) => d,
            };
            got_any = true;
            match next {
                Delta::Text(t) => {
                    if let Some(end) = self.on_text(st, &t, target, tx).await {
                        return end;
                    }
                }
                Delta::Finish { .. } if st.matched < st.raw.len() => {
                    return AttemptEnd::Failed(ProviderError::new(
                        FailureKind::Malformed,
                        "the retried answer was shorter than what was sent",
                    ));
                }
                Delta::Finish { reason, usage } => return AttemptEnd::Finished(reason, usage),
            }
        }
    }

    /// A piece of streamed text: skips what a retry repeats of text already consumed, passes
    /// the rest through the guard and sends what it lets out. `Some` ends the attempt.
    async fn on_text(
        &self,
        st: &mut Streamed<'_>,
        text: &str,
        target: &Target,
        tx: &mpsc::Sender<StreamEvent>,
    ) -> Option<AttemptEnd> {
        let mut t = text;
        if st.matched < st.raw.len() {
            let want = &st.raw[st.matched..];
            let common = common_prefix(want, t);
            if common < want.len().min(t.len()) && st.sent.is_empty() {
                // Nothing reached the client yet (it was all in the guard's window): start
                // over with this answer.
                st.restart();
            } else if common < want.len().min(t.len()) {
                return Some(AttemptEnd::Diverged(GatewayError::Interrupted(format!(
                    "{} broke the stream and {} answered differently",
                    st.last
                        .as_ref()
                        .map(|l| l.kind.as_str())
                        .unwrap_or("a failure"),
                    target.label()
                ))));
            } else {
                st.matched += common;
                t = &t[common..];
            }
        }
        if t.is_empty() {
            return None;
        }
        st.raw.push_str(t);
        st.matched = st.raw.len();
        let out = st.sg.push(t);
        if !out.is_empty() {
            st.ttft
                .get_or_insert_with(|| self.started.elapsed().as_secs_f64() * 1e3);
            st.sent.push_str(&out);
            if tx.send(StreamEvent::Text(out)).await.is_err() {
                return Some(AttemptEnd::Failed(ProviderError::new(
                    FailureKind::Connection,
                    "client went away",
                )));
            }
        }
        if st.sg.blocked.is_some() {
            return Some(AttemptEnd::Finished(FinishReason::ContentFilter, None));
        }
        None
    }

    /// The stream finished: flushes the guard's window, settles, logs, sends `Done`.
    async fn finish_stream(
        self,
        mut st: Streamed<'_>,
        target: &Target,
        reason: FinishReason,
        usage: Option<Usage>,
        tx: &mpsc::Sender<StreamEvent>,
    ) {
        let rest = st.sg.finish();
        if !rest.is_empty() {
            st.ttft
                .get_or_insert_with(|| self.started.elapsed().as_secs_f64() * 1e3);
            st.sent.push_str(&rest);
            let _ = tx.send(StreamEvent::Text(rest)).await;
        }
        let reason = if st.sg.blocked.is_some() {
            FinishReason::ContentFilter
        } else {
            reason
        };
        let usage = usage.unwrap_or_else(|| {
            Usage::new(
                self.prompt_tokens,
                completion_token_bound(&st.raw, self.call.max_tokens),
            )
        });
        let out = ChatOutput {
            text: st.sent,
            finish_reason: reason,
            usage,
            model: target.model.clone(),
            cost_usd: 0.0,
        };
        let decisions = std::mem::take(&mut st.sg.decisions);
        let output = self
            .succeed(target, out, st.attempts, Some((decisions, st.ttft)))
            .await;
        let _ = tx
            .send(StreamEvent::Done {
                finish_reason: output.finish_reason,
                usage: output.usage,
                model: output.model,
                cost_usd: output.cost_usd,
            })
            .await;
    }

    /// The client left mid-answer: charges what was generated, logs, stops.
    async fn client_left(mut self, st: Streamed<'_>, target: &Target) {
        let usage = Usage::new(
            self.prompt_tokens,
            completion_token_bound(&st.raw, self.call.max_tokens),
        );
        let cost = self.gw.cost(target, usage);
        self.gw
            .inner
            .budgets
            .settle(std::mem::take(&mut self.reservation), cost);
        let mut log = self.log_record(st.attempts, Some(&st.sent), &st.sg.decisions, st.ttft);
        log.status = "cancelled".into();
        log.provider = Some(target.provider.clone());
        log.model = Some(target.model.clone());
        log.tokens_in = usage.prompt_tokens;
        log.tokens_out = usage.completion_tokens;
        log.cost_usd = cost;
        self.gw.inner.log.record(log).await;
    }

    async fn end_stream(
        self,
        tx: &mpsc::Sender<StreamEvent>,
        failed: Failed,
        sent: &str,
        decisions: &[Decision],
    ) {
        let mut run = self;
        run.decisions.extend(decisions.iter().cloned());
        let mut failed = failed;
        if !sent.is_empty() && !matches!(failed.error, GatewayError::Interrupted(_)) {
            failed.error = GatewayError::Interrupted(failed.error.to_string());
        }
        let e = run.fail(failed).await;
        let _ = tx.send(StreamEvent::Error(e)).await;
    }

    /// The call's log record: caller, route, attempts, guardrail decisions (the prompt's and
    /// `extra`), cache, payloads when logged.
    fn log_record(
        &self,
        attempts: Vec<serde_json::Value>,
        text: Option<&str>,
        extra: &[Decision],
        ttft: Option<f64>,
    ) -> CallLog {
        let mut log = self
            .gw
            .call_log(&self.ctx, &self.route.name, "chat", self.started);
        log.attempts = serde_json::Value::Array(attempts);
        let mut decisions = self.decisions.clone();
        decisions.extend(extra.iter().cloned());
        log.guardrails = serde_json::to_value(&decisions).unwrap_or_default();
        log.cache = self.cache_label.to_owned();
        log.stream = self.stream;
        log.request = self.request_log.clone();
        log.ttft_ms = ttft;
        if self.request_log.is_some() {
            log.response = text.map(str::to_owned);
        }
        log
    }

    /// Guards (whole answers), caches, settles, logs.
    async fn succeed(
        mut self,
        target: &Target,
        mut out: ChatOutput,
        attempts: Vec<serde_json::Value>,
        streamed: Option<(Vec<Decision>, Option<f64>)>,
    ) -> ChatOutput {
        let (decisions, ttft) = match streamed {
            Some(s) => s,
            None => {
                let mut sg = self.gw.inner.guard.stream();
                let mut text = sg.push(&out.text);
                text.push_str(&sg.finish());
                if sg.blocked.is_some() {
                    out.finish_reason = FinishReason::ContentFilter;
                }
                out.text = text;
                (
                    sg.decisions,
                    Some(self.started.elapsed().as_secs_f64() * 1e3),
                )
            }
        };
        count_decisions(&decisions);
        let cost = self.gw.cost(target, out.usage);
        out.cost_usd = cost;
        if let Some(key) = &self.cache_key {
            if out.finish_reason != FinishReason::ContentFilter {
                self.gw.cache_store(key, &self.route, &out).await;
            }
        }
        let mut log = self.log_record(attempts, Some(&out.text), &decisions, ttft);
        log.status = "ok".into();
        log.provider = Some(target.provider.clone());
        log.model = Some(out.model.clone());
        log.tokens_in = out.usage.prompt_tokens;
        log.tokens_out = out.usage.completion_tokens;
        log.cost_usd = cost;
        let route = self.route.name.clone();
        count_request(&route, "ok");
        metrics::histogram!("groundwork_gateway_latency_seconds", "route" => route.clone())
            .record(log.latency_ms / 1e3);
        if let Some(t) = log.ttft_ms {
            metrics::histogram!("groundwork_gateway_ttft_seconds", "route" => route.clone())
                .record(t / 1e3);
        }
        metrics::counter!("groundwork_gateway_tokens_total", "direction" => "in", "model" => out.model.clone()).increment(out.usage.prompt_tokens as u64);
        metrics::counter!("groundwork_gateway_tokens_total", "direction" => "out", "model" => out.model.clone()).increment(out.usage.completion_tokens as u64);
        metrics::counter!("groundwork_gateway_cost_microusd_total", "model" => out.model.clone())
            .increment((cost * 1e6).round() as u64);
        tracing::info!(
            status = "ok", provider = %target.provider, model = %out.model,
            latency_ms = log.latency_ms, ttft_ms = ?log.ttft_ms, tokens_in = log.tokens_in,
            tokens_out = log.tokens_out, cost_usd = cost, cache = %log.cache, "gateway call"
        );
        self.gw
            .inner
            .budgets
            .settle(std::mem::take(&mut self.reservation), cost);
        self.gw.inner.log.record(log).await;
        out
    }

    /// Releases the reservation, logs the failure, returns the error.
    async fn fail(mut self, f: Failed) -> GatewayError {
        self.gw
            .inner
            .budgets
            .settle(std::mem::take(&mut self.reservation), 0.0);
        let mut log = self.log_record(f.attempts, None, &[], None);
        log.status = "error".into();
        log.error = Some(f.error.code().into());
        count_request(&self.route.name, "error");
        tracing::warn!(status = "error", code = f.error.code(), error = %f.error, "gateway call failed");
        self.gw.inner.log.record(log).await;
        f.error
    }
}

fn count_decisions(decisions: &[Decision]) {
    for d in decisions {
        metrics::counter!("groundwork_gateway_guardrail_actions_total",
            "rule" => d.rule.clone(), "action" => d.action.as_str(), "side" => d.side)
        .increment(1);
    }
}

fn upstream_error(last: Option<ProviderError>, attempts: usize) -> GatewayError {
    match last {
        Some(e) => GatewayError::Upstream {
            kind: e.kind,
            message: e.message,
            attempts,
        },
        None => GatewayError::Upstream {
            kind: FailureKind::Server,
            message: "no target could be tried".into(),
            attempts,
        },
    }
}

impl Gateway {
    /// Cost of `usage` on `target`, USD.
    fn cost(&self, target: &Target, usage: Usage) -> f64 {
        let p = self.price(target);
        (p.input * usage.prompt_tokens as f64 + p.output * usage.completion_tokens as f64) / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_stops_on_character_boundaries() {
        assert_eq!(common_prefix("héllo", "hé"), 3);
        assert_eq!(common_prefix("héllo", "hex"), 1);
        assert_eq!(common_prefix("abc", "abcdef"), 3);
    }
}
