//! Engine behaviour on a real SQLite store: replay, retries, sleeps, events, cancellation,
//! idempotency, concurrency limits and resumption by a new engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::store::{SqliteStore, TenantStore};

/// Counts executions of each step body, shared across engines (a "restart" keeps them).
#[derive(Default)]
struct Probe {
    runs: Mutex<HashMap<String, usize>>,
    fail_until: Mutex<HashMap<String, usize>>,
    fatal: AtomicBool,
    concurrent: AtomicUsize,
    max_concurrent: AtomicUsize,
    cancelled: AtomicUsize,
    block: AtomicBool,
}

impl Probe {
    fn hit(&self, step: &str) -> usize {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let n = runs.entry(step.to_owned()).or_default();
        *n += 1;
        *n
    }

    fn count(&self, step: &str) -> usize {
        *self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(step)
            .unwrap_or(&0)
    }
}

/// `steps`: three steps `a`, `b`, `c`; `b` fails until its count passes `fail_until[b]`.
struct Steps(Arc<Probe>);

impl Handler for Steps {
    fn kind(&self) -> &'static str {
        "steps"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value, Interrupt> {
        let options = StepOptions {
            max_attempts: 3,
            backoff: Backoff::Constant { delay_ms: 10 },
            timeout: None,
        };
        let probe = self.0.clone();
        let a: u64 = ctx.step("a", &options, |_| {
            probe.hit("a");
            Ok(1)
        })?;
        let b: u64 = ctx.step("b", &options, |_| {
            let n = probe.hit("b");
            while probe.block.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let fail_until = *probe
                .fail_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get("b")
                .unwrap_or(&0);
            if probe.fatal.load(Ordering::SeqCst) {
                return Err(StepError::fatal("bad", "will never work"));
            }
            if n <= fail_until {
                return Err(StepError::retryable("flaky", format!("attempt {n}")));
            }
            Ok(a + 1)
        })?;
        let c: u64 = ctx.step("c", &options, |_| {
            probe.hit("c");
            Ok(b + 1)
        })?;
        Ok(json!({ "c": c }))
    }

    fn cancelled(&self, _wf: &WorkflowRecord) {
        self.0.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

/// `waits`: sleeps, then waits for `approve`, then returns the payload.
struct Waits;

impl Handler for Waits {
    fn kind(&self) -> &'static str {
        "waits"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value, Interrupt> {
        let input: Value = ctx.input()?;
        let sleep_ms = input["sleep_ms"].as_u64().unwrap_or(0);
        let timeout_ms = input["timeout_ms"].as_u64().unwrap_or(60_000);
        ctx.sleep("nap", Duration::from_millis(sleep_ms))?;
        let payload = ctx.wait_for_event("approve", Duration::from_millis(timeout_ms))?;
        Ok(payload)
    }
}

/// `busy`: one step that holds a slot for a while and records concurrency.
struct Busy(Arc<Probe>);

impl Handler for Busy {
    fn kind(&self) -> &'static str {
        "busy"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Result<Value, Interrupt> {
        let probe = self.0.clone();
        ctx.step("work", &StepOptions::default(), |_| {
            let now = probe.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
            probe.max_concurrent.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(80));
            probe.concurrent.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })?;
        Ok(Value::Null)
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    tenant: String,
    probe: Arc<Probe>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(&dir.path().join("db.sqlite3")).expect("store"));
        let tenant = store.ensure_tenant("t").expect("tenant").id;
        Self {
            _dir: dir,
            store,
            tenant,
            probe: Arc::new(Probe::default()),
        }
    }

    fn engine(&self) -> Engine {
        self.engine_as("test")
    }

    /// An engine claiming as `holder` (engines with different holders are two processes
    /// sharing the store).
    fn engine_as(&self, holder: &str) -> Engine {
        let engine = Engine::new(
            self.store.clone(),
            EngineOptions {
                holder: holder.into(),
                lease: Duration::from_secs(5),
                workers: 3,
                concurrency: HashMap::from([("busy".to_owned(), 2), ("steps".to_owned(), 4)]),
                poll: Duration::from_millis(20),
            },
            crate::supervisor::Supervisor::new(),
        );
        engine.register(Arc::new(Steps(self.probe.clone())));
        engine.register(Arc::new(Waits));
        engine.register(Arc::new(Busy(self.probe.clone())));
        engine.start().expect("start");
        engine
    }

