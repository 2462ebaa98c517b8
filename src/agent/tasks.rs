//! Task queues and schedules.
//!
//! Each agent's tasks run in FIFO order, one at a time, in its actor's [`Runner`]: the head of
//! the queue is claimed (marked running, one more attempt) when due, executed in its own tokio
//! task, and recorded as done, failed, or pending again after a jittered exponential backoff.
//! A head waiting for its retry holds back the tasks behind it. An attempt cut short by a
//! process exit goes back to pending at the next start (at-least-once).
//!
//! The clock's agent jobs ([`schedule_jobs`]) queue the task of every due schedule in the same
//! transaction that moves the schedule to its next time, so a due time is never queued twice
//! nor lost by a restart; it also wakes agents whose queue head became due while they were
//! out of memory, and drops stream events past their retention.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{blocking, AgentError, Agents, Cmd, Key, Result, Write};
use crate::backoff::Backoff;
use crate::error::Classify;
use crate::store::agents::{NewSchedule, TaskOutcome, TaskRecord};
use crate::workflow::schedule::Schedule;

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum TaskKind {
    /// Changes the agent's state (a merge patch or a JSON Patch).
    #[serde(rename = "state.patch")]
    StatePatch,
    /// Asks the agent a question (a chat turn).
    #[serde(rename = "chat")]
    Chat,
    /// Calls a webhook.
    #[serde(rename = "http")]
    Http,
    /// Summarises a conversation.
    #[serde(rename = "summarize")]
    Summarize,
}

impl TaskKind {
    /// Every kind.
    pub const ALL: [TaskKind; 4] = [
        TaskKind::StatePatch,
        TaskKind::Chat,
        TaskKind::Http,
        TaskKind::Summarize,
    ];

    /// As stored and sent.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskKind::StatePatch => "state.patch",
            TaskKind::Chat => "chat",
            TaskKind::Http => "http",
            TaskKind::Summarize => "summarize",
        }
    }

    /// From its stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A task: its kind and input (in `POST /v1/agents/{id}/tasks` and in a schedule).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct TaskSpec {
    /// `state.patch`, `chat`, `http` or `summarize`.
    pub kind: TaskKind,
    /// Its input.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// `POST /v1/agents/{id}/tasks`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct TaskRequest {
    /// The task.
    #[serde(flatten)]
    pub task: TaskSpec,
    /// Run no earlier than this many milliseconds from now (at most a year).
    #[serde(default)]
    #[schema(maximum = 31_536_000_000_u64)]
    pub delay_ms: Option<u64>,
    /// Attempts before it fails for good (default `agents.task_max_attempts`).
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// `POST /v1/agents/{id}/schedules`: exactly one of `at`, `after_secs`, `cron`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Once, at this time (RFC 3339).
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// Once, this many seconds from now.
    #[serde(default)]
    pub after_secs: Option<f64>,
    /// Repeatedly: a cron expression (UTC, 5 or 6 fields) or `every <duration>`.
    #[serde(default)]
    pub cron: Option<String>,
    /// The task queued each time.
    pub task: TaskSpec,
}

/// The scope needed to queue a task: webhooks reach any address the server can, so they
/// need `admin`; the rest `write`.
pub(super) fn scope(t: &TaskSpec) -> crate::store::Scope {
    if t.kind == TaskKind::Http {
        crate::store::Scope::Admin
    } else {
        crate::store::Scope::Write
    }
}

