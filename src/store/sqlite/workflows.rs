//! [`WorkflowStore`] on SQLite.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::{json_err, SqliteStore};
use crate::store::workflows::*;
use crate::store::{Page, Result, StoreError};

const WF_COLS: &str = "id, tenant_id, kind, subject, idempotency_key, input, status, \
    cancel_requested, wake_at, waiting_for, output, error, progress, runs, created_at, \
    updated_at, started_at, finished_at";

struct RawWf {
    wf: WorkflowRecord,
    input: String,
    output: Option<String>,
    progress: String,
    status: String,
}

fn wf_row(r: &Row<'_>) -> rusqlite::Result<RawWf> {
    Ok(RawWf {
        wf: WorkflowRecord {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            kind: r.get(2)?,
            subject: r.get(3)?,
            idempotency_key: r.get(4)?,
            input: Value::Null,
            status: WorkflowStatus::Queued,
            cancel_requested: r.get::<_, i64>(7)? != 0,
            wake_at: r.get(8)?,
            waiting_for: r.get(9)?,
            output: None,
            error: r.get(11)?,
            progress: Value::Null,
            runs: r.get(13)?,
            created_at: r.get(14)?,
            updated_at: r.get(15)?,
            started_at: r.get(16)?,
            finished_at: r.get(17)?,
        },
        input: r.get(5)?,
        output: r.get(10)?,
        progress: r.get(12)?,
        status: r.get(6)?,
    })
}

impl RawWf {
    fn finish(mut self) -> Result<WorkflowRecord> {
        self.wf.input = serde_json::from_str(&self.input).map_err(json_err)?;
        self.wf.output = self
            .output
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(json_err)?;
        self.wf.progress = serde_json::from_str(&self.progress).map_err(json_err)?;
        self.wf.status = WorkflowStatus::parse(&self.status)
            .ok_or_else(|| StoreError::Database(format!("unknown status {}", self.status)))?;
        Ok(self.wf)
    }
}

fn get_wf(c: &Connection, id: &str) -> Result<WorkflowRecord> {
    c.query_row(
        &format!("SELECT {WF_COLS} FROM workflows WHERE id = ?1"),
        [id],
        wf_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        kind: "workflow",
        id: id.to_owned(),
    })?
    .finish()
}

/// Fails unless `claim` is the run's latest claim (the transaction holds the file's write lock,
/// so it stays so until the commit).
fn fence(c: &Connection, claim: &Claim<'_>) -> Result<()> {
    let current: Option<u32> = c
        .prepare_cached("SELECT runs FROM workflows WHERE id = ?1")?
        .query_row([claim.workflow_id], |r| r.get(0))
        .optional()?;
    match current {
        Some(run) if run == claim.run => Ok(()),
        Some(_) => Err(superseded(claim.workflow_id)),
        None => Err(StoreError::NotFound {
            kind: "workflow",
            id: claim.workflow_id.to_owned(),
        }),
    }
}

fn collect(
    stmt: &mut rusqlite::Statement<'_>,
    p: impl rusqlite::Params,
) -> Result<Vec<WorkflowRecord>> {
    stmt.query_map(p, wf_row)?
        .map(|r| r.map_err(StoreError::from).and_then(RawWf::finish))
        .collect()
}

