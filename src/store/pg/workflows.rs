//! [`WorkflowStore`] on PostgreSQL.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use postgres::Row;
use serde_json::Value;

use super::session::Session;
use super::{count, json_err, u, PgStore, ADVISORY_CLASS, CLAIMS_KEY};
use crate::store::workflows::*;
use crate::store::{Page, Result, StoreError};

const WF_COLS: &str = "id, tenant_id, kind, subject, idempotency_key, input, status, \
    cancel_requested, wake_at, waiting_for, output, error, progress, runs, created_at, \
    updated_at, started_at, finished_at";

fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(json_err)
}

fn wf_row(r: &Row) -> Result<WorkflowRecord> {
    let status: &str = r.get(6);
    Ok(WorkflowRecord {
        id: r.get(0),
        tenant_id: r.get(1),
        kind: r.get(2),
        subject: r.get(3),
        idempotency_key: r.get(4),
        input: json(r.get(5))?,
        status: WorkflowStatus::parse(status)
            .ok_or_else(|| StoreError::Database(format!("unknown status {status}")))?,
        cancel_requested: r.get(7),
        wake_at: r.get(8),
        waiting_for: r.get(9),
        output: r.get::<_, Option<&str>>(10).map(json).transpose()?,
        error: r.get(11),
        progress: json(r.get(12))?,
        runs: u(r, 13) as u32,
        created_at: r.get(14),
        updated_at: r.get(15),
        started_at: r.get(16),
        finished_at: r.get(17),
    })
}

fn wfs(rows: Vec<Row>) -> Result<Vec<WorkflowRecord>> {
    rows.iter().map(wf_row).collect()
}

fn get_wf(c: &mut Session<'_, '_>, id: &str) -> Result<WorkflowRecord> {
    let row = c.query_opt(
        &format!("SELECT {WF_COLS} FROM workflows WHERE id = $1"),
        &[&id],
    )?;
    wf_row(&row.ok_or_else(|| StoreError::NotFound {
        kind: "workflow",
        id: id.to_owned(),
    })?)
}