/// Checks a task's kind and payload before it is queued.
pub(super) fn validate(t: &TaskSpec) -> Result<()> {
    let bad = |m: &str| {
        Err(AgentError::Invalid(format!(
            "task `{}`: {m}",
            t.kind.as_str()
        )))
    };
    let p = &t.payload;
    match t.kind {
        TaskKind::StatePatch => match p.get("patch") {
            Some(Value::Object(_)) => Ok(()),
            Some(v @ Value::Array(_)) => serde_json::from_value::<json_patch::Patch>(v.clone())
                .map(|_| ())
                .map_err(|e| AgentError::Invalid(format!("task `state.patch`: {e}"))),
            _ => bad("payload.patch must be a merge patch (object) or a JSON Patch (array)"),
        },
        TaskKind::Chat
            if p.get("conversation_id")
                .is_some_and(|c| !c.is_string() && !c.is_null()) =>
        {
            bad("payload.conversation_id must be a string")
        }
        TaskKind::Chat => match p.get("message").and_then(Value::as_str) {
            Some(m) if !m.trim().is_empty() => Ok(()),
            _ => bad("payload.message must be a non-empty string"),
        },
        TaskKind::Summarize => match p.get("conversation_id").and_then(Value::as_str) {
            Some(_) => Ok(()),
            None => bad("payload.conversation_id is required"),
        },
        TaskKind::Http => {
            let url = p.get("url").and_then(Value::as_str).unwrap_or_default();
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return bad("payload.url must be an http(s) URL"),
            }
            match p.get("method") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(m))
                    if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) =>
                {
                    Ok(())
                }
                _ => bad("payload.method must be GET, POST, PUT, PATCH or DELETE"),
            }
        }
    }
}

/// The schedule to store for a request made at `now`.
pub(super) fn new_schedule(
    key: &Key,
    req: &ScheduleRequest,
    now: DateTime<Utc>,
) -> Result<NewSchedule> {
    validate(&req.task)?;
    let (kind, spec, next_run) = match (&req.at, req.after_secs, &req.cron) {
        (Some(at), None, None) => ("at", at.to_rfc3339(), *at),
        (None, Some(secs), None) => {
            if !(0.0..=31_536_000.0).contains(&secs) {
                return Err(AgentError::Invalid(
                    "after_secs must be within 0 and one year".into(),
                ));
            }
            (
                "after",
                format!("{secs}s"),
                now + chrono::Duration::milliseconds((secs * 1e3) as i64),
            )
        }
        (None, None, Some(expr)) => {
            let next = Schedule::parse(expr)
                .map_err(|e| AgentError::Invalid(e.to_string()))?
                .next_after(now)
                .ok_or_else(|| AgentError::Invalid(format!("`{expr}` never fires")))?;
            ("cron", expr.clone(), next)
        }
        _ => {
            return Err(AgentError::Invalid(
                "a schedule takes exactly one of `at`, `after_secs` and `cron`".into(),
            ))
        }
    };
    Ok(NewSchedule {
        tenant_id: key.0.clone(),
        agent_id: key.1.clone(),
        kind: kind.into(),
        spec,
        task_kind: req.task.kind.as_str().into(),
        payload: req.task.payload.clone(),
        next_run,
    })
}

/// Why an attempt failed.
struct Failure {
    message: String,
    retryable: bool,
}

impl From<AgentError> for Failure {
    fn from(e: AgentError) -> Self {
        let retryable = match &e {
            AgentError::Invalid(_) | AgentError::NotFound { .. } => false,
            AgentError::Knowledge(k) => k.is_retryable(),
            _ => true,
        };
        Failure {
            message: e.to_string(),
            retryable,
        }
    }
}

type Running = (TaskRecord, tokio::task::JoinHandle<Result<Value, Failure>>);

/// One agent's task runner (owned by its actor).
pub(super) struct Runner {
    agents: Agents,
    key: Key,
    next: Option<DateTime<Utc>>,
    running: Option<Running>,
    output: Option<Result<Value, Failure>>,
}

impl Runner {
    pub(super) fn new(agents: Agents, key: Key) -> Self {
        Self {
            agents,
            key,
            next: None,
            running: None,
            output: None,
        }
    }

    /// Reads when the head of the queue is due.
    pub(super) async fn refresh(&mut self) {
        let store = self.agents.inner.store.clone();
        let (t, a) = self.key.clone();
        match blocking(move || store.next_task_time(&t, &a)).await {
            Ok(next) => self.next = next,
            Err(e) => {
                tracing::warn!(agent = %self.key.1, error = %e, "could not read the task queue");
                self.next = Some(Utc::now() + chrono::Duration::seconds(5));
            }
        }
    }