    fn create(&self, engine: &Engine, kind: &str, input: Value, key: Option<&str>) -> String {
        engine
            .create(NewWorkflow {
                id: uuid::Uuid::now_v7().to_string(),
                tenant_id: self.tenant.clone(),
                kind: kind.into(),
                subject: None,
                idempotency_key: key.map(str::to_owned),
                input,
            })
            .expect("create")
            .0
            .id
    }

    fn wait(&self, id: &str, pred: impl Fn(&WorkflowRecord) -> bool) -> WorkflowRecord {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let wf = self.store.workflow(id).expect("workflow");
            if pred(&wf) {
                return wf;
            }
            assert!(Instant::now() < deadline, "timed out; last state {wf:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finished(&self, id: &str) -> WorkflowRecord {
        self.wait(id, |w| w.status.is_terminal())
    }
}

#[test]
fn steps_retry_then_complete_and_record_attempts() {
    let h = Harness::new();
    h.probe
        .fail_until
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert("b".into(), 2);
    let engine = h.engine();
    let id = h.create(&engine, "steps", json!({}), None);
    let wf = h.finished(&id);
    assert_eq!(wf.status, WorkflowStatus::Completed, "{wf:?}");
    assert_eq!(wf.output, Some(json!({ "c": 3 })));
    let steps = h.store.steps(&id).expect("steps");
    let b = steps.iter().find(|s| s.name == "b").expect("b");
    assert_eq!(b.attempts, 3);
    assert_eq!(b.errors.len(), 2);
    assert!(b.errors.iter().all(|e| e.code == "flaky" && e.retryable));
    assert_eq!(h.probe.count("a"), 1);
    engine.shutdown();
}

#[test]
fn non_retryable_error_fails_the_run_and_retry_resumes_from_that_step() {
    let h = Harness::new();
    h.probe.fatal.store(true, Ordering::SeqCst);
    let engine = h.engine();
    let id = h.create(&engine, "steps", json!({}), None);
    let wf = h.finished(&id);
    assert_eq!(wf.status, WorkflowStatus::Failed);
    assert!(wf.error.as_deref().unwrap_or("").contains("never work"));
    assert_eq!(h.probe.count("b"), 1, "a fatal error is not retried");
    h.probe.fatal.store(false, Ordering::SeqCst);
    engine.retry(&id).expect("retry");
    let wf = h.finished(&id);
    assert_eq!(wf.status, WorkflowStatus::Completed, "{wf:?}");
    assert_eq!(h.probe.count("a"), 1, "completed steps never run again");
    assert_eq!(h.probe.count("b"), 2);
    engine.shutdown();
}

#[test]
fn a_new_engine_resumes_at_the_first_incomplete_step() {
    let h = Harness::new();
    h.probe.block.store(true, Ordering::SeqCst);
    let engine = h.engine();
    let id = h.create(&engine, "steps", json!({}), None);
    // Wait until `b` is executing, then stop the engine while it is blocked.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.probe.count("b") == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let stopper = std::thread::spawn({
        let engine = engine.clone();
        move || engine.shutdown()
    });
    std::thread::sleep(Duration::from_millis(50));
    h.probe.block.store(false, Ordering::SeqCst);
    stopper.join().expect("shutdown");
    // Simulate a process that died mid-step: mark the run running again.
    let mut wf = h.store.workflow(&id).expect("wf");
    if wf.status != WorkflowStatus::Completed {
        wf.status = WorkflowStatus::Running;
        h.store.save_workflow(&wf).expect("save");
    }
    let engine = h.engine();
    let wf = h.finished(&id);
    assert_eq!(wf.status, WorkflowStatus::Completed);
    assert_eq!(h.probe.count("a"), 1);
    assert_eq!(h.probe.count("c"), 1);
    engine.shutdown();
}

