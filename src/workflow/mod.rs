//! Durable workflows: long work as a sequence of named steps whose outputs are persisted.
//!
//! A workflow type is a [`Handler`] whose `run` calls [`Ctx::step`] for each unit of work.
//! A completed step's output is stored before the next step starts; when a run is resumed
//! (after a sleep, a retry backoff, an event, or a process restart) `run` is called again from
//! the top and every completed step returns its stored output without running again — the
//! model of Cloudflare Workflows and Temporal. Steps therefore must be deterministic in their
//! names and idempotent in their effects (a process may die after an effect and before the
//! step is recorded; effects that live in the same database check for themselves).
//!
//! Per step: attempts, backoff (constant, linear, exponential; jittered), a per-attempt
//! timeout, and errors marked non-retryable. Runs can sleep, wait for a named event with a
//! timeout, be cancelled, and be created with an idempotency key; each type has a concurrency
//! limit. Progress and state changes are broadcast for Server-Sent Events.
//!
//! This module owns the execution model only. It must never know what a step does (that is
//! the handlers' business, in the service) nor speak HTTP.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::backoff::Backoff;
use crate::store::{
    claim_lost, AttemptError, Claim, ClaimRequest, NewWorkflow, StepRecord, StepStatus, StoreError,
    WorkflowRecord, WorkflowStatus, WorkflowStore,
};
use crate::supervisor::{Supervisor, Thread};

pub mod schedule;
#[cfg(test)]
mod tests;

/// Errors of engine calls.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No handler for this workflow type.
    #[error("unknown workflow type `{0}`")]
    UnknownKind(String),
}

/// Retry policy of a step.
#[derive(Debug, Clone, Copy)]
pub struct StepOptions {
    /// Attempts in all (1 = no retry). Attempts interrupted by a process exit count.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Longest an attempt may take; a slower attempt counts as failed (`timeout`, retryable).
    /// Step bodies see the deadline through [`Attempt`] and should stop early.
    pub timeout: Option<Duration>,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::Exponential {
                base_ms: 1_000,
                max_ms: 60_000,
            },
            timeout: None,
        }
    }
}

/// Retry delays up to this long are waited in place; longer ones park the run.
const INLINE_RETRY: Duration = Duration::from_secs(2);

/// What a failed attempt reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// Stable code.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
}

impl StepError {
    /// A transient failure.
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure another attempt would repeat.
    pub fn fatal(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }
}

/// A step that failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    /// The step.
    pub step: String,
    /// Stable code of the last error.
    pub code: String,
    /// The last error.
    pub message: String,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step `{}` failed: {} ({})",
            self.step, self.message, self.code
        )
    }
}

/// Why `run` stopped before finishing.
#[derive(Debug)]
pub enum Interrupt {
    /// The run waits (a sleep, a retry backoff, an event); it is parked until `until` or the
    /// event arrives.
    Suspend {
        /// Wake time.
        until: Option<DateTime<Utc>>,
        /// Awaited event.
        event: Option<String>,
    },
    /// Cancellation was requested.
    Cancelled,
    /// The process is stopping; the run is released for another process or the next start.
    Stopping,
    /// Another process took the run over (this one's lease lapsed): nothing more is written.
    Lost,
    /// A step failed for good and the handler did not absorb it.
    Failed(StepFailure),
    /// Storage failed.
    Store(StoreError),
}

impl Interrupt {
    /// A failure decided outside any step body (a missing input, an unavailable model...).
    pub fn failed(step: &str, code: &str, message: impl std::fmt::Display) -> Self {
        Interrupt::Failed(StepFailure {
            step: step.to_owned(),
            code: code.to_owned(),
            message: message.to_string(),
        })
    }
}

impl From<StoreError> for Interrupt {
    fn from(e: StoreError) -> Self {
        if claim_lost(&e) {
            Interrupt::Lost
        } else {
            Interrupt::Store(e)
        }
    }
}

/// One attempt of a step, as its body sees it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// When the attempt times out.
    pub deadline: Option<Instant>,
}