    /// When the head is due, as a timer instant.
    pub(super) fn due_instant(&self) -> Option<tokio::time::Instant> {
        let next = self.next?;
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Some(tokio::time::Instant::now() + wait)
    }

    pub(super) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Waits for the running attempt (cancel-safe).
    pub(super) async fn finished(&mut self) {
        match &mut self.running {
            Some((_, h)) => {
                let out = match h.await {
                    Ok(r) => r,
                    Err(e) => Err(Failure {
                        message: format!("the task panicked or was cancelled: {e}"),
                        retryable: true,
                    }),
                };
                self.output = Some(out);
            }
            None => std::future::pending().await,
        }
    }

    /// Claims the head if due and starts it.
    pub(super) async fn start_next(&mut self) {
        let store = self.agents.inner.store.clone();
        let (t, a) = self.key.clone();
        let holder = self.agents.inner.replica.clone();
        match blocking(move || store.claim_task(&t, &a, Utc::now(), &holder)).await {
            Ok(Some(task)) => {
                self.agents
                    .publish(&self.key, super::AgentEvent::Task { task: task.clone() });
                let (agents, key, t) = (self.agents.clone(), self.key.clone(), task.clone());
                let handle = self
                    .agents
                    .inner
                    .supervisor
                    .spawn(async move { execute(&agents, &key, &t).await });
                self.running = Some((task, handle));
            }
            Ok(None) => self.refresh().await,
            Err(e) => {
                tracing::warn!(agent = %self.key.1, error = %e, "could not claim a task");
                self.next = Some(Utc::now() + chrono::Duration::seconds(5));
            }
        }
    }

    /// Records the finished attempt.
    pub(super) async fn record(&mut self) {
        let Some((task, _)) = self.running.take() else {
            return;
        };
        let out = self.output.take().unwrap_or_else(|| {
            Err(Failure {
                message: "no outcome".into(),
                retryable: true,
            })
        });
        let config = &self.agents.inner.config;
        let outcome = match out {
            Ok(v) => TaskOutcome::Done(v),
            Err(f) if f.retryable && task.attempts < task.max_attempts => {
                let delay = Backoff::Exponential {
                    base_ms: config.task_backoff_ms,
                    max_ms: 300_000,
                }
                .delay(task.attempts);
                TaskOutcome::Retry {
                    error: f.message,
                    at: Utc::now()
                        + chrono::Duration::from_std(delay)
                            .unwrap_or_else(|_| chrono::Duration::seconds(1)),
                }
            }
            Err(f) => TaskOutcome::Failed(f.message),
        };
        let label = match &outcome {
            TaskOutcome::Done(_) => "done",
            TaskOutcome::Retry { .. } => "retry",
            TaskOutcome::Failed(_) => "failed",
        };
        metrics::counter!("groundwork_agent_task_attempts_total", "kind" => task.kind.clone(), "outcome" => label).increment(1);
        let store = self.agents.inner.store.clone();
        let id = task.id;
        match blocking(move || store.finish_task(id, &outcome)).await {
            Ok(t) => {
                tracing::info!(agent = %self.key.1, task = t.id, kind = %t.kind, status = ?t.status, attempts = t.attempts, "agent task attempt ended");
                self.agents
                    .publish(&self.key, super::AgentEvent::Task { task: t });
            }
            Err(e) => tracing::warn!(agent = %self.key.1, error = %e, "could not record a task"),
        }
        self.refresh().await;
    }
}

