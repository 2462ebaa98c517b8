//! Agents: individually addressable assistants with durable state, conversations, a task queue
//! and schedules, answering questions grounded on knowledge bases.
//!
//! Each agent (a tenant and an id chosen by the client) is created on first use and lives in
//! memory as an actor — one tokio task with a mailbox — while it is in use. The actor is the
//! only writer of its agent's state, config and messages: commands are applied one at a time
//! (a burst is applied in memory and committed in one transaction), and a command is answered
//! only after its write is committed (a conversation's title is renamed directly; a
//! conversation is deleted under the turn lock, between turns). An actor idle for
//! `idle_secs` (no command, no subscriber,
//! no turn, no task running) leaves memory; the next command reactivates it from the store.
//! Chat turns of one agent run one at a time, outside the mailbox (model calls take seconds;
//! state reads and writes keep flowing), and send their messages through it. Queued tasks run
//! in FIFO order, one at a time, retried with backoff; schedules queue tasks when due.
//!
//! This module owns the runtime and the chat pipeline. It must never speak HTTP (the `api`
//! module does), nor name the knowledge-base service: it reaches the world through its ports
//! only — [`Knowledge`] (the knowledge bases), the [`Gateway`] (model calls) and
//! [`AgentStore`] — which the composition root (`crate::app`) hands it.

pub mod answer;
mod budget;
pub mod chat;
pub mod cite;
pub mod config;
mod context;
mod error;
mod evidence;
pub mod extract;
mod generate;
pub mod knowledge;
mod retrieve;
mod rewrite;
pub mod spans;
pub mod stream;
mod summary;
mod tasks;
mod turn;
pub mod verify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use config::{AgentBudget, AgentConfig, AgentsConfig, AnswerMode, GroundingConfig};
pub use error::{AgentError, Result};
pub use knowledge::{Knowledge, KnowledgeBase, Passage};
pub use tasks::{ScheduleRequest, TaskKind, TaskRequest, TaskSpec};

use crate::clock::Clock;
use crate::gateway::Gateway;
use crate::principal::Principal;
use crate::store::agents::{
    AgentRecord, AgentSummary, Conversation, Holding, MessageRecord, NewMessage, ScheduleRecord,
    TaskRecord,
};
use crate::store::{AgentStore, Page, Scope};
use crate::supervisor::Supervisor;

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    /// Agent id.
    pub id: String,
    /// Its configuration.
    pub config: AgentConfig,
    /// Its state (any JSON; `null` until set).
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
    /// Bumped by every state or config change (compare-and-set with `If-Match`).
    pub version: u64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What every subscriber (WebSocket) of an agent sees.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The state changed.
    State {
        /// New version.
        version: u64,
        /// New state.
        state: serde_json::Value,
    },
    /// The config changed.
    Config {
        /// New version.
        version: u64,
        /// New config.
        config: AgentConfig,
    },
    /// A message was stored (a question or an answer).
    Message {
        /// The message.
        message: MessageRecord,
    },
    /// A piece of an answer being streamed.
    Delta {
        /// The answer's stream.
        stream_id: String,
        /// Its conversation.
        conversation_id: String,
        /// Text to append.
        text: String,
    },
    /// A task changed.
    Task {
        /// The task.
        task: TaskRecord,
    },
}

/// A change of state or config.
#[derive(Debug, Clone)]
pub enum Write {
    /// Replace the state.
    SetState(serde_json::Value),
    /// JSON Merge Patch (RFC 7396) on the state.
    MergeState(serde_json::Value),
    /// JSON Patch (RFC 6902) on the state.
    PatchState(json_patch::Patch),
    /// Replace the config.
    SetConfig(Box<AgentConfig>),
    /// JSON Merge Patch on the config.
    MergeConfig(serde_json::Value),
}

impl Write {
    fn touches_config(&self) -> bool {
        matches!(self, Write::SetConfig(_) | Write::MergeConfig(_))
    }
}

type Key = (String, String);

enum Cmd {
    Get(oneshot::Sender<AgentView>),
    Write {
        write: Write,
        expect: Option<u64>,
        reply: oneshot::Sender<Result<AgentView>>,
    },
    Append {
        message: NewMessage,
        reply: oneshot::Sender<Result<MessageRecord>>,
    },
    /// Look at the task queue again.
    Wake,
}