impl Attempt {
    /// Time left before the deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// A workflow type.
pub trait Handler: Send + Sync {
    /// Its type name (`ingest`, `reindex`...).
    fn kind(&self) -> &'static str;
    /// Runs (or resumes) a workflow: calls [`Ctx::step`] for each unit of work.
    fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value, Interrupt>;
    /// Cleans up after a cancelled run.
    fn cancelled(&self, _wf: &WorkflowRecord) {}
}

/// A change broadcast to subscribers (Server-Sent Events).
#[derive(Debug, Clone)]
pub struct Event {
    /// The workflow.
    pub workflow_id: String,
    /// `status`, `step` or `progress`.
    pub event: &'static str,
    /// The run's status after the change.
    pub status: WorkflowStatus,
    /// The step concerned (`step` events).
    pub step: Option<StepRecord>,
    /// Progress (`progress` events).
    pub progress: Option<Value>,
    /// Error of a failed run.
    pub error: Option<String>,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Who claims runs (the replica's id; unique per process).
    pub holder: String,
    /// How long a claim holds without renewal; renewed every third of it while the run
    /// executes, and taken over by another process once it lapses.
    pub lease: Duration,
    /// Worker threads (runs executing at once).
    pub workers: usize,
    /// Most runs of one type executing at once over every process sharing the store (types
    /// not listed: 1).
    pub concurrency: HashMap<String, usize>,
    /// How often the run table is polled for due work when nothing signals.
    pub poll: Duration,
}

struct Slots {
    busy: usize,
    /// Runs executing here, with their claims' tokens.
    in_flight: HashMap<String, u32>,
    kicked: bool,
}

struct Inner {
    store: Arc<dyn WorkflowStore>,
    handlers: RwLock<HashMap<&'static str, Arc<dyn Handler>>>,
    options: EngineOptions,
    stopping: AtomicBool,
    slots: Mutex<Slots>,
    /// Runs asked to stop while this process runs them; checked before every step without a
    /// store read (a cancel asked before a start is in the run's record; one asked on another
    /// process arrives with the next lease renewal).
    cancelled: Mutex<HashSet<String>>,
    /// Runs executing here whose claim another process took over (the lease lapsed): they
    /// stop at their next step without writing anything more.
    lost: Mutex<HashSet<String>>,
    wake: Condvar,
    events: tokio::sync::broadcast::Sender<Event>,
}

/// The workflow engine: a dispatcher thread and a pool of workers over a [`WorkflowStore`].
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    threads: Arc<Mutex<Vec<Thread>>>,
    supervisor: Supervisor,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// An engine over `store`; register handlers, then [`Engine::start`].
    pub fn new(
        store: Arc<dyn WorkflowStore>,
        options: EngineOptions,
        supervisor: Supervisor,
    ) -> Self {
        let (events, _) = tokio::sync::broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                store,
                handlers: RwLock::new(HashMap::new()),
                options,
                stopping: AtomicBool::new(false),
                slots: Mutex::new(Slots {
                    busy: 0,
                    in_flight: HashMap::new(),
                    kicked: false,
                }),
                cancelled: Mutex::new(HashSet::new()),
                lost: Mutex::new(HashSet::new()),
                wake: Condvar::new(),
                events,
            }),
            threads: Arc::new(Mutex::new(Vec::new())),
            supervisor,
        }
    }

    /// Adds a workflow type.
    pub fn register(&self, handler: Arc<dyn Handler>) {
        self.inner
            .handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handler.kind(), handler);
    }

    /// Requeues runs a previous process left executing (where the store can tell they are
    /// nobody's) and starts the threads.
    pub fn start(&self) -> Result<(), WorkflowError> {
        let resumed = self.inner.store.requeue_interrupted()?;
        if resumed > 0 {
            tracing::info!(workflows = resumed, "resuming interrupted workflows");
        }
        let (tx, rx) = mpsc::channel::<WorkflowRecord>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = lock(&self.threads);
        for i in 0..self.inner.options.workers.max(1) {
            let inner = self.inner.clone();
            let rx = rx.clone();
            threads.push(
                self.supervisor
                    .thread(format!("gw-workflow-{i}"), move || loop {
                        let next = lock(&rx).recv();
                        match next {
                            Ok(wf) => inner.execute(wf),
                            Err(_) => return,
                        }
                    })
                    .map_err(|e| StoreError::Database(format!("cannot start a worker: {e}")))?,
            );
        }
        let inner = self.inner.clone();
        threads.push(
            self.supervisor
                .thread("gw-workflow-dispatch", move || inner.dispatch(tx))
                .map_err(|e| StoreError::Database(format!("cannot start dispatcher: {e}")))?,
        );
        Ok(())
    }

    /// Stops taking work, lets executing steps finish (their runs are released, for another
    /// process or the next start) and joins the threads.
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.kick();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            t.join();
        }
    }

    /// Creates a run (or returns the one with the same idempotency key, `false`).
    pub fn create(&self, new: NewWorkflow) -> Result<(WorkflowRecord, bool), WorkflowError> {
        if !self
            .inner
            .handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(new.kind.as_str())
        {
            return Err(WorkflowError::UnknownKind(new.kind));
        }
        let (wf, created) = self.inner.store.create_workflow(&new)?;
        if created {
            self.inner.emit(&wf, "status", None, None);
            self.inner.kick();
        }
        Ok((wf, created))
    }

    /// Asks a run to stop (at its next step; at once when it is not executing).
    pub fn cancel(&self, id: &str) -> Result<WorkflowRecord, WorkflowError> {
        let wf = self.inner.store.request_cancel(id)?;
        if !wf.status.is_terminal() {
            lock(&self.inner.cancelled).insert(id.to_owned());
        }
        self.inner.kick();
        Ok(wf)
    }

    /// Runs a finished run again from its failed steps.
    pub fn retry(&self, id: &str) -> Result<WorkflowRecord, WorkflowError> {
        let wf = self.inner.store.retry_workflow(id)?;
        self.inner.emit(&wf, "status", None, None);
        self.inner.kick();
        Ok(wf)
    }

    /// Sends an event to a run.
    pub fn send_event(&self, id: &str, name: &str, payload: &Value) -> Result<(), WorkflowError> {
        self.inner.store.send_event(id, name, payload)?;
        self.inner.kick();
        Ok(())
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Runs executing now.
    pub fn busy(&self) -> usize {
        lock(&self.inner.slots).busy
    }
}