/// Runs one attempt of a task.
async fn execute(agents: &Agents, key: &Key, task: &TaskRecord) -> Result<Value, Failure> {
    let p = &task.payload;
    let Some(kind) = TaskKind::parse(&task.kind) else {
        return Err(Failure {
            message: format!("unknown task kind `{}`", task.kind),
            retryable: false,
        });
    };
    match kind {
        TaskKind::StatePatch => {
            let write = match p.get("patch") {
                Some(v @ Value::Array(_)) => {
                    Write::PatchState(serde_json::from_value(v.clone()).map_err(|e| Failure {
                        message: e.to_string(),
                        retryable: false,
                    })?)
                }
                Some(v) => Write::MergeState(v.clone()),
                None => Write::MergeState(json!({})),
            };
            let v = agents
                .call(key, |reply| Cmd::Write {
                    write: write.clone(),
                    expect: None,
                    reply,
                })
                .await??;
            Ok(json!({"version": v.version}))
        }
        TaskKind::Chat => {
            let message = p["message"].as_str().unwrap_or_default().to_owned();
            let conversation = p["conversation_id"].as_str().map(str::to_owned);
            let out = super::chat::run_task(agents, key, message, conversation).await?;
            Ok(out)
        }
        TaskKind::Summarize => {
            let conversation = p["conversation_id"].as_str().unwrap_or_default().to_owned();
            Ok(super::summary::summarize(agents, key, &conversation).await?)
        }
        TaskKind::Http => {
            let url = p["url"].as_str().unwrap_or_default();
            let method = p["method"].as_str().unwrap_or("POST");
            let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| Failure {
                message: e.to_string(),
                retryable: false,
            })?;
            let mut req = agents
                .inner
                .http
                .request(method, url)
                .header("x-groundwork-agent", &key.1)
                .header("x-groundwork-task", task.id.to_string())
                .header("idempotency-key", format!("agent-task-{}", task.id));
            if let Some(body) = p.get("body") {
                req = req.json(body);
            }
            let res = req.send().await.map_err(|e| Failure {
                message: format!("request failed: {}", e.without_url()),
                retryable: true,
            })?;
            let status = res.status();
            let body = res.text().await.unwrap_or_default();
            let body: String = body.chars().take(4096).collect();
            if status.is_success() {
                Ok(json!({"status": status.as_u16(), "body": body}))
            } else {
                Err(Failure {
                    message: format!("HTTP {status}: {body}"),
                    retryable: status.is_server_error()
                        || status.as_u16() == 429
                        || status.as_u16() == 408,
                })
            }
        }
    }
}

/// Registers the agents' periodic jobs on the clock: due schedules fire every 500 ms (each
/// queues its task in the transaction that moves it to its next time); every 5 s, agents whose
/// queue head came due while out of memory are woken; every minute, stream events past their
/// retention are dropped. The jobs read the store on the clock thread and wake agents in
/// tracked tasks on `rt`.
pub(super) fn schedule_jobs(agents: &Agents, rt: tokio::runtime::Handle) -> std::io::Result<()> {
    let clock = agents.inner.clock.clone();
    let (a, h) = (agents.clone(), rt.clone());
    clock.every(
        "fire-agent-schedules",
        Duration::from_millis(500),
        move || {
            if !a.is_stopping() {
                let woken = fire_due_schedules(&a);
                wake_all(&a, &h, woken);
            }
        },
    )?;
    let (a, h) = (agents.clone(), rt);
    clock.every("wake-due-agents", Duration::from_secs(5), move || {
        if a.is_stopping() {
            return;
        }
        // Tasks of a replica that died go back to their queues first (then due, they wake
        // their agents here, on whichever replica).
        match a.requeue_orphaned_tasks() {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "tasks of a replica gone silent requeued"),
            Err(e) => tracing::warn!(error = %e, "could not requeue orphaned tasks"),
        }
        match a.inner.store.agents_with_due_tasks(Utc::now()) {
            Ok(due) => wake_all(&a, &h, due),
            Err(e) => tracing::warn!(error = %e, "could not read agents with due tasks"),
        }
    })?;
    let a = agents.clone();
    clock.every("purge-stream-events", Duration::from_secs(60), move || {
        if a.is_stopping() {
            return;
        }
        let retention = chrono::Duration::seconds(a.inner.config.event_retention_secs as i64);
        if let Err(e) = a.inner.store.purge_events(Utc::now() - retention) {
            tracing::warn!(error = %e, "could not drop old stream events");
        }
    })
}