#[derive(Clone)]
struct Handle {
    /// The lease this activation holds the agent under (shared stores).
    token: Arc<str>,
    tx: mpsc::Sender<Cmd>,
    events: broadcast::Sender<AgentEvent>,
    /// Held for the length of a chat turn.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// The longest conversation title (and conversation search text), characters.
const MAX_TITLE_CHARS: usize = 200;

/// A replica silent this long (no heartbeat) is taken for gone: its running tasks go back to
/// their queues.
const REPLICA_SILENCE_SECS: i64 = 15;

struct Inner {
    knowledge: Arc<dyn Knowledge>,
    gateway: Gateway,
    store: Arc<dyn AgentStore>,
    config: AgentsConfig,
    live: Mutex<HashMap<Key, Handle>>,
    hub: stream::Hub,
    /// Runs actors, turns, tasks and wake-ups; shutdown awaits them.
    supervisor: Supervisor,
    /// Runs the periodic jobs (schedules, wake-ups, event retention).
    clock: Clock,
    /// This process's replica id: the claimer of the tasks it runs.
    replica: String,
    stopping: AtomicBool,
    http: reqwest::Client,
    /// Agents another replica held when last asked, and when: a request within
    /// [`PLACE_MEMORY`] of that goes there without asking the store again.
    elsewhere: Mutex<HashMap<Key, (Place, Instant)>>,
}

/// How long a placement elsewhere is trusted without asking the store. A holder that dies is
/// taken over only after [`REPLICA_SILENCE_SECS`], so this delays nothing that matters.
const PLACE_MEMORY: Duration = Duration::from_secs(1);

/// Where an agent's requests are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// This replica holds it (or just took it).
    Here,
    /// Another live replica does.
    Elsewhere {
        /// Its replica id.
        replica: String,
        /// Where it answers.
        address: String,
    },
}

/// The agent runtime. Cheap to clone.
#[derive(Clone)]
pub struct Agents {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a blocking storage call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::store::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(AgentError::from),
        Err(e) => Err(AgentError::Unavailable(if e.is_panic() {
            "failing (a storage call panicked)"
        } else {
            "stopping"
        })),
    }
}

/// Agent ids: 1–128 of letters, digits, `-`, `_`, `.`, `:`, `@`.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
}

fn view(rec: &AgentRecord, config: &AgentConfig) -> AgentView {
    AgentView {
        id: rec.id.clone(),
        config: config.clone(),
        state: rec.state.clone(),
        version: rec.version,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
    }
}