#[test]
fn sleep_parks_the_run_and_events_wake_it() {
    let h = Harness::new();
    let engine = h.engine();
    let id = h.create(&engine, "waits", json!({ "sleep_ms": 150 }), None);
    let wf = h.wait(&id, |w| w.status == WorkflowStatus::Sleeping);
    assert!(wf.wake_at.is_some());
    let wf = h.wait(&id, |w| w.status == WorkflowStatus::Waiting);
    assert_eq!(wf.waiting_for.as_deref(), Some("approve"));
    // The worker is released right after it records the run as waiting.
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.busy() > 0 {
        assert!(Instant::now() < deadline, "a waiting run holds no worker");
        std::thread::sleep(Duration::from_millis(5));
    }
    engine
        .send_event(&id, "approve", &json!({ "by": "ops" }))
        .expect("event");
    let wf = h.finished(&id);
    assert_eq!(wf.status, WorkflowStatus::Completed);
    assert_eq!(wf.output, Some(json!({ "by": "ops" })));
    engine.shutdown();
}

#[test]
fn an_event_sent_before_the_wait_is_kept_and_a_missing_one_times_out() {
    let h = Harness::new();
    let engine = h.engine();
    let early = h.create(&engine, "waits", json!({ "sleep_ms": 300 }), None);
    engine
        .send_event(&early, "approve", &json!("yes"))
        .expect("event");
    assert_eq!(h.finished(&early).output, Some(json!("yes")));
    let late = h.create(&engine, "waits", json!({ "timeout_ms": 100 }), None);
    let wf = h.finished(&late);
    assert_eq!(wf.status, WorkflowStatus::Failed);
    assert!(wf.error.as_deref().unwrap_or("").contains("event_timeout"));
    engine.shutdown();
}

#[test]
fn cancel_stops_a_waiting_run_and_calls_cleanup() {
    let h = Harness::new();
    let engine = h.engine();
    let id = h.create(&engine, "waits", json!({}), None);
    h.wait(&id, |w| w.status == WorkflowStatus::Waiting);
    engine.cancel(&id).expect("cancel");
    let wf = h.finished(&id);
    assert_eq!(wf.status, WorkflowStatus::Cancelled);
    assert!(engine.send_event(&id, "approve", &json!(1)).is_err());
    engine.shutdown();
}