impl Inner {
    fn kick(&self) {
        lock(&self.slots).kicked = true;
        self.wake.notify_all();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn emit(
        &self,
        wf: &WorkflowRecord,
        event: &'static str,
        step: Option<&StepRecord>,
        progress: Option<&Value>,
    ) {
        // Nobody listening is fine.
        let _ = self.events.send(Event {
            workflow_id: wf.id.clone(),
            event,
            status: wf.status,
            step: step.cloned(),
            progress: progress.cloned(),
            error: wf.error.clone(),
        });
    }

    fn dispatch(&self, tx: mpsc::Sender<WorkflowRecord>) {
        let renew_every = self.options.lease / 3;
        let mut renewed = Instant::now();
        while !self.stopping() {
            if renewed.elapsed() >= renew_every {
                self.renew();
                renewed = Instant::now();
            }
            let (free, exclude) = {
                let s = lock(&self.slots);
                (
                    self.options.workers.max(1).saturating_sub(s.busy),
                    s.in_flight.keys().cloned().collect::<Vec<_>>(),
                )
            };
            if free > 0 {
                let claimed = self.store.claim_workflows(&ClaimRequest {
                    holder: &self.options.holder,
                    lease: self.options.lease,
                    now: Utc::now(),
                    free,
                    limits: &self.options.concurrency,
                    exclude: &exclude,
                });
                match claimed {
                    Ok(claimed) => {
                        if !claimed.is_empty() {
                            metrics::counter!("groundwork_workflow_claims_total")
                                .increment(claimed.len() as u64);
                        }
                        let mut s = lock(&self.slots);
                        for wf in claimed {
                            s.busy += 1;
                            s.in_flight.insert(wf.id.clone(), wf.runs);
                            if tx.send(wf).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot claim due workflows"),
                }
            }
            let mut s = lock(&self.slots);
            if !s.kicked && !self.stopping() {
                let wait = self
                    .options
                    .poll
                    .min(renew_every.saturating_sub(renewed.elapsed()));
                s = self
                    .wake
                    .wait_timeout(s, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            s.kicked = false;
        }
        // Dropping `tx` ends the workers once they finish their current run.
    }

    /// Extends the leases of the runs executing here; a run another process took over is
    /// marked lost, one whose cancellation was asked for (anywhere) cancelled.
    fn renew(&self) {
        let held: Vec<(String, u32)> = lock(&self.slots)
            .in_flight
            .iter()
            .map(|(id, run)| (id.clone(), *run))
            .collect();
        if held.is_empty() {
            return;
        }
        let claims: Vec<Claim<'_>> = held
            .iter()
            .map(|(id, run)| Claim {
                workflow_id: id,
                run: *run,
            })
            .collect();
        match self
            .store
            .renew_leases(&self.options.holder, &claims, self.options.lease)
        {
            Ok(states) => {
                for state in states {
                    if !state.held {
                        tracing::warn!(workflow = %state.workflow_id, "claim taken over by another replica; stopping here");
                        lock(&self.lost).insert(state.workflow_id.clone());
                    }
                    if state.cancel_requested {
                        lock(&self.cancelled).insert(state.workflow_id);
                    }
                }
            }
            // The leases run on; the next renewal (or a fenced write) tells whether they held.
            Err(e) => tracing::warn!(error = %e, "cannot renew workflow leases"),
        }
    }

    fn release(&self, wf: &WorkflowRecord) {
        let mut s = lock(&self.slots);
        s.busy = s.busy.saturating_sub(1);
        s.in_flight.remove(&wf.id);
        s.kicked = true;
        drop(s);
        lock(&self.lost).remove(&wf.id);
        lock(&self.cancelled).remove(&wf.id);
        self.wake.notify_all();
    }

    fn execute(&self, mut wf: WorkflowRecord) {
        let handler = self
            .handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(wf.kind.as_str())
            .cloned();
        let outcome = match handler {
            None => Err(Interrupt::Failed(StepFailure {
                step: String::new(),
                code: "unknown_kind".into(),
                message: format!("no handler for workflow type `{}`", wf.kind),
            })),
            Some(_) if self.stopping() => Err(Interrupt::Stopping),
            Some(_) if lock(&self.lost).contains(&wf.id) => Err(Interrupt::Lost),
            Some(_) if wf.cancel_requested || lock(&self.cancelled).contains(&wf.id) => {
                Err(Interrupt::Cancelled)
            }
            Some(handler) => self.run(&mut wf, handler.as_ref()),
        };
        if let (Err(Interrupt::Cancelled), Some(h)) = (
            &outcome,
            self.handlers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(wf.kind.as_str())
                .cloned(),
        ) {
            h.cancelled(&wf);
        }
        let now = Utc::now();
        wf.wake_at = None;
        wf.waiting_for = None;
        match outcome {
            Ok(output) => {
                wf.status = WorkflowStatus::Completed;
                wf.output = Some(output);
                wf.finished_at = Some(now);
            }
            Err(Interrupt::Suspend { until, event }) => {
                wf.status = if event.is_some() {
                    WorkflowStatus::Waiting
                } else {
                    WorkflowStatus::Sleeping
                };
                wf.wake_at = until;
                wf.waiting_for = event;
            }
            Err(Interrupt::Cancelled) => {
                wf.status = WorkflowStatus::Cancelled;
                wf.finished_at = Some(now);
            }
            Err(Interrupt::Stopping) => wf.status = WorkflowStatus::Queued,
            Err(Interrupt::Lost) => {
                tracing::warn!(workflow = %wf.id, kind = %wf.kind, "run taken over by another replica");
                metrics::counter!("groundwork_workflow_runs_lost_total", "kind" => wf.kind.clone())
                    .increment(1);
                self.release(&wf);
                return;
            }
            Err(Interrupt::Failed(f)) => {
                wf.status = WorkflowStatus::Failed;
                wf.error = Some(f.to_string());
                wf.finished_at = Some(now);
            }
            Err(Interrupt::Store(e)) if e.is_retryable() || self.stopping() => {
                tracing::warn!(workflow = %wf.id, error = %e, "storage busy; run parked");
                wf.status = WorkflowStatus::Sleeping;
                wf.wake_at = Some(now + chrono::Duration::seconds(1));
            }
            Err(Interrupt::Store(e)) => {
                wf.status = WorkflowStatus::Failed;
                wf.error = Some(format!("storage failed: {e}"));
                wf.finished_at = Some(now);
            }
        }
        match self.store.save_workflow(&wf) {
            Ok(()) => {}
            Err(e) if claim_lost(&e) => {
                tracing::warn!(workflow = %wf.id, "run taken over by another replica before its state was saved");
                self.release(&wf);
                return;
            }
            // The run stays `running` in the store; once its lease lapses it is claimed again
            // (at the next start, on a store this process owns).
            Err(e) => {
                tracing::error!(workflow = %wf.id, error = %e, "cannot record the run's state")
            }
        }
        tracing::info!(workflow = %wf.id, kind = %wf.kind, status = wf.status.as_str(), "workflow run ended");
        metrics::counter!("groundwork_workflow_runs_total", "kind" => wf.kind.clone(), "status" => wf.status.as_str())
            .increment(1);
        self.emit(&wf, "status", None, None);
        self.release(&wf);
    }

    /// Runs a claimed run (the claim recorded it running, with its start and run count).
    fn run(&self, wf: &mut WorkflowRecord, handler: &dyn Handler) -> Result<Value, Interrupt> {
        self.emit(wf, "status", None, None);
        let steps = self.store.steps(&wf.id)?;
        let next_position = steps.iter().map(|s| s.position + 1).max().unwrap_or(0);
        let mut ctx = Ctx {
            engine: self,
            wf: wf.clone(),
            steps: steps.into_iter().map(|s| (s.name.clone(), s)).collect(),
            next_position,
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| handler.run(&mut ctx))) {
            Ok(outcome) => outcome,
            Err(panic) => Err(Interrupt::Failed(StepFailure {
                step: String::new(),
                code: "panic".into(),
                message: panic_message(panic.as_ref()),
            })),
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

/// What a handler's `run` works with: its run, its steps, and the engine's services.
pub struct Ctx<'a> {
    engine: &'a Inner,
    wf: WorkflowRecord,
    steps: HashMap<String, StepRecord>,
    next_position: u32,
}

impl Ctx<'_> {
    /// The run.
    pub fn workflow(&self) -> &WorkflowRecord {
        &self.wf
    }

    /// The run's input.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, Interrupt> {
        serde_json::from_value(self.wf.input.clone()).map_err(|e| {
            Interrupt::Failed(StepFailure {
                step: String::new(),
                code: "bad_input".into(),
                message: format!("workflow input unreadable: {e}"),
            })
        })
    }

    /// The output of a completed step, if it completed and its output is kept.
    pub fn done<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let s = self.steps.get(name)?;
        if s.status != StepStatus::Completed {
            return None;
        }
        serde_json::from_value(s.output.clone()?).ok()
    }

    /// How a step ended for good, if it failed.
    pub fn failure(&self, name: &str) -> Option<StepFailure> {
        let s = self.steps.get(name)?;
        (s.status == StepStatus::Failed).then(|| failure_of(s))
    }

    /// Stops here when the process stops or cancellation was asked for.
    pub fn checkpoint(&mut self) -> Result<(), Interrupt> {
        if self.engine.stopping() {
            return Err(Interrupt::Stopping);
        }
        if lock(&self.engine.lost).contains(&self.wf.id) {
            return Err(Interrupt::Lost);
        }
        if lock(&self.engine.cancelled).contains(&self.wf.id) {
            return Err(Interrupt::Cancelled);
        }
        Ok(())
    }

    /// Records progress (shown by the API and streamed to subscribers).
    pub fn progress(&mut self, progress: Value) -> Result<(), Interrupt> {
        if self.wf.progress == progress {
            return Ok(());
        }
        self.engine
            .store
            .save_progress(&Claim::of(&self.wf), &progress)?;
        self.engine
            .emit(&self.wf, "progress", None, Some(&progress));
        self.wf.progress = progress;
        Ok(())
    }

    /// Drops kept outputs of completed steps named `prefix…` except `keep` (once no later
    /// step will read them again).
    pub fn forget(&mut self, prefix: &str, keep: &str) -> Result<(), Interrupt> {
        self.engine
            .store
            .forget_outputs(&Claim::of(&self.wf), prefix, keep)?;
        for (name, s) in self.steps.iter_mut() {
            if name.starts_with(prefix) && name != keep {
                s.output = None;
            }
        }
        Ok(())
    }

    fn record(&mut self, name: &str) -> StepRecord {
        if let Some(s) = self.steps.get(name) {
            return s.clone();
        }
        let position = self.next_position;
        self.next_position += 1;
        StepRecord {
            name: name.to_owned(),
            position,
            status: StepStatus::Running,
            attempts: 0,
            output: None,
            errors: Vec::new(),
            wake_at: None,
            started_at: Utc::now(),
            finished_at: None,
        }
    }

    fn save(&mut self, step: StepRecord) -> Result<(), Interrupt> {
        self.engine.store.save_step(&Claim::of(&self.wf), &step)?;
        self.engine.emit(&self.wf, "step", Some(&step), None);
        self.steps.insert(step.name.clone(), step);
        Ok(())
    }

    /// Runs a step once: returns its stored output when it already completed, else runs
    /// `body` (retrying per `options`) and stores the output before returning it.
    pub fn step<T, F>(
        &mut self,
        name: &str,
        options: &StepOptions,
        mut body: F,
    ) -> Result<T, Interrupt>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(&Attempt) -> Result<T, StepError>,
    {
        if let Some(done) = self.recorded(name) {
            return done;
        }
        self.checkpoint()?;
        loop {
            let mut rec = self.record(name);
            if rec.attempts >= options.max_attempts {
                // Attempts were used up by runs that never reported back (process exits).
                rec.status = StepStatus::Failed;
                rec.finished_at = Some(Utc::now());
                rec.errors.push(AttemptError {
                    attempt: rec.attempts,
                    code: "interrupted".into(),
                    message: "every attempt was interrupted before it finished".into(),
                    retryable: false,
                    at: Utc::now(),
                });
                let failure = failure_of(&rec);
                self.save(rec)?;
                return Err(Interrupt::Failed(failure));
            }
            rec.attempts += 1;
            rec.status = StepStatus::Running;
            rec.wake_at = None;
            self.save(rec.clone())?;
            match self.attempt(rec.attempts, options, &mut body) {
                Ok(value) => {
                    let output = serde_json::to_value(&value).map_err(|e| {
                        Interrupt::Failed(StepFailure {
                            step: name.to_owned(),
                            code: "bad_output".into(),
                            message: format!("output not serialisable: {e}"),
                        })
                    })?;
                    rec.status = StepStatus::Completed;
                    rec.output = Some(output);
                    rec.finished_at = Some(Utc::now());
                    self.save(rec)?;
                    return Ok(value);
                }
                Err(e) => {
                    let delay = self.failed_attempt(rec, e, options)?;
                    std::thread::sleep(delay);
                    self.checkpoint()?;
                }
            }
        }
    }

    /// The outcome of an earlier run of step `name`, when it settles the call: its stored
    /// output, its final failure, or a suspension until its retry is due.
    fn recorded<T: DeserializeOwned>(&self, name: &str) -> Option<Result<T, Interrupt>> {
        let s = self.steps.get(name)?;
        let failed = |code: &str, message: String| {
            Interrupt::Failed(StepFailure {
                step: name.to_owned(),
                code: code.into(),
                message,
            })
        };
        match s.status {
            StepStatus::Completed => Some(match s.output.clone() {
                None => Err(failed(
                    "output_dropped",
                    "the step's output was dropped before a later read".into(),
                )),
                Some(output) => serde_json::from_value(output)
                    .map_err(|e| failed("bad_output", format!("stored output unreadable: {e}"))),
            }),
            StepStatus::Failed => Some(Err(Interrupt::Failed(failure_of(s)))),
            StepStatus::Retrying => s.wake_at.filter(|t| *t > Utc::now()).map(|until| {
                Err(Interrupt::Suspend {
                    until: Some(until),
                    event: None,
                })
            }),
            StepStatus::Running => None,
        }
    }

    /// Runs attempt `number` of a step's body: a panic is a fatal error, an attempt that
    /// overran its timeout a retryable one.
    fn attempt<T>(
        &self,
        number: u32,
        options: &StepOptions,
        body: &mut impl FnMut(&Attempt) -> Result<T, StepError>,
    ) -> Result<T, StepError> {
        let started = Instant::now();
        let attempt = Attempt {
            number,
            deadline: options.timeout.map(|t| started + t),
        };
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| body(&attempt))) {
            Ok(r) => r,
            Err(panic) => Err(StepError::fatal("panic", panic_message(panic.as_ref()))),
        };
        metrics::histogram!("groundwork_workflow_step_seconds", "kind" => self.wf.kind.clone())
            .record(started.elapsed().as_secs_f64());
        match (result, options.timeout) {
            (Ok(_), Some(t)) if started.elapsed() > t => Err(StepError::retryable(
                "timeout",
                format!("the attempt took longer than {} ms", t.as_millis()),
            )),
            (r, _) => r,
        }
    }

    /// Records a failed attempt. Returns the delay to wait inline before the next attempt;
    /// `Err` when the step failed for good or its retry is far enough off to park the run.
    fn failed_attempt(
        &mut self,
        mut rec: StepRecord,
        e: StepError,
        options: &StepOptions,
    ) -> Result<Duration, Interrupt> {
        tracing::warn!(workflow = %self.wf.id, step = %rec.name, attempt = rec.attempts, code = %e.code, error = %e.message, "step attempt failed");
        rec.errors.push(AttemptError {
            attempt: rec.attempts,
            code: e.code.clone(),
            message: e.message.clone(),
            retryable: e.retryable,
            at: Utc::now(),
        });
        if !e.retryable || rec.attempts >= options.max_attempts {
            rec.status = StepStatus::Failed;
            rec.finished_at = Some(Utc::now());
            let failure = failure_of(&rec);
            self.save(rec)?;
            return Err(Interrupt::Failed(failure));
        }
        let delay = options.backoff.delay(rec.attempts);
        let until = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        rec.status = StepStatus::Retrying;
        rec.wake_at = Some(until);
        self.save(rec)?;
        if delay > INLINE_RETRY {
            return Err(Interrupt::Suspend {
                until: Some(until),
                event: None,
            });
        }
        Ok(delay)
    }

    /// Waits `duration` (once: a resumed run does not sleep again). The run is parked, not a
    /// thread.
    pub fn sleep(&mut self, name: &str, duration: Duration) -> Result<(), Interrupt> {
        let key = format!("sleep:{name}");
        let mut rec = self.record(&key);
        if rec.status == StepStatus::Completed {
            return Ok(());
        }
        let now = Utc::now();
        match rec.wake_at {
            Some(until) if until <= now => {
                rec.status = StepStatus::Completed;
                rec.output = Some(Value::Null);
                rec.finished_at = Some(now);
                self.save(rec)?;
                Ok(())
            }
            Some(until) => Err(Interrupt::Suspend {
                until: Some(until),
                event: None,
            }),
            None => {
                self.checkpoint()?;
                let until =
                    now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
                rec.wake_at = Some(until);
                self.save(rec)?;
                Err(Interrupt::Suspend {
                    until: Some(until),
                    event: None,
                })
            }
        }
    }

    /// Waits for the event `name` sent to this run (events sent earlier count), at most
    /// `timeout`; returns its payload. A timeout fails the step (`event_timeout`).
    pub fn wait_for_event(&mut self, name: &str, timeout: Duration) -> Result<Value, Interrupt> {
        let key = format!("event:{name}");
        let mut rec = self.record(&key);
        match rec.status {
            StepStatus::Completed => return Ok(rec.output.clone().unwrap_or(Value::Null)),
            StepStatus::Failed => return Err(Interrupt::Failed(failure_of(&rec))),
            _ => {}
        }
        let now = Utc::now();
        if rec.wake_at.is_none() {
            self.checkpoint()?;
            rec.wake_at =
                Some(now + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX));
            self.save(rec.clone())?;
        }
        if let Some(payload) = self
            .engine
            .store
            .take_event(&Claim::of(&self.wf), name, &rec)?
        {
            rec.status = StepStatus::Completed;
            rec.output = Some(payload.clone());
            rec.finished_at = Some(Utc::now());
            self.engine.emit(&self.wf, "step", Some(&rec), None);
            self.steps.insert(key, rec);
            return Ok(payload);
        }
        let until = rec.wake_at.unwrap_or(now);
        if until <= now {
            rec.status = StepStatus::Failed;
            rec.finished_at = Some(now);
            rec.errors.push(AttemptError {
                attempt: rec.attempts,
                code: "event_timeout".into(),
                message: format!("no `{name}` event arrived in time"),
                retryable: false,
                at: now,
            });
            let failure = failure_of(&rec);
            self.save(rec)?;
            return Err(Interrupt::Failed(failure));
        }
        Err(Interrupt::Suspend {
            until: Some(until),
            event: Some(name.to_owned()),
        })
    }
}

fn failure_of(s: &StepRecord) -> StepFailure {
    let last = s.errors.last();
    StepFailure {
        step: s.name.clone(),
        code: last
            .map(|e| e.code.clone())
            .unwrap_or_else(|| "failed".into()),
        message: last.map(|e| e.message.clone()).unwrap_or_default(),
    }
}