impl Agents {
    /// The runtime over its ports: the knowledge bases it searches, the gateway its model
    /// calls go through, and its store. Call [`Agents::start`] inside a tokio runtime.
    pub fn new(
        knowledge: Arc<dyn Knowledge>,
        gateway: Gateway,
        store: Arc<dyn AgentStore>,
        config: AgentsConfig,
        supervisor: Supervisor,
        clock: Clock,
        replica: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                knowledge,
                gateway,
                store,
                config,
                live: Mutex::new(HashMap::new()),
                hub: stream::Hub::new(supervisor.clone()),
                supervisor,
                clock,
                replica,
                stopping: AtomicBool::new(false),
                elsewhere: Mutex::new(HashMap::new()),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap_or_default(),
            }),
        }
    }

    /// Puts tasks interrupted by the last exit back in their queues and registers the
    /// agents' periodic jobs on the clock (call it inside the tokio runtime the agents run
    /// on).
    pub async fn start(&self) -> Result<()> {
        let agents = self.clone();
        let requeued = blocking(move || agents.requeue_orphaned_tasks()).await?;
        if requeued > 0 {
            tracing::info!(
                tasks = requeued,
                "agent tasks interrupted by the last exit requeued"
            );
        }
        tasks::schedule_jobs(self, tokio::runtime::Handle::current()).map_err(|e| {
            tracing::error!(error = %e, "cannot start the clock thread");
            AgentError::Unavailable("unable to start its clock thread")
        })?;
        Ok(())
    }

    /// Puts back the tasks left running by a process that is gone (this one's last run, or
    /// another replica that stopped beating); returns how many.
    fn requeue_orphaned_tasks(&self) -> std::result::Result<u64, crate::store::StoreError> {
        let alive_since = Utc::now() - chrono::Duration::seconds(REPLICA_SILENCE_SECS);
        self.inner
            .store
            .requeue_running_tasks(&self.inner.replica, alive_since)
    }

    /// Stops scheduling; agents finish the command at hand.
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    /// True once [`Agents::shutdown`] was called.
    fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// The owner of the runtime's tasks (for work started on an agent's behalf elsewhere,
    /// such as a WebSocket's messages).
    pub fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    fn key(p: &Principal, id: &str) -> Result<Key> {
        if !valid_agent_id(id) {
            return Err(AgentError::Invalid(format!(
                "agent id `{id}` must be 1-128 letters, digits, `-`, `_`, `.`, `:` or `@`"
            )));
        }
        Ok((p.tenant_id.clone(), id.to_owned()))
    }

    /// The live handle of an agent, activating it if needed — after taking its lease: an
    /// agent is active in one replica at a time, and one another live replica holds is
    /// [`AgentError::Elsewhere`]. While stopping, no agent is activated, but a live one takes
    /// commands until its actor closes its mailbox (the turns under way store their answers
    /// through it).
    async fn handle(&self, key: &Key) -> Result<Handle> {
        if let Some(h) = self.live_handle(key) {
            return Ok(h);
        }
        if self.is_stopping() {
            return Err(AgentError::Unavailable("stopping"));
        }
        let token: Arc<str> = uuid::Uuid::new_v4().to_string().into();
        if let Place::Elsewhere { replica, address } = self.claim(key, &token).await? {
            return Err(AgentError::Elsewhere { replica, address });
        }
        Ok(self.activate(key, token))
    }

    /// Starts the agent's actor under lease `token` unless another request did meanwhile.
    /// (Not async: the actor's future, which activates agents in turn, is spawned from here.)
    fn activate(&self, key: &Key, token: Arc<str>) -> Handle {
        let mut live = lock(&self.inner.live);
        if let Some(h) = live.get(key) {
            if !h.tx.is_closed() {
                // Activated meanwhile by another request (the lease is this replica's).
                return h.clone();
            }
        }
        let (tx, rx) = mpsc::channel(self.inner.config.mailbox.max(1));
        let (events, _) = broadcast::channel(1024);
        let handle = Handle {
            token,
            tx,
            events,
            turn: Arc::new(tokio::sync::Mutex::new(())),
        };
        live.insert(key.clone(), handle.clone());
        metrics::gauge!("groundwork_agents_live").set(live.len() as f64);
        metrics::counter!("groundwork_agent_activations_total").increment(1);
        self.inner
            .supervisor
            .spawn(actor(self.clone(), key.clone(), rx, handle.clone()));
        handle
    }

    /// The handle of an agent live in this process.
    fn live_handle(&self, key: &Key) -> Option<Handle> {
        lock(&self.inner.live)
            .get(key)
            .filter(|h| !h.tx.is_closed())
            .cloned()
    }

    /// Takes the agent's lease under `token` unless another live replica holds it.
    async fn claim(&self, key: &Key, token: &str) -> Result<Place> {
        let (store, (t, a)) = (self.inner.store.clone(), key.clone());
        let (holder, token) = (self.inner.replica.clone(), token.to_owned());
        let alive_since = Utc::now() - chrono::Duration::seconds(REPLICA_SILENCE_SECS);
        let holding =
            blocking(move || store.claim_agent(&t, &a, &holder, &token, alive_since)).await?;
        Ok(match holding {
            Holding::Held => Place::Here,
            Holding::Elsewhere { replica, address } => {
                metrics::counter!("groundwork_agent_elsewhere_total").increment(1);
                Place::Elsewhere { replica, address }
            }
        })
    }

    /// Where agent `id`'s requests are served: here when this replica holds it or takes it
    /// now (no live replica held it), else the replica that does. Asks the store only for an
    /// agent not live here.
    pub async fn place(&self, p: &Principal, id: &str) -> Result<Place> {
        let key = Self::key(p, id)?;
        if self.live_handle(&key).is_some() {
            return Ok(Place::Here);
        }
        if let Some((place, at)) = lock(&self.inner.elsewhere).get(&key) {
            if at.elapsed() < PLACE_MEMORY {
                return Ok(place.clone());
            }
        }
        let token = uuid::Uuid::new_v4().to_string();
        let place = self.claim(&key, &token).await?;
        let mut elsewhere = lock(&self.inner.elsewhere);
        elsewhere.retain(|_, (_, at)| at.elapsed() < PLACE_MEMORY);
        if place == Place::Here {
            elsewhere.remove(&key);
        } else {
            elsewhere.insert(key, (place.clone(), Instant::now()));
        }
        Ok(place)
    }

    /// Gives up every agent lease of this replica (at the end of a shutdown, once its actors
    /// are done), so other replicas take its agents at once.
    pub async fn release_leases(&self) {
        let (store, holder) = (self.inner.store.clone(), self.inner.replica.clone());
        match blocking(move || store.release_agents(&holder)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(agents = n, "agent leases released"),
            Err(e) => tracing::warn!(error = %e, "agent leases left to expire"),
        }
    }

    /// Sends a command and waits for its answer; an actor that was just evicted is
    /// reactivated and the command sent again (it was never applied).
    async fn call<T>(&self, key: &Key, make: impl Fn(oneshot::Sender<T>) -> Cmd) -> Result<T> {
        for _ in 0..5 {
            let h = self.handle(key).await?;
            let (tx, rx) = oneshot::channel();
            if h.tx.send(make(tx)).await.is_err() {
                continue;
            }
            if let Ok(v) = rx.await {
                return Ok(v);
            }
        }
        Err(AgentError::Unavailable("unable to activate the agent"))
    }

    /// The agent (created on first use).
    pub async fn get(&self, p: &Principal, id: &str) -> Result<AgentView> {
        p.require(Scope::Read)?;
        let key = Self::key(p, id)?;
        self.call(&key, Cmd::Get).await
    }

    /// Changes state or config; with `expect`, only if the agent is at that version.
    pub async fn write(
        &self,
        p: &Principal,
        id: &str,
        write: Write,
        expect: Option<u64>,
    ) -> Result<AgentView> {
        p.require(if write.touches_config() {
            Scope::Admin
        } else {
            Scope::Write
        })?;
        let key = Self::key(p, id)?;
        // A merge patch replaces an array whole: its `knowledge_bases` is the final list.
        let kbs: Option<Vec<String>> = match &write {
            Write::SetConfig(c) => Some(c.knowledge_bases.clone()),
            Write::MergeConfig(patch) => patch
                .get("knowledge_bases")
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            _ => None,
        };
        if let Some(kbs) = kbs.filter(|k| !k.is_empty()) {
            self.check_kbs(p, kbs).await?;
        }
        self.call(&key, |reply| Cmd::Write {
            write: write.clone(),
            expect,
            reply,
        })
        .await?
    }

    /// Fails naming every knowledge base (id or name) the tenant does not have.
    async fn check_kbs(&self, p: &Principal, kbs: Vec<String>) -> Result<()> {
        let knowledge = self.inner.knowledge.clone();
        let p2 = p.clone();
        let known = tokio::task::spawn_blocking(move || knowledge.knowledge_bases(&p2))
            .await
            .map_err(|_| AgentError::Unavailable("stopping"))??;
        let missing: Vec<String> = kbs
            .into_iter()
            .filter(|k| !known.iter().any(|v| &v.id == k || &v.name == k))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            // A reference to nothing, answered like every missing reference: 404.
            Err(AgentError::NotFound {
                kind: "knowledge base (in knowledge_bases)",
                id: missing.join("`, `"),
            })
        }
    }

    /// Deletes the agent with its history, tasks and schedules.
    pub async fn delete(&self, p: &Principal, id: &str) -> Result<()> {
        p.require(Scope::Write)?;
        let key = Self::key(p, id)?;
        let removed = lock(&self.inner.live).remove(&key);
        drop(removed);
        let store = self.inner.store.clone();
        let (t, a) = key.clone();
        if !blocking(move || store.delete_agent(&t, &a)).await? {
            return Err(AgentError::NotFound {
                kind: "agent",
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// The caller's agents that exist in the store.
    pub async fn list(&self, p: &Principal, offset: u64, limit: u64) -> Result<Page<AgentSummary>> {
        p.require(Scope::Read)?;
        let (store, t) = (self.inner.store.clone(), p.tenant_id.clone());
        blocking(move || store.list_agents(&t, offset, limit.clamp(1, 1000))).await
    }

    /// The agent's current view and a feed of its changes from now on.
    pub async fn subscribe(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<(AgentView, broadcast::Receiver<AgentEvent>)> {
        p.require(Scope::Read)?;
        let key = Self::key(p, id)?;
        for _ in 0..5 {
            let h = self.handle(&key).await?;
            let rx = h.events.subscribe();
            let (tx, reply) = oneshot::channel();
            if h.tx.send(Cmd::Get(tx)).await.is_err() {
                continue;
            }
            if let Ok(v) = reply.await {
                return Ok((v, rx));
            }
        }
        Err(AgentError::Unavailable("unable to activate the agent"))
    }

    /// Stores a message through the agent (its only writer) and tells subscribers.
    async fn append(&self, key: &Key, message: NewMessage) -> Result<MessageRecord> {
        self.call(key, |reply| Cmd::Append {
            message: message.clone(),
            reply,
        })
        .await?
    }

    /// Tells the agent's subscribers (if it is live).
    fn publish(&self, key: &Key, event: AgentEvent) {
        if let Some(h) = lock(&self.inner.live).get(key) {
            let _ = h.events.send(event);
        }
    }

    /// The agent's conversations, most recent first; with `query`, those whose title or a
    /// message contains it.
    pub async fn conversations(
        &self,
        p: &Principal,
        id: &str,
        query: Option<String>,
    ) -> Result<Vec<Conversation>> {
        p.require(Scope::Read)?;
        let (t, a) = Self::key(p, id)?;
        let query = query.filter(|q| !q.trim().is_empty());
        if query
            .as_ref()
            .is_some_and(|q| q.chars().count() > MAX_TITLE_CHARS)
        {
            return Err(AgentError::Invalid(format!(
                "q is longer than {MAX_TITLE_CHARS} characters"
            )));
        }
        let store = self.inner.store.clone();
        blocking(move || store.list_conversations(&t, &a, query.as_deref(), 200)).await
    }

    /// Renames a conversation (the title is trimmed; not blank, at most 200 characters).
    pub async fn rename_conversation(
        &self,
        p: &Principal,
        id: &str,
        conversation: &str,
        title: &str,
    ) -> Result<Conversation> {
        p.require(Scope::Write)?;
        let (t, a) = Self::key(p, id)?;
        let title = title.trim().to_owned();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Err(AgentError::Invalid(format!(
                "title must be 1 to {MAX_TITLE_CHARS} characters, not blank"
            )));
        }
        let (store, c) = (self.inner.store.clone(), conversation.to_owned());
        blocking(move || store.rename_conversation(&t, &a, &c, &title)).await
    }

    /// Deletes a conversation with its messages, between turns (a turn under way finishes
    /// first, so no answer is written into a conversation that is gone).
    pub async fn delete_conversation(
        &self,
        p: &Principal,
        id: &str,
        conversation: &str,
    ) -> Result<()> {
        p.require(Scope::Write)?;
        let key = Self::key(p, id)?;
        let handle = self.handle(&key).await?;
        let _turn = handle.turn.clone().lock_owned().await;
        let (store, (t, a), c) = (
            self.inner.store.clone(),
            key.clone(),
            conversation.to_owned(),
        );
        if !blocking(move || store.delete_conversation(&t, &a, &c)).await? {
            return Err(AgentError::NotFound {
                kind: "conversation",
                id: conversation.to_owned(),
            });
        }
        Ok(())
    }

    /// Stops a streamed answer being generated: the turn keeps the text so far, checks it
    /// and stores it marked `stopped`, and the stream ends with `done`. `false` when the
    /// answer had already finished.
    pub async fn stop_stream(&self, p: &Principal, id: &str, stream_id: &str) -> Result<bool> {
        p.require(Scope::Infer)?;
        let (t, a) = Self::key(p, id)?;
        if self.inner.hub.stop(stream_id, (&t, &a)) {
            return Ok(true);
        }
        let (store, s) = (self.inner.store.clone(), stream_id.to_owned());
        let known = blocking(move || store.events_after(&t, &a, &s, 0)).await?;
        if known.is_empty() {
            return Err(AgentError::NotFound {
                kind: "stream",
                id: stream_id.to_owned(),
            });
        }
        Ok(false)
    }

    /// Messages of one conversation after message id `after`.
    pub async fn messages(
        &self,
        p: &Principal,
        id: &str,
        conversation: &str,
        after: i64,
        limit: u64,
    ) -> Result<(Conversation, Vec<MessageRecord>)> {
        p.require(Scope::Read)?;
        let (t, a) = Self::key(p, id)?;
        let (store, c) = (self.inner.store.clone(), conversation.to_owned());
        blocking(move || {
            let conv = store.conversation(&t, &a, &c)?;
            let msgs = store.messages(&t, &a, &c, after, limit.clamp(1, 1000))?;
            Ok((conv, msgs))
        })
        .await
    }

    /// The events of a streamed answer after `after`: live if it is being generated here,
    /// else from the store.
    pub async fn resume(
        &self,
        p: &Principal,
        id: &str,
        stream_id: &str,
        after: u64,
    ) -> Result<stream::Reader> {
        p.require(Scope::Read)?;
        let (t, a) = Self::key(p, id)?;
        let (store, s) = (self.inner.store.clone(), stream_id.to_owned());
        if let Some(reader) = self.inner.hub.follow(stream_id, (&t, &a), after) {
            return Ok(reader);
        }
        let stored = blocking(move || {
            let events = store.events_after(&t, &a, &s, after)?;
            // Nothing after `after`: whether the stream exists (and how it ended) is in its
            // earlier events.
            if events.is_empty() && after > 0 {
                return Ok((store.events_after(&t, &a, &s, 0)?, true));
            }
            Ok((events, false))
        })
        .await?;
        let (stored, seen) = stored;
        if stored.is_empty() {
            return Err(AgentError::NotFound {
                kind: "stream",
                id: stream_id.to_owned(),
            });
        }
        let mut events = if seen {
            Vec::new()
        } else {
            stream::from_stored(stored.clone())
        };
        // Not generated here (this replica holds the agent, so no other live one does) and
        // never ended: the process generating it stopped mid-answer. Say so rather than end
        // the stream as if it were complete; every reader gets the same last event.
        if !stored
            .iter()
            .any(|e| stream::TERMINAL.contains(&e.event.as_str()))
        {
            let last = stored.iter().map(|e| e.seq).max().unwrap_or(0);
            events.push(stream::interrupted(last + 1));
        }
        Ok(stream::Reader::Stored(events))
    }
}

/// One agent's actor: loads it, then applies its commands one at a time until it is idle.
async fn actor(agents: Agents, key: Key, mut rx: mpsc::Receiver<Cmd>, handle: Handle) {
    let inner = agents.inner.clone();
    let started = Instant::now();
    let defaults = inner.config.defaults.clone();
    let loaded = {
        let store = inner.store.clone();
        let (t, a) = key.clone();
        let cfg = serde_json::to_value(&defaults).unwrap_or_default();
        blocking(move || store.load_agent(&t, &a, &cfg)).await
    };
    let mut rec = match loaded {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(agent = %key.1, error = %e, "agent could not be activated");
            remove_if_same(&inner, &key, &handle);
            release(&inner, &key, &handle).await;
            return;
        }
    };
    metrics::histogram!("groundwork_agent_activation_seconds")
        .record(started.elapsed().as_secs_f64());
    let mut config = AgentConfig::from_stored(&rec.config, &defaults);
    let idle = Duration::from_secs(inner.config.idle_secs.max(1));
    let mut last_activity = Instant::now();
    let mut runner = tasks::Runner::new(agents.clone(), key.clone());
    runner.refresh().await;
    let mut batch = Vec::with_capacity(64);
    // At shutdown no new task starts; once no turn or task of the agent is under way (their
    // last writes come through the mailbox), the mailbox closes, what is in it is applied,
    // and the actor ends.
    let stop = inner.supervisor.stopping();
    let (mut closing, mut closed) = (false, false);
    loop {
        if closing && !closed && Arc::strong_count(&handle.turn) <= 2 && !runner.is_running() {
            rx.close();
            closed = true;
        }
        let idle_at = tokio::time::Instant::from_std(last_activity + idle);
        let task_at = runner.due_instant();
        tokio::select! {
            _ = stop.cancelled(), if !closing => closing = true,
            // Looks again for the end of the turns while closing.
            _ = tokio::time::sleep(Duration::from_millis(50)), if closing && !closed => {}
            n = rx.recv_many(&mut batch, 64) => {
                if n == 0 {
                    break;
                }
                last_activity = Instant::now();
                let cmds = std::mem::take(&mut batch);
                apply(&agents, &key, &handle, &mut rec, &mut config, cmds, &mut runner).await;
            }
            _ = runner.finished(), if runner.is_running() => {
                runner.record().await;
                last_activity = Instant::now();
            }
            _ = tokio::time::sleep_until(task_at.unwrap_or(idle_at)), if task_at.is_some() && !runner.is_running() && !closing => {
                runner.start_next().await;
            }
            _ = tokio::time::sleep_until(idle_at), if !runner.is_running() && !closing => {
                if evict(&inner, &key, &handle, &mut rx) {
                    break;
                }
                last_activity = Instant::now();
            }
        }
    }
    // Out of memory here: another replica may take the agent at once.
    release(&inner, &key, &handle).await;
}

/// Gives up the lease of the activation `handle` (a later activation's lease stays).
async fn release(inner: &Inner, key: &Key, handle: &Handle) {
    let (store, (t, a), token) = (inner.store.clone(), key.clone(), handle.token.clone());
    if let Err(e) = blocking(move || store.release_agent(&t, &a, &token)).await {
        tracing::warn!(agent = %key.1, error = %e, "agent lease left to expire");
    }
}

fn remove_if_same(inner: &Inner, key: &Key, handle: &Handle) {
    let mut live = lock(&inner.live);
    if live.get(key).is_some_and(|h| h.tx.same_channel(&handle.tx)) {
        live.remove(key);
    }
    metrics::gauge!("groundwork_agents_live").set(live.len() as f64);
}

/// Leaves memory if nothing needs the actor: no subscriber, nothing in the mailbox, and no
/// handle held outside the live map and the actor itself — every command, turn and
/// subscription holds one from the moment it takes it (under the map's lock, as this check
/// is), so none can be caught half-way and none can run against a second activation.
fn evict(inner: &Inner, key: &Key, handle: &Handle, rx: &mut mpsc::Receiver<Cmd>) -> bool {
    let mut live = lock(&inner.live);
    // A turn, a command or a subscription in progress holds a handle (and so the turn lock's
    // `Arc`) beyond the two here: the live map's and the actor's.
    let in_use = Arc::strong_count(&handle.turn) > 2;
    if in_use || handle.events.receiver_count() > 0 || !rx.is_empty() {
        return false;
    }
    if live.get(key).is_some_and(|h| h.tx.same_channel(&handle.tx)) {
        live.remove(key);
    }
    metrics::gauge!("groundwork_agents_live").set(live.len() as f64);
    rx.close();
    metrics::counter!("groundwork_agent_evictions_total").increment(1);
    tracing::debug!(agent = %key.1, "agent evicted after idling");
    true
}

/// What a burst of commands leaves to do after its writes are applied in memory.
#[derive(Default)]
struct Burst {
    /// Answers to writes, sent after the commit (or its failure).
    replies: Vec<(oneshot::Sender<Result<AgentView>>, Result<AgentView>)>,
    /// Reads that came after an uncommitted write.
    gets: Vec<oneshot::Sender<AgentView>>,
    changed_state: bool,
    changed_config: bool,
}

/// Applies a burst of commands: writes in memory, one commit, then the answers.
async fn apply(
    agents: &Agents,
    key: &Key,
    handle: &Handle,
    rec: &mut AgentRecord,
    config: &mut AgentConfig,
    cmds: Vec<Cmd>,
    runner: &mut tasks::Runner,
) {
    let inner = &agents.inner;
    let before = (rec.state.clone(), config.clone(), rec.version);
    let mut burst = Burst::default();
    for cmd in cmds {
        match cmd {
            // A read after an uncommitted write is answered after the commit.
            Cmd::Get(reply) if rec.version != before.2 => burst.gets.push(reply),
            Cmd::Get(reply) => {
                let _ = reply.send(view(rec, config));
            }
            Cmd::Write {
                write,
                expect,
                reply,
            } => {
                let r = write_in_memory(rec, config, write, expect, inner.config.max_state_bytes)
                    .map(|(state, cfg)| {
                        burst.changed_state |= state;
                        burst.changed_config |= cfg;
                        view(rec, config)
                    });
                burst.replies.push((reply, r));
            }
            Cmd::Append { message, reply } => {
                let store = inner.store.clone();
                let (t, a) = key.clone();
                let r = blocking(move || store.append_message(&t, &a, &message)).await;
                if let Ok(m) = &r {
                    let _ = handle
                        .events
                        .send(AgentEvent::Message { message: m.clone() });
                }
                let _ = reply.send(r);
            }
            Cmd::Wake => runner.refresh().await,
        }
    }
    if rec.version != before.2 {
        commit(agents, key, handle, rec, config, before, &mut burst).await;
    }
    for (reply, r) in burst.replies {
        let _ = reply.send(r.map(|mut v| {
            v.updated_at = rec.updated_at;
            v
        }));
    }
    for reply in burst.gets {
        let _ = reply.send(view(rec, config));
    }
}

/// Applies one write to the agent in memory (after its `If-Match` check); returns whether
/// the state and the config changed.
fn write_in_memory(
    rec: &mut AgentRecord,
    config: &mut AgentConfig,
    write: Write,
    expect: Option<u64>,
    max_state: usize,
) -> Result<(bool, bool)> {
    if let Some(e) = expect.filter(|e| *e != rec.version) {
        return Err(AgentError::VersionMismatch {
            expected: e,
            current: rec.version,
        });
    }
    let (state, cfg) = apply_write(&rec.state, config, write, max_state)?;
    let changed = (state != rec.state, cfg != *config);
    rec.state = state;
    *config = cfg;
    rec.version += 1;
    Ok(changed)
}

/// Stores a burst's writes in one commit and tells subscribers; when the store refuses,
/// rolls the memory back to `before` and fails every write of the burst.
async fn commit(
    agents: &Agents,
    key: &Key,
    handle: &Handle,
    rec: &mut AgentRecord,
    config: &mut AgentConfig,
    before: (serde_json::Value, AgentConfig, u64),
    burst: &mut Burst,
) {
    let store = agents.inner.store.clone();
    let (t, a) = key.clone();
    let (state, cfg, version) = (
        rec.state.clone(),
        serde_json::to_value(&*config).unwrap_or_default(),
        rec.version,
    );
    match blocking(move || store.save_agent(&t, &a, &state, &cfg, version)).await {
        Ok(at) => {
            rec.updated_at = at;
            if burst.changed_state {
                let _ = handle.events.send(AgentEvent::State {
                    version: rec.version,
                    state: rec.state.clone(),
                });
            }
            if burst.changed_config {
                let _ = handle.events.send(AgentEvent::Config {
                    version: rec.version,
                    config: config.clone(),
                });
            }
            metrics::counter!("groundwork_agent_writes_total")
                .increment(burst.replies.len() as u64);
        }
        Err(e) => {
            // Nothing was acknowledged: roll the memory back and fail every write.
            (rec.state, *config, rec.version) = before;
            // Deleted meanwhile (a concurrent DELETE): the agent is gone, not the store.
            let gone = matches!(e, AgentError::NotFound { .. });
            for r in burst.replies.iter_mut().filter(|r| r.1.is_ok()) {
                r.1 = Err(if gone {
                    AgentError::NotFound {
                        kind: "agent",
                        id: key.1.clone(),
                    }
                } else {
                    AgentError::Unavailable("failing to store the change")
                });
            }
            tracing::warn!(agent = %key.1, error = %e, "agent write failed");
        }
    }
}

fn apply_write(
    state: &serde_json::Value,
    config: &AgentConfig,
    write: Write,
    max_state: usize,
) -> Result<(serde_json::Value, AgentConfig)> {
    let mut state = state.clone();
    let mut config = config.clone();
    match write {
        Write::SetState(s) => state = s,
        Write::MergeState(p) => json_patch::merge(&mut state, &p),
        Write::PatchState(p) => json_patch::patch(&mut state, &p)
            .map_err(|e| AgentError::Invalid(format!("the JSON Patch does not apply: {e}")))?,
        Write::SetConfig(c) => config = *c,
        Write::MergeConfig(p) => config = config.merged(&p)?,
    }
    config.validate()?;
    let size = serde_json::to_vec(&state).map(|v| v.len()).unwrap_or(0);
    if size > max_state {
        return Err(AgentError::Invalid(format!(
            "the state would be {size} bytes; the limit is {max_state}"
        )));
    }
    Ok((state, config))
}

impl Agents {
    /// Queues a task (run after `delay` at the earliest).
    pub async fn enqueue(&self, p: &Principal, id: &str, req: TaskRequest) -> Result<TaskRecord> {
        p.require(tasks::scope(&req.task))?;
        let key = Self::key(p, id)?;
        tasks::validate(&req.task)?;
        if req.delay_ms.is_some_and(|d| d > 31_536_000_000) {
            return Err(AgentError::Invalid(
                "delay_ms must be at most a year".into(),
            ));
        }
        // Make sure the agent exists (the queue belongs to it).
        self.call(&key, Cmd::Get).await?;
        let task = crate::store::agents::NewTask {
            tenant_id: key.0.clone(),
            agent_id: key.1.clone(),
            kind: req.task.kind.as_str().into(),
            payload: req.task.payload.clone(),
            max_attempts: req
                .max_attempts
                .unwrap_or(self.inner.config.task_max_attempts)
                .clamp(1, 100),
            run_at: Utc::now() + chrono::Duration::milliseconds(req.delay_ms.unwrap_or(0) as i64),
            schedule_id: None,
        };
        let store = self.inner.store.clone();
        let rec = blocking(move || store.enqueue_task(&task)).await?;
        self.wake(&key).await;
        Ok(rec)
    }

    /// Tells a (possibly evicted) agent to look at its queue.
    pub(super) async fn wake(&self, key: &Key) {
        // An agent another replica holds is woken there (every replica looks for due tasks).
        if let Ok(h) = self.handle(key).await {
            let _ = h.tx.send(Cmd::Wake).await;
        }
    }

    /// One task.
    pub async fn task(&self, p: &Principal, id: &str, task: i64) -> Result<TaskRecord> {
        p.require(Scope::Read)?;
        let (t, a) = Self::key(p, id)?;
        let store = self.inner.store.clone();
        blocking(move || store.task(&t, &a, task)).await
    }

    /// The agent's tasks, newest first.
    pub async fn tasks(&self, p: &Principal, id: &str, limit: u64) -> Result<Vec<TaskRecord>> {
        p.require(Scope::Read)?;
        let (t, a) = Self::key(p, id)?;
        let store = self.inner.store.clone();
        blocking(move || store.list_tasks(&t, &a, limit.clamp(1, 1000))).await
    }

    /// Adds a schedule.
    pub async fn schedule(
        &self,
        p: &Principal,
        id: &str,
        req: ScheduleRequest,
    ) -> Result<ScheduleRecord> {
        p.require(tasks::scope(&req.task))?;
        let key = Self::key(p, id)?;
        let new = tasks::new_schedule(&key, &req, Utc::now())?;
        self.call(&key, Cmd::Get).await?;
        let store = self.inner.store.clone();
        blocking(move || store.add_schedule(&new)).await
    }

    /// The agent's schedules.
    pub async fn schedules(&self, p: &Principal, id: &str) -> Result<Vec<ScheduleRecord>> {
        p.require(Scope::Read)?;
        let (t, a) = Self::key(p, id)?;
        let store = self.inner.store.clone();
        blocking(move || store.list_schedules(&t, &a)).await
    }

    /// Deletes a schedule.
    pub async fn delete_schedule(&self, p: &Principal, id: &str, schedule: &str) -> Result<()> {
        p.require(Scope::Write)?;
        let (t, a) = Self::key(p, id)?;
        let (store, s) = (self.inner.store.clone(), schedule.to_owned());
        if blocking(move || store.delete_schedule(&t, &a, &s)).await? {
            Ok(())
        } else {
            Err(AgentError::NotFound {
                kind: "schedule",
                id: schedule.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_apply_patches_and_respect_limits() {
        let cfg = AgentConfig::default();
        let state = serde_json::json!({"a": 1, "list": [1]});
        let (s, _) = apply_write(
            &state,
            &cfg,
            Write::MergeState(serde_json::json!({"a": null, "b": 2})),
            1 << 20,
        )
        .expect("merge");
        assert_eq!(s, serde_json::json!({"b": 2, "list": [1]}));
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "add", "path": "/list/-", "value": 2}
        ]))
        .expect("patch");
        let (s, _) = apply_write(&state, &cfg, Write::PatchState(patch), 1 << 20).expect("patch");
        assert_eq!(s["list"], serde_json::json!([1, 2]));
        let bad: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "remove", "path": "/missing"}
        ]))
        .expect("patch");
        assert!(apply_write(&state, &cfg, Write::PatchState(bad), 1 << 20).is_err());
        assert!(apply_write(
            &state,
            &cfg,
            Write::SetState(serde_json::json!("x".repeat(100))),
            50
        )
        .is_err());
        let (_, c) = apply_write(
            &state,
            &cfg,
            Write::MergeConfig(serde_json::json!({"top_k": 7})),
            1 << 20,
        )
        .expect("config");
        assert_eq!(c.top_k, 7);
        assert!(apply_write(
            &state,
            &cfg,
            Write::MergeConfig(serde_json::json!({"top_k": 0})),
            1 << 20
        )
        .is_err());
    }

    #[test]
    fn agent_ids_are_restricted() {
        assert!(valid_agent_id("team-ops:alice@example.com"));
        assert!(!valid_agent_id(""));
        assert!(!valid_agent_id("a/b"));
        assert!(!valid_agent_id(&"a".repeat(129)));
    }
}