#[test]
fn idempotency_key_returns_the_same_run() {
    let h = Harness::new();
    let engine = h.engine();
    let a = h.create(&engine, "steps", json!({}), Some("k1"));
    let b = h.create(&engine, "steps", json!({}), Some("k1"));
    let c = h.create(&engine, "steps", json!({}), Some("k2"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    h.finished(&a);
    h.finished(&c);
    assert_eq!(h.probe.count("a"), 2);
    engine.shutdown();
}

#[test]
fn concurrency_limit_per_type_holds() {
    let h = Harness::new();
    let engine = h.engine();
    let ids: Vec<String> = (0..6)
        .map(|_| h.create(&engine, "busy", json!({}), None))
        .collect();
    for id in &ids {
        assert_eq!(h.finished(id).status, WorkflowStatus::Completed);
    }
    assert_eq!(h.probe.max_concurrent.load(Ordering::SeqCst), 2);
    engine.shutdown();
}

#[test]
fn concurrency_limit_per_type_holds_over_processes_sharing_the_store() {
    let h = Harness::new();
    let one = h.engine_as("one");
    let two = h.engine_as("two");
    let ids: Vec<String> = (0..8)
        .map(|i| {
            h.create(
                if i % 2 == 0 { &one } else { &two },
                "busy",
                json!({}),
                None,
            )
        })
        .collect();
    for id in &ids {
        let wf = h.finished(id);
        assert_eq!(wf.status, WorkflowStatus::Completed);
        assert_eq!(wf.runs, 1, "each run claimed once");
    }
    // Six workers between them; the `busy` limit (2) counts both processes' runs.
    assert_eq!(h.probe.max_concurrent.load(Ordering::SeqCst), 2);
    one.shutdown();
    two.shutdown();
}

#[test]
fn a_lapsed_claim_is_taken_over_and_its_old_holder_can_write_nothing() {
    let h = Harness::new();
    // A process that claimed a run and died (or stalled) without renewing: its claim is
    // made by hand, with a short lease.
    let id = uuid::Uuid::now_v7().to_string();
    h.store
        .create_workflow(&NewWorkflow {
            id: id.clone(),
            tenant_id: h.tenant.clone(),
            kind: "steps".into(),
            subject: None,
            idempotency_key: None,
            input: json!({}),
        })
        .expect("create");
    let limits = HashMap::new();
    let claim = |holder: &str, lease_ms: u64| {
        h.store
            .claim_workflows(&ClaimRequest {
                holder,
                lease: Duration::from_millis(lease_ms),
                now: Utc::now(),
                free: 4,
                limits: &limits,
                exclude: &[],
            })
            .expect("claim")
    };
    let dead = claim("dead", 300);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].status, WorkflowStatus::Running);
    assert_eq!(dead[0].runs, 1);
    // While its lease holds nobody else gets the run.
    assert!(claim("other", 300).is_empty());
    let stale = dead[0].clone();
    let old = Claim::of(&stale);
    let step = StepRecord {
        name: "a".into(),
        position: 0,
        status: StepStatus::Completed,
        attempts: 1,
        output: Some(json!(1)),
        errors: Vec::new(),
        wake_at: None,
        started_at: Utc::now(),
        finished_at: Some(Utc::now()),
    };
    h.store.save_step(&old, &step).expect("the holder writes");
    std::thread::sleep(Duration::from_millis(400));
    // The lease lapsed: a live engine takes the run over and finishes it from step `b`.
    let engine = h.engine_as("alive");
    let wf = h.finished(&id);
    assert_eq!(wf.status, WorkflowStatus::Completed);
    assert_eq!(wf.runs, 2);
    assert_eq!(
        h.probe.count("a"),
        0,
        "the dead holder's step is not run again"
    );
    assert_eq!(h.probe.count("c"), 1);
    // The old holder, were it still running, is fenced off and told so.
    let err = h.store.save_step(&old, &step).expect_err("fenced");
    assert!(crate::store::claim_lost(&err), "{err}");
    let err = h
        .store
        .save_progress(&old, &json!({ "late": true }))
        .expect_err("fenced");
    assert!(crate::store::claim_lost(&err), "{err}");
    let err = h.store.save_workflow(&stale).expect_err("fenced");
    assert!(crate::store::claim_lost(&err), "{err}");
    let renewed = h
        .store
        .renew_leases("dead", &[old], Duration::from_secs(5))
        .expect("renew");
    assert!(!renewed[0].held);
    assert_eq!(
        h.store.workflow(&id).expect("wf").status,
        WorkflowStatus::Completed
    );
    engine.shutdown();
}

#[test]
fn backoff_grows_and_is_jittered_within_bounds() {
    let b = Backoff::Exponential {
        base_ms: 100,
        max_ms: 1_000,
    };
    for attempt in 1..8u32 {
        let full = (100u64 << (attempt - 1)).min(1_000);
        let d = b.delay(attempt).as_millis() as u64;
        assert!(
            d >= full - full / 2 && d <= full,
            "attempt {attempt}: {d} ms"
        );
    }
    assert_eq!(
        Backoff::Linear { delay_ms: 0 }.delay(3),
        Duration::from_millis(0)
    );
    let l = Backoff::Linear { delay_ms: 100 }.delay(3).as_millis();
    assert!((150..=300).contains(&l));
}

#[test]
fn cancel_stops_an_executing_run_before_its_next_step() {
    let h = Harness::new();
    h.probe.block.store(true, Ordering::SeqCst);
    let engine = h.engine();
    let id = h.create(&engine, "steps", json!({}), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.probe.count("b") == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.cancel(&id).expect("cancel");
    h.probe.block.store(false, Ordering::SeqCst);
    let wf = h.finished(&id);
    assert_eq!(wf.status, WorkflowStatus::Cancelled, "{wf:?}");
    assert_eq!(h.probe.count("c"), 0, "no step starts after the cancel");
    assert_eq!(h.probe.cancelled.load(Ordering::SeqCst), 1, "cleanup ran");
    engine.shutdown();
}
