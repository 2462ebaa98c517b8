//! [`WorkflowStore`] on PostgreSQL.

use chrono::{DateTime, Utc};
use postgres::Row;
use serde_json::Value;

use super::session::Session;
use super::{count, json_err, u, PgStore};
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

    fn runnable_workflows(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<WorkflowRecord>> {
        self.read(|c| {
            wfs(c.query(
                &format!(
                    "SELECT {WF_COLS} FROM workflows
                     WHERE status = 'queued'
                        OR (status IN ('sleeping', 'waiting') AND wake_at IS NOT NULL
                            AND wake_at <= $1)
                        OR (status IN ('sleeping', 'waiting') AND cancel_requested)
                     ORDER BY created_at, id LIMIT $2"
                ),
                &[&now, &count(limit as u64)],
            )?)
        })
    }

    fn requeue_interrupted(&self) -> Result<usize> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE workflows SET status = 'queued', updated_at = $1 WHERE status = 'running'",
                &[&Utc::now()],
            )? as usize)
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
                        status = CASE WHEN $2 = 'waiting' AND EXISTS (
                                     SELECT 1 FROM workflow_events e
                                     WHERE e.workflow_id = $1 AND e.name = $4 AND NOT e.consumed)
                                 THEN 'queued' ELSE $2 END,
                        wake_at = $3, waiting_for = $4, output = $5,
                        error = $6, runs = $7, updated_at = $8, started_at = $9, finished_at = $10,
                        cancel_requested = CASE WHEN $2 IN ('completed', 'failed', 'cancelled')
                                                THEN FALSE ELSE cancel_requested END
                 WHERE id = $1",
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
                return Err(StoreError::NotFound {
                    kind: "workflow",
                    id: wf.id.clone(),
                });
            }
            Ok(())
        })
    }

    fn save_progress(&self, workflow_id: &str, progress: &Value) -> Result<()> {
        let progress = serde_json::to_string(progress).map_err(json_err)?;
        self.write_checkpoint(|tx| {
            tx.execute(
                "UPDATE workflows SET progress = $2, updated_at = $3 WHERE id = $1",
                &[&workflow_id, &progress, &Utc::now()],
            )?;
            Ok(())
        })
    }

    fn save_step(&self, workflow_id: &str, step: &StepRecord) -> Result<()> {
        self.write_checkpoint(|tx| upsert_step(tx, workflow_id, step))
    }

    fn forget_outputs(&self, workflow_id: &str, prefix: &str, keep: &str) -> Result<()> {
        self.write_checkpoint(|tx| {
            tx.execute(
                "UPDATE workflow_steps SET output = NULL
                 WHERE workflow_id = $1 AND status = 'completed' AND name <> $3
                   AND left(name, length($2)) = $2",
                &[&workflow_id, &prefix, &keep],
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
        workflow_id: &str,
        name: &str,
        step: &StepRecord,
    ) -> Result<Option<Value>> {
        self.write(|tx| {
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