fn step_row(r: &Row<'_>) -> rusqlite::Result<(StepRecord, String, Option<String>, String)> {
    Ok((
        StepRecord {
            name: r.get(0)?,
            position: r.get(1)?,
            status: StepStatus::Running,
            attempts: r.get(3)?,
            output: None,
            errors: Vec::new(),
            wake_at: r.get(6)?,
            started_at: r.get(7)?,
            finished_at: r.get(8)?,
        },
        r.get(2)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn upsert_step(c: &Connection, workflow_id: &str, s: &StepRecord) -> Result<()> {
    let output = s
        .output
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(json_err)?;
    let errors = serde_json::to_string(&s.errors).map_err(json_err)?;
    c.prepare_cached(
        "INSERT INTO workflow_steps (workflow_id, name, position, status, attempts, output, errors,
                                     wake_at, started_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (workflow_id, name) DO UPDATE SET
             status = excluded.status, attempts = excluded.attempts, output = excluded.output,
             errors = excluded.errors, wake_at = excluded.wake_at,
             finished_at = excluded.finished_at",
    )?
    .execute(params![
        workflow_id,
        s.name,
        s.position,
        s.status.as_str(),
        s.attempts,
        output,
        errors,
        s.wake_at,
        s.started_at,
        s.finished_at
    ])?;
    Ok(())
}

fn by_key(
    c: &Connection,
    tenant_id: &str,
    kind: &str,
    key: &str,
) -> Result<Option<WorkflowRecord>> {
    c.query_row(
        &format!(
            "SELECT {WF_COLS} FROM workflows
             WHERE tenant_id = ?1 AND kind = ?2 AND idempotency_key = ?3"
        ),
        params![tenant_id, kind, key],
        wf_row,
    )
    .optional()?
    .map(RawWf::finish)
    .transpose()
}

impl WorkflowStore for SqliteStore {
    fn workflow_by_key(
        &self,
        tenant_id: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<WorkflowRecord>> {
        self.read(|c| by_key(c, tenant_id, kind, key))
    }

    fn create_workflow(&self, new: &NewWorkflow) -> Result<(WorkflowRecord, bool)> {
        let input = serde_json::to_string(&new.input).map_err(json_err)?;
        self.write(|tx| {
            if let Some(key) = &new.idempotency_key {
                if let Some(existing) = by_key(tx, &new.tenant_id, &new.kind, key)? {
                    return Ok((existing, false));
                }
            }
            let now = Utc::now();
            tx.execute(
                "INSERT INTO workflows (id, tenant_id, kind, subject, idempotency_key, input, status,
                                        created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?7)",
                params![
                    new.id,
                    new.tenant_id,
                    new.kind,
                    new.subject,
                    new.idempotency_key,
                    input,
                    now
                ],
            )?;
            Ok((get_wf(tx, &new.id)?, true))
        })
    }

    fn workflow(&self, id: &str) -> Result<WorkflowRecord> {
        self.read(|c| get_wf(c, id))
    }

    fn list_workflows(&self, q: &WorkflowQuery) -> Result<Page<WorkflowRecord>> {
        self.read(|c| {
            let status = q.status.map(|s| s.as_str());
            let filter = "tenant_id = ?1 AND (?2 IS NULL OR kind = ?2)
                          AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR subject = ?4)";
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM workflows WHERE {filter}"),
                params![q.tenant_id, q.kind, status, q.subject],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare(&format!(
                "SELECT {WF_COLS} FROM workflows WHERE {filter}
                 ORDER BY created_at DESC, id DESC LIMIT ?5 OFFSET ?6"
            ))?;
            let items = collect(
                &mut stmt,
                params![
                    q.tenant_id,
                    q.kind,
                    status,
                    q.subject,
                    q.limit as i64,
                    q.offset as i64
                ],
            )?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
    }

    fn steps(&self, workflow_id: &str) -> Result<Vec<StepRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, position, status, attempts, output, errors, wake_at, started_at,
                        finished_at
                 FROM workflow_steps WHERE workflow_id = ?1 ORDER BY position",
            )?;
            let rows = stmt.query_map([workflow_id], step_row)?;
            let mut out = Vec::new();
            for row in rows {
                let (mut step, status, output, errors) = row?;
                step.status = StepStatus::parse(&status)
                    .ok_or_else(|| StoreError::Database(format!("unknown step status {status}")))?;
                step.output = output
                    .map(|o| serde_json::from_str(&o))
                    .transpose()
                    .map_err(json_err)?;
                step.errors = serde_json::from_str(&errors).map_err(json_err)?;
                out.push(step);
            }
            Ok(out)
        })
    }

    fn claim_workflows(&self, req: &ClaimRequest<'_>) -> Result<Vec<WorkflowRecord>> {
        if req.free == 0 {
            return Ok(Vec::new());
        }
        // One process writes this file at a time: the claim is one transaction of it.
        self.write_checkpoint(|tx| {
            let now = Utc::now();
            let mut live: HashMap<String, usize> = HashMap::new();
            let mut stmt = tx.prepare_cached(
                "SELECT kind, COUNT(*) FROM workflows
                 WHERE status = 'running' AND lease_until > ?1 GROUP BY kind",
            )?;
            for row in
                stmt.query_map([now], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            {
                let (kind, n) = row?;
                live.insert(kind, n as usize);
            }
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {WF_COLS} FROM workflows
                 WHERE status = 'queued'
                    OR (status IN ('sleeping', 'waiting') AND wake_at IS NOT NULL AND wake_at <= ?1)
                    OR (status IN ('sleeping', 'waiting') AND cancel_requested = 1)
                    OR (status = 'running' AND (lease_until IS NULL OR lease_until <= ?2))
                 ORDER BY created_at, id LIMIT 256"
            ))?;
            let candidates = collect(&mut stmt, params![req.now, now])?;
            let until =
                now + chrono::Duration::from_std(req.lease).unwrap_or(chrono::Duration::MAX);
            let mut claimed = Vec::new();
            for wf in req.pick(candidates, live) {
                tx.prepare_cached(
                    "UPDATE workflows SET status = 'running', claimed_by = ?2, lease_until = ?3,
                            runs = runs + 1, wake_at = NULL, waiting_for = NULL,
                            started_at = COALESCE(started_at, ?4), updated_at = ?4
                     WHERE id = ?1",
                )?
                .execute(params![wf.id, req.holder, until, now])?;
                claimed.push(get_wf(tx, &wf.id)?);
            }
            Ok(claimed)
        })
    }

    fn renew_leases(
        &self,
        holder: &str,
        claims: &[Claim<'_>],
        lease: Duration,
    ) -> Result<Vec<LeaseState>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        self.write_checkpoint(|tx| {
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
            let mut out = Vec::with_capacity(claims.len());
            for c in claims {
                let held = tx
                    .prepare_cached(
                        "UPDATE workflows SET lease_until = ?4
                         WHERE id = ?1 AND runs = ?2 AND claimed_by = ?3 AND status = 'running'",
                    )?
                    .execute(params![c.workflow_id, c.run, holder, until])?
                    == 1;
                let cancel_requested = tx
                    .query_row(
                        "SELECT cancel_requested FROM workflows WHERE id = ?1",
                        [c.workflow_id],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .is_some_and(|v| v != 0);
                out.push(LeaseState {
                    workflow_id: c.workflow_id.to_owned(),
                    held,
                    cancel_requested,
                });
            }
            Ok(out)
        })
    }

    fn requeue_interrupted(&self) -> Result<usize> {
        // The data directory's lock makes this process the file's only user: whatever is
        // running was left so by a process that is gone.
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE workflows SET status = 'queued', claimed_by = NULL, lease_until = NULL,
                        updated_at = ?1
                 WHERE status = 'running'",
                [Utc::now()],
            )?)
        })
    }

    fn save_workflow(&self, wf: &WorkflowRecord) -> Result<()> {
        let output = wf
            .output
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(json_err)?;
        self.write(|tx| {
            let n = tx.execute(
                // A run parked waiting for an event that arrived meanwhile is runnable at once.
                "UPDATE workflows SET
                        status = CASE WHEN ?2 = 'waiting' AND EXISTS (
                                     SELECT 1 FROM workflow_events e
                                     WHERE e.workflow_id = ?1 AND e.name = ?4 AND e.consumed = 0)
                                 THEN 'queued' ELSE ?2 END,
                        wake_at = ?3, waiting_for = ?4, output = ?5,
                        error = ?6, updated_at = ?8, started_at = ?9, finished_at = ?10,
                        cancel_requested = CASE WHEN ?2 IN ('completed', 'failed', 'cancelled')
                                                THEN 0 ELSE cancel_requested END,
                        claimed_by = NULL, lease_until = NULL
                 WHERE id = ?1 AND runs = ?7",
                params![
                    wf.id,
                    wf.status.as_str(),
                    wf.wake_at,
                    wf.waiting_for,
                    output,
                    wf.error,
                    wf.runs,
                    Utc::now(),
                    wf.started_at,
                    wf.finished_at
                ],
            )?;
            if n == 0 {
                get_wf(tx, &wf.id)?;
                return Err(superseded(&wf.id));
            }
            Ok(())
        })
    }

    fn save_progress(&self, claim: &Claim<'_>, progress: &Value) -> Result<()> {
        let progress = serde_json::to_string(progress).map_err(json_err)?;
        self.write_checkpoint(|tx| {
            let n = tx.execute(
                "UPDATE workflows SET progress = ?2, updated_at = ?3 WHERE id = ?1 AND runs = ?4",
                params![claim.workflow_id, progress, Utc::now(), claim.run],
            )?;
            if n == 0 {
                return Err(superseded(claim.workflow_id));
            }
            Ok(())
        })
    }

    fn save_step(&self, claim: &Claim<'_>, step: &StepRecord) -> Result<()> {
        self.write_checkpoint(|tx| {
            fence(tx, claim)?;
            upsert_step(tx, claim.workflow_id, step)
        })
    }

    fn forget_outputs(&self, claim: &Claim<'_>, prefix: &str, keep: &str) -> Result<()> {
        self.write_checkpoint(|tx| {
            fence(tx, claim)?;
            tx.execute(
                "UPDATE workflow_steps SET output = NULL
                 WHERE workflow_id = ?1 AND status = 'completed' AND name != ?3
                   AND substr(name, 1, length(?2)) = ?2",
                params![claim.workflow_id, prefix, keep],
            )?;
            Ok(())
        })
    }

    fn request_cancel(&self, id: &str) -> Result<WorkflowRecord> {
        self.write(|tx| {
            let wf = get_wf(tx, id)?;
            if !wf.status.is_terminal() {
                tx.execute(
                    "UPDATE workflows SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1",
                    params![id, Utc::now()],
                )?;
            }
            get_wf(tx, id)
        })
    }

    fn retry_workflow(&self, id: &str) -> Result<WorkflowRecord> {
        self.write(|tx| {
            let wf = get_wf(tx, id)?;
            if !matches!(
                wf.status,
                WorkflowStatus::Failed | WorkflowStatus::Cancelled | WorkflowStatus::Completed
            ) {
                return Err(StoreError::Conflict {
                    kind: "unfinished workflow",
                    name: id.to_owned(),
                });
            }
            tx.execute(
                "UPDATE workflow_steps SET status = 'retrying', wake_at = NULL, finished_at = NULL,
                        attempts = 0
                 WHERE workflow_id = ?1 AND status = 'failed'",
                [id],
            )?;
            tx.execute(
                "UPDATE workflows SET status = 'queued', error = NULL, output = NULL,
                        finished_at = NULL, wake_at = NULL, waiting_for = NULL,
                        cancel_requested = 0, updated_at = ?2
                 WHERE id = ?1",
                params![id, Utc::now()],
            )?;
            get_wf(tx, id)
        })
    }

    fn send_event(&self, workflow_id: &str, name: &str, payload: &Value) -> Result<()> {
        let payload = serde_json::to_string(payload).map_err(json_err)?;
        self.write(|tx| {
            let wf = get_wf(tx, workflow_id)?;
            if wf.status.is_terminal() {
                return Err(StoreError::Conflict {
                    kind: "finished workflow",
                    name: workflow_id.to_owned(),
                });
            }
            let now = Utc::now();
            tx.execute(
                "INSERT INTO workflow_events (workflow_id, name, payload, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![workflow_id, name, payload, now],
            )?;
            tx.execute(
                "UPDATE workflows SET status = 'queued', wake_at = NULL, updated_at = ?3
                 WHERE id = ?1 AND status = 'waiting' AND waiting_for = ?2",
                params![workflow_id, name, now],
            )?;
            Ok(())
        })
    }

    fn take_event(
        &self,
        claim: &Claim<'_>,
        name: &str,
        step: &StepRecord,
    ) -> Result<Option<Value>> {
        let workflow_id = claim.workflow_id;
        self.write(|tx| {
            fence(tx, claim)?;
            let event: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, payload FROM workflow_events
                     WHERE workflow_id = ?1 AND name = ?2 AND consumed = 0
                     ORDER BY id LIMIT 1",
                    params![workflow_id, name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((id, payload)) = event else {
                return Ok(None);
            };
            let payload: Value = serde_json::from_str(&payload).map_err(json_err)?;
            tx.execute(
                "UPDATE workflow_events SET consumed = 1 WHERE id = ?1",
                [id],
            )?;
            let mut done = step.clone();
            done.status = StepStatus::Completed;
            done.output = Some(payload.clone());
            done.finished_at = Some(Utc::now());
            upsert_step(tx, workflow_id, &done)?;
            Ok(Some(payload))
        })
    }
}