/// A lease's length as the seconds `make_interval` takes.
fn lease_secs(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

/// Fails unless `claim` is the run's latest claim, and keeps it so until the commit: the row
/// is share-locked, so a claim taking the run over waits for this transaction (and this one,
/// serializable, fails and retries if the takeover committed first).
fn fence(c: &mut Session<'_, '_>, claim: &Claim<'_>) -> Result<()> {
    let run = c.query_opt(
        "SELECT runs FROM workflows WHERE id = $1 FOR SHARE",
        &[&claim.workflow_id],
    )?;
    match run.map(|r| u(&r, 0)) {
        Some(run) if run == u64::from(claim.run) => Ok(()),
        Some(_) => Err(superseded(claim.workflow_id)),
        None => Err(StoreError::NotFound {
            kind: "workflow",
            id: claim.workflow_id.to_owned(),
        }),
    }
}

fn upsert_step(c: &mut Session<'_, '_>, workflow_id: &str, s: &StepRecord) -> Result<()> {
    let output = s
        .output
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(json_err)?;
    let errors = serde_json::to_string(&s.errors).map_err(json_err)?;
    c.execute(
        "INSERT INTO workflow_steps (workflow_id, name, position, status, attempts, output, errors,
                                     wake_at, started_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (workflow_id, name) DO UPDATE SET
             status = excluded.status, attempts = excluded.attempts, output = excluded.output,
             errors = excluded.errors, wake_at = excluded.wake_at,
             finished_at = excluded.finished_at",
        &[
            &workflow_id,
            &s.name,
            &i64::from(s.position),
            &s.status.as_str(),
            &i64::from(s.attempts),
            &output,
            &errors,
            &s.wake_at,
            &s.started_at,
            &s.finished_at,
        ],
    )?;
    Ok(())
}

fn by_key(
    c: &mut Session<'_, '_>,
    tenant_id: &str,
    kind: &str,
    key: &str,
) -> Result<Option<WorkflowRecord>> {
    c.query_opt(
        &format!(
            "SELECT {WF_COLS} FROM workflows
             WHERE tenant_id = $1 AND kind = $2 AND idempotency_key = $3"
        ),
        &[&tenant_id, &kind, &key],
    )?
    .as_ref()
    .map(wf_row)
    .transpose()
}

impl WorkflowStore for PgStore {
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
                "INSERT INTO workflows (id, tenant_id, kind, subject, idempotency_key, input,
                                        status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7)",
                &[
                    &new.id,
                    &new.tenant_id,
                    &new.kind,
                    &new.subject,
                    &new.idempotency_key,
                    &input,
                    &now,
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
            let filter = "tenant_id = $1 AND ($2::TEXT IS NULL OR kind = $2)
                          AND ($3::TEXT IS NULL OR status = $3)
                          AND ($4::TEXT IS NULL OR subject = $4)";
            let total = u(
                &c.query_one(
                    &format!("SELECT COUNT(*) FROM workflows WHERE {filter}"),
                    &[&q.tenant_id, &q.kind, &status, &q.subject],
                )?,
                0,
            );
            let items = wfs(c.query(
                &format!(
                    "SELECT {WF_COLS} FROM workflows WHERE {filter}
                     ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"
                ),
                &[
                    &q.tenant_id,
                    &q.kind,
                    &status,
                    &q.subject,
                    &count(q.limit),
                    &count(q.offset),
                ],
            )?)?;
            Ok(Page { items, total })
        })
    }

    fn steps(&self, workflow_id: &str) -> Result<Vec<StepRecord>> {
        self.read(|c| {
            c.query(
                "SELECT name, position, status, attempts, output, errors, wake_at, started_at,
                        finished_at
                 FROM workflow_steps WHERE workflow_id = $1 ORDER BY position",
                &[&workflow_id],
            )?
            .iter()
            .map(|r| {
                let status: &str = r.get(2);
                Ok(StepRecord {
                    name: r.get(0),
                    position: u(r, 1) as u32,
                    status: StepStatus::parse(status).ok_or_else(|| {
                        StoreError::Database(format!("unknown step status {status}"))
                    })?,
                    attempts: u(r, 3) as u32,
                    output: r.get::<_, Option<&str>>(4).map(json).transpose()?,
                    errors: json(r.get(5))?,
                    wake_at: r.get(6),
                    started_at: r.get(7),
                    finished_at: r.get(8),
                })
            })
            .collect()
        })
    }

    fn claim_workflows(&self, req: &ClaimRequest<'_>) -> Result<Vec<WorkflowRecord>> {
        if req.free == 0 {
            return Ok(Vec::new());
        }
        let lease = lease_secs(req.lease);
        // Claims queue on one transaction-scoped advisory lock and run at READ COMMITTED, so
        // each statement after the lock sees every claim committed before it: the count of
        // live leases per kind is exact when the limits are checked. Leases are measured on
        // the database's clock, the one every process shares.
        self.write_claims(|tx| {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&ADVISORY_CLASS, &CLAIMS_KEY],
            )?;
            let live: HashMap<String, usize> = tx
                .query(
                    "SELECT kind, COUNT(*) FROM workflows
                     WHERE status = 'running' AND lease_until > clock_timestamp() GROUP BY kind",
                    &[],
                )?
                .iter()
                .map(|r| (r.get::<_, String>(0), u(r, 1) as usize))
                .collect();
            let candidates = wfs(tx.query(
                &format!(
                    "SELECT {WF_COLS} FROM workflows
                     WHERE status = 'queued'
                        OR (status IN ('sleeping', 'waiting') AND wake_at IS NOT NULL
                            AND wake_at <= $1)
                        OR (status IN ('sleeping', 'waiting') AND cancel_requested)
                        OR (status = 'running'
                            AND (lease_until IS NULL OR lease_until <= clock_timestamp()))
                     ORDER BY created_at, id LIMIT 256
                     FOR UPDATE SKIP LOCKED"
                ),
                &[&req.now],
            )?)?;
            let ids: Vec<String> = req
                .pick(candidates, live)
                .into_iter()
                .map(|wf| wf.id)
                .collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            wfs(tx.query(
                &format!(
                    "UPDATE workflows SET status = 'running', claimed_by = $2,
                            lease_until = clock_timestamp() + make_interval(secs => $3),
                            runs = runs + 1, wake_at = NULL, waiting_for = NULL,
                            started_at = COALESCE(started_at, $4), updated_at = $4
                     WHERE id = ANY($1)
                     RETURNING {WF_COLS}"
                ),
                &[&ids, &req.holder, &lease, &Utc::now()],
            )?)
            .map(|mut v| {
                v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
                v
            })
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
        let ids: Vec<&str> = claims.iter().map(|c| c.workflow_id).collect();
        let runs: Vec<i64> = claims.iter().map(|c| i64::from(c.run)).collect();
        let lease = lease_secs(lease);
        self.write_checkpoint(|tx| {
            let rows = tx.query(
                "WITH asked AS (SELECT * FROM unnest($1::TEXT[], $2::BIGINT[]) AS a(id, run)),
                      renewed AS (
                          UPDATE workflows w
                          SET lease_until = clock_timestamp() + make_interval(secs => $4)
                          FROM asked
                          WHERE w.id = asked.id AND w.runs = asked.run AND w.claimed_by = $3
                            AND w.status = 'running'
                          RETURNING w.id)
                 SELECT asked.id, asked.id IN (SELECT id FROM renewed),
                        COALESCE(w.cancel_requested, FALSE)
                 FROM asked LEFT JOIN workflows w ON w.id = asked.id",
                &[&ids, &runs, &holder, &lease],
            )?;
            Ok(rows
                .iter()
                .map(|r| LeaseState {
                    workflow_id: r.get(0),
                    held: r.get(1),
                    cancel_requested: r.get(2),
                })
                .collect())
        })
    }

    fn requeue_interrupted(&self) -> Result<usize> {
        // Other processes may be executing the runs marked running: their leases, not this
        // process's start, decide when they are taken over.
        Ok(0)
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
                        status = CASE WHEN $2 = 'waiting' AND EXISTS (
                                     SELECT 1 FROM workflow_events e
                                     WHERE e.workflow_id = $1 AND e.name = $4 AND NOT e.consumed)
                                 THEN 'queued' ELSE $2 END,
                        wake_at = $3, waiting_for = $4, output = $5,
                        error = $6, updated_at = $8, started_at = $9, finished_at = $10,
                        cancel_requested = CASE WHEN $2 IN ('completed', 'failed', 'cancelled')
                                                THEN FALSE ELSE cancel_requested END,
                        claimed_by = NULL, lease_until = NULL
                 WHERE id = $1 AND runs = $7",
                &[
                    &wf.id,
                    &wf.status.as_str(),
                    &wf.wake_at,
                    &wf.waiting_for,
                    &output,
                    &wf.error,
                    &i64::from(wf.runs),
                    &Utc::now(),
                    &wf.started_at,
                    &wf.finished_at,
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
                "UPDATE workflows SET progress = $2, updated_at = $3 WHERE id = $1 AND runs = $4",
                &[
                    &claim.workflow_id,
                    &progress,
                    &Utc::now(),
                    &i64::from(claim.run),
                ],
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
                 WHERE workflow_id = $1 AND status = 'completed' AND name <> $3
                   AND left(name, length($2)) = $2",
                &[&claim.workflow_id, &prefix, &keep],
            )?;
            Ok(())
        })
    }

    fn request_cancel(&self, id: &str) -> Result<WorkflowRecord> {
        self.write(|tx| {
            let wf = get_wf(tx, id)?;
            if !wf.status.is_terminal() {
                tx.execute(
                    "UPDATE workflows SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1",
                    &[&id, &Utc::now()],
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
                "UPDATE workflow_steps SET status = 'retrying', wake_at = NULL,
                        finished_at = NULL, attempts = 0
                 WHERE workflow_id = $1 AND status = 'failed'",
                &[&id],
            )?;
            tx.execute(
                "UPDATE workflows SET status = 'queued', error = NULL, output = NULL,
                        finished_at = NULL, wake_at = NULL, waiting_for = NULL,
                        cancel_requested = FALSE, updated_at = $2
                 WHERE id = $1",
                &[&id, &Utc::now()],
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
                 VALUES ($1, $2, $3, $4)",
                &[&workflow_id, &name, &payload, &now],
            )?;
            tx.execute(
                "UPDATE workflows SET status = 'queued', wake_at = NULL, updated_at = $3
                 WHERE id = $1 AND status = 'waiting' AND waiting_for = $2",
                &[&workflow_id, &name, &now],
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
            let Some(event) = tx.query_opt(
                "SELECT id, payload FROM workflow_events
                 WHERE workflow_id = $1 AND name = $2 AND NOT consumed
                 ORDER BY id LIMIT 1",
                &[&workflow_id, &name],
            )?
            else {
                return Ok(None);
            };
            let id: i64 = event.get(0);
            let payload: Value = json(event.get(1))?;
            tx.execute(
                "UPDATE workflow_events SET consumed = TRUE WHERE id = $1",
                &[&id],
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