/// Queues the task of every due schedule; returns the agents to wake.
fn fire_due_schedules(agents: &Agents) -> Vec<Key> {
    let fired = agents.inner.store.fire_due_schedules(
        Utc::now(),
        agents.inner.config.task_max_attempts,
        &|s| {
            if s.kind != "cron" {
                return None;
            }
            Schedule::parse(&s.spec)
                .ok()
                .and_then(|c| c.next_after(Utc::now()))
        },
    );
    match fired {
        Ok(tasks) => {
            for t in &tasks {
                tracing::info!(agent = %t.agent_id, task = t.id, kind = %t.kind, schedule = ?t.schedule_id, "schedule fired");
            }
            metrics::counter!("groundwork_agent_schedules_fired_total")
                .increment(tasks.len() as u64);
            tasks
                .into_iter()
                .map(|t| (t.tenant_id, t.agent_id))
                .collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not fire schedules");
            Vec::new()
        }
    }
}

/// Wakes each agent once, in a task on the agents' runtime (a full mailbox never holds up
/// the clock).
fn wake_all(agents: &Agents, rt: &tokio::runtime::Handle, mut keys: Vec<Key>) {
    if keys.is_empty() {
        return;
    }
    keys.sort();
    keys.dedup();
    let _entered = rt.enter();
    let a = agents.clone();
    agents.inner.supervisor.spawn(async move {
        for key in keys {
            a.wake(&key).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, payload: Value) -> TaskSpec {
        TaskSpec {
            kind: TaskKind::parse(kind).expect("a task kind"),
            payload,
        }
    }

    #[test]
    fn tasks_are_validated() {
        assert!(validate(&spec("state.patch", json!({"patch": {"a": 1}}))).is_ok());
        assert!(validate(&spec(
            "state.patch",
            json!({"patch": [{"op": "add", "path": "/a", "value": 1}]})
        ))
        .is_ok());
        assert!(validate(&spec("state.patch", json!({"patch": 3}))).is_err());
        assert!(validate(&spec("chat", json!({"message": " "}))).is_err());
        assert!(validate(&spec("http", json!({"url": "file:///etc/passwd"}))).is_err());
        assert!(validate(&spec(
            "http",
            json!({"url": "http://127.0.0.1:9/x", "method": "GET"})
        ))
        .is_ok());
        // An unknown kind is not a task at all: the body is refused as it is read.
        assert!(serde_json::from_value::<TaskSpec>(json!({"kind": "reboot"})).is_err());
        for k in TaskKind::ALL {
            let read: TaskKind = serde_json::from_value(json!(k.as_str())).expect("a kind");
            assert_eq!((read, TaskKind::parse(k.as_str())), (k, Some(k)));
        }
    }

    #[test]
    fn schedules_take_one_timing() {
        let key = ("t".to_owned(), "a".to_owned());
        let now = Utc::now();
        let task = spec("state.patch", json!({"patch": {"x": 1}}));
        let req = |at, after_secs, cron: Option<&str>| ScheduleRequest {
            at,
            after_secs,
            cron: cron.map(str::to_owned),
            task: task.clone(),
        };
        let s = new_schedule(&key, &req(None, Some(2.5), None), now).expect("after");
        assert_eq!(s.kind, "after");
        assert_eq!(s.next_run, now + chrono::Duration::milliseconds(2500));
        let s = new_schedule(&key, &req(None, None, Some("*/5 * * * *")), now).expect("cron");
        assert!(s.next_run > now && s.next_run <= now + chrono::Duration::minutes(5));
        assert!(new_schedule(&key, &req(Some(now), Some(1.0), None), now).is_err());
        assert!(new_schedule(&key, &req(None, None, None), now).is_err());
        assert!(new_schedule(&key, &req(None, None, Some("not cron")), now).is_err());
    }
}
