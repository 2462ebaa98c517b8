//! [`AgentStore`] on SQLite.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::{new_id, SqliteStore};
use crate::store::agents::*;
use crate::store::{Page, Result, StoreError};

fn json(r: &Row<'_>, i: usize) -> rusqlite::Result<serde_json::Value> {
    let s: String = r.get(i)?;
    Ok(serde_json::from_str(&s).unwrap_or(serde_json::Value::Null))
}

const AGENT_COLS: &str = "tenant_id, id, config, state, version, created_at, updated_at";

fn agent_row(r: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    Ok(AgentRecord {
        tenant_id: r.get(0)?,
        id: r.get(1)?,
        config: json(r, 2)?,
        state: json(r, 3)?,
        version: r.get::<_, i64>(4)? as u64,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

const CONV_COLS: &str = "id, agent_id, title, summary, summary_upto, created_at, updated_at";

fn conv_row(r: &Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        title: r.get(2)?,
        summary: r.get(3)?,
        summary_upto: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

const MSG_COLS: &str = "m.id, m.conversation_id, m.role, m.content, m.citations, m.tokens_in, \
    m.tokens_out, m.cost_usd, m.meta, m.created_at";

fn msg_row(r: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: r.get(0)?,
        conversation_id: r.get(1)?,
        role: {
            let stored: String = r.get(2)?;
            MessageRole::parse(&stored).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Text,
                    format!("unknown message role `{stored}`").into(),
                )
            })?
        },
        content: r.get(3)?,
        citations: json(r, 4)?,
        tokens_in: r.get(5)?,
        tokens_out: r.get(6)?,
        cost_usd: r.get(7)?,
        meta: json(r, 8)?,
        created_at: r.get(9)?,
    })
}

const TASK_COLS: &str = "id, agent_id, kind, payload, status, attempts, max_attempts, run_at, \
    last_error, result, schedule_id, created_at, updated_at, tenant_id";

fn task_row(r: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    let status: String = r.get(4)?;
    let result: Option<String> = r.get(9)?;
    Ok(TaskRecord {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        kind: r.get(2)?,
        payload: json(r, 3)?,
        status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Failed),
        attempts: r.get(5)?,
        max_attempts: r.get(6)?,
        run_at: r.get(7)?,
        last_error: r.get(8)?,
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
        schedule_id: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        tenant_id: r.get(13)?,
    })
}

const SCHED_COLS: &str = "id, agent_id, kind, spec, task_kind, payload, next_run, last_run, runs, \
    created_at, tenant_id";

fn sched_row(r: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        kind: r.get(2)?,
        spec: r.get(3)?,
        task_kind: r.get(4)?,
        payload: json(r, 5)?,
        next_run: r.get(6)?,
        last_run: r.get(7)?,
        runs: r.get::<_, i64>(8)? as u64,
        created_at: r.get(9)?,
        tenant_id: r.get(10)?,
    })
}

fn not_found(kind: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_string(),
    }
}

fn insert_task(tx: &rusqlite::Transaction<'_>, t: &NewTask) -> Result<TaskRecord> {
    let now = Utc::now();
    tx.execute(
        "INSERT INTO agent_tasks (tenant_id, agent_id, kind, payload, status, attempts, \
         max_attempts, run_at, schedule_id, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6, ?7, ?8, ?8)",
        params![
            t.tenant_id,
            t.agent_id,
            t.kind,
            t.payload.to_string(),
            t.max_attempts,
            t.run_at,
            t.schedule_id,
            now
        ],
    )?;
    let id = tx.last_insert_rowid();
    Ok(tx.query_row(
        &format!("SELECT {TASK_COLS} FROM agent_tasks WHERE id = ?1"),
        [id],
        task_row,
    )?)
}

impl AgentStore for SqliteStore {
    fn load_agent(
        &self,
        tenant_id: &str,
        id: &str,
        config: &serde_json::Value,
    ) -> Result<AgentRecord> {
        let found = self.read(|c| {
            Ok(c.query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE tenant_id = ?1 AND id = ?2"),
                params![tenant_id, id],
                agent_row,
            )
            .optional()?)
        })?;
        if let Some(a) = found {
            return Ok(a);
        }
        self.write(|tx| {
            let now = Utc::now();
            tx.execute(
                "INSERT OR IGNORE INTO agents (tenant_id, id, config, state, version, created_at, \
                 updated_at) VALUES (?1, ?2, ?3, 'null', 0, ?4, ?4)",
                params![tenant_id, id, config.to_string(), now],
            )?;
            Ok(tx.query_row(
                &format!("SELECT {AGENT_COLS} FROM agents WHERE tenant_id = ?1 AND id = ?2"),
                params![tenant_id, id],
                agent_row,
            )?)
        })
    }

    fn list_agents(&self, tenant_id: &str, offset: u64, limit: u64) -> Result<Page<AgentSummary>> {
        self.read(|c| {
            let total: i64 = c.query_row(
                "SELECT COUNT(*) FROM agents WHERE tenant_id = ?1",
                [tenant_id],
                |r| r.get(0),
            )?;
            let mut st = c.prepare(
                "SELECT id, json_extract(config, '$.name'), version, created_at, updated_at \
                 FROM agents WHERE tenant_id = ?1 ORDER BY id LIMIT ?2 OFFSET ?3",
            )?;
            let items = st
                .query_map(params![tenant_id, limit as i64, offset as i64], |r| {
                    Ok(AgentSummary {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        version: r.get::<_, i64>(2)? as u64,
                        created_at: r.get(3)?,
                        updated_at: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
    }

    fn save_agent(
        &self,
        tenant_id: &str,
        id: &str,
        state: &serde_json::Value,
        config: &serde_json::Value,
        version: u64,
    ) -> Result<DateTime<Utc>> {
        let now = Utc::now();
        let n = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE agents SET state = ?3, config = ?4, version = ?5, updated_at = ?6 \
                 WHERE tenant_id = ?1 AND id = ?2",
                params![
                    tenant_id,
                    id,
                    state.to_string(),
                    config.to_string(),
                    version as i64,
                    now
                ],
            )?)
        })?;
        if n == 0 {
            return Err(not_found("agent", id));
        }
        Ok(now)
    }

    fn delete_agent(&self, tenant_id: &str, id: &str) -> Result<bool> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM agent_events WHERE tenant_id = ?1 AND agent_id = ?2",
                params![tenant_id, id],
            )?;
            Ok(tx.execute(
                "DELETE FROM agents WHERE tenant_id = ?1 AND id = ?2",
                params![tenant_id, id],
            )? > 0)
        })
    }

    fn create_conversation(
        &self,
        tenant_id: &str,
        agent_id: &str,
        title: &str,
    ) -> Result<Conversation> {
        self.write(|tx| {
            let id = new_id();
            let now = Utc::now();
            tx.execute(
                "INSERT INTO agent_conversations (id, tenant_id, agent_id, title, created_at, \
                 updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![id, tenant_id, agent_id, title, now],
            )?;
            Ok(tx.query_row(
                &format!("SELECT {CONV_COLS} FROM agent_conversations WHERE id = ?1"),
                [&id],
                conv_row,
            )?)
        })
    }

    fn conversation(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<Conversation> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {CONV_COLS} FROM agent_conversations \
                     WHERE id = ?1 AND tenant_id = ?2 AND agent_id = ?3"
                ),
                params![id, tenant_id, agent_id],
                conv_row,
            )
            .optional()?
            .ok_or_else(|| not_found("conversation", id))
        })
    }

    fn list_conversations(
        &self,
        tenant_id: &str,
        agent_id: &str,
        query: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Conversation>> {
        let pattern = query.map(crate::store::contains_pattern);
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {CONV_COLS} FROM agent_conversations WHERE tenant_id = ?1 AND agent_id = ?2 \
                 AND (?4 IS NULL OR title LIKE ?4 ESCAPE '\\' OR EXISTS (SELECT 1 FROM \
                 agent_messages m WHERE m.conversation_id = agent_conversations.id \
                 AND m.content LIKE ?4 ESCAPE '\\')) \
                 ORDER BY updated_at DESC, id DESC LIMIT ?3"
            ))?;
            let rows = st
                .query_map(
                    params![tenant_id, agent_id, limit as i64, pattern],
                    conv_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn rename_conversation(
        &self,
        tenant_id: &str,
        agent_id: &str,
        id: &str,
        title: &str,
    ) -> Result<Conversation> {
        self.write(|tx| {
            tx.query_row(
                &format!(
                    "UPDATE agent_conversations SET title = ?4 \
                     WHERE id = ?1 AND tenant_id = ?2 AND agent_id = ?3 RETURNING {CONV_COLS}"
                ),
                params![id, tenant_id, agent_id, title],
                conv_row,
            )
            .optional()?
            .ok_or_else(|| not_found("conversation", id))
        })
    }

    fn delete_conversation(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM agent_conversations WHERE id = ?1 AND tenant_id = ?2 AND agent_id = ?3",
                params![id, tenant_id, agent_id],
            )? > 0)
        })
    }

    fn append_message(
        &self,
        tenant_id: &str,
        agent_id: &str,
        m: &NewMessage,
    ) -> Result<MessageRecord> {
        self.write(|tx| {
            let now = Utc::now();
            let n = tx.execute(
                "UPDATE agent_conversations SET updated_at = ?4 \
                 WHERE id = ?1 AND tenant_id = ?2 AND agent_id = ?3",
                params![m.conversation_id, tenant_id, agent_id, now],
            )?;
            if n == 0 {
                return Err(not_found("conversation", &m.conversation_id));
            }
            let citations = if m.citations.is_null() {
                "[]".to_owned()
            } else {
                m.citations.to_string()
            };
            let meta = if m.meta.is_null() {
                "{}".to_owned()
            } else {
                m.meta.to_string()
            };
            tx.execute(
                "INSERT INTO agent_messages (conversation_id, role, content, citations, tokens_in, \
                 tokens_out, cost_usd, meta, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    m.conversation_id,
                    m.role.as_str(),
                    m.content,
                    citations,
                    m.tokens_in,
                    m.tokens_out,
                    m.cost_usd,
                    meta,
                    now
                ],
            )?;
            let id = tx.last_insert_rowid();
            Ok(tx.query_row(
                &format!("SELECT {MSG_COLS} FROM agent_messages m WHERE m.id = ?1"),
                [id],
                msg_row,
            )?)
        })
    }

    fn messages(
        &self,
        tenant_id: &str,
        agent_id: &str,
        conversation_id: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<MessageRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {MSG_COLS} FROM agent_messages m \
                 JOIN agent_conversations c ON c.id = m.conversation_id \
                 WHERE m.conversation_id = ?1 AND c.tenant_id = ?2 AND c.agent_id = ?3 \
                 AND m.id > ?4 ORDER BY m.id LIMIT ?5"
            ))?;
            let rows = st
                .query_map(
                    params![conversation_id, tenant_id, agent_id, after, limit as i64],
                    msg_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn set_summary(
        &self,
        tenant_id: &str,
        agent_id: &str,
        conversation_id: &str,
        summary: &str,
        upto: i64,
    ) -> Result<()> {
        let n = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE agent_conversations SET summary = ?4, summary_upto = ?5 \
                 WHERE id = ?1 AND tenant_id = ?2 AND agent_id = ?3 AND summary_upto <= ?5",
                params![conversation_id, tenant_id, agent_id, summary, upto],
            )?)
        })?;
        if n == 0 {
            return Err(not_found("conversation", conversation_id));
        }
        Ok(())
    }

    fn agent_spend(&self, tenant_id: &str, agent_id: &str, since: DateTime<Utc>) -> Result<f64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COALESCE(SUM(m.cost_usd), 0) FROM agent_messages m \
                 JOIN agent_conversations c ON c.id = m.conversation_id \
                 WHERE c.tenant_id = ?1 AND c.agent_id = ?2 AND m.created_at >= ?3",
                params![tenant_id, agent_id, since],
                |r| r.get(0),
            )?)
        })
    }

    fn enqueue_task(&self, t: &NewTask) -> Result<TaskRecord> {
        self.write(|tx| insert_task(tx, t))
    }

    fn claim_task(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: DateTime<Utc>,
        holder: &str,
    ) -> Result<Option<TaskRecord>> {
        self.write(|tx| {
            let head = tx
                .query_row(
                    &format!(
                        "SELECT {TASK_COLS} FROM agent_tasks WHERE tenant_id = ?1 AND agent_id = ?2 \
                         AND status IN ('pending', 'running') ORDER BY id LIMIT 1"
                    ),
                    params![tenant_id, agent_id],
                    task_row,
                )
                .optional()?;
            let Some(task) = head else { return Ok(None) };
            if task.status != TaskStatus::Pending || task.run_at > now {
                return Ok(None);
            }
            tx.execute(
                "UPDATE agent_tasks SET status = 'running', attempts = attempts + 1, \
                 updated_at = ?2, claimed_by = ?3 WHERE id = ?1",
                params![task.id, now, holder],
            )?;
            Ok(Some(tx.query_row(
                &format!("SELECT {TASK_COLS} FROM agent_tasks WHERE id = ?1"),
                [task.id],
                task_row,
            )?))
        })
    }

    fn next_task_time(&self, tenant_id: &str, agent_id: &str) -> Result<Option<DateTime<Utc>>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT run_at FROM agent_tasks WHERE tenant_id = ?1 AND agent_id = ?2 \
                 AND status = 'pending' ORDER BY id LIMIT 1",
                params![tenant_id, agent_id],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn finish_task(&self, id: i64, outcome: &TaskOutcome) -> Result<TaskRecord> {
        self.write(|tx| {
            let now = Utc::now();
            match outcome {
                TaskOutcome::Done(v) => tx.execute(
                    "UPDATE agent_tasks SET status = 'done', result = ?2, last_error = NULL, \
                     updated_at = ?3 WHERE id = ?1",
                    params![id, v.to_string(), now],
                )?,
                TaskOutcome::Retry { error, at } => tx.execute(
                    "UPDATE agent_tasks SET status = 'pending', last_error = ?2, run_at = ?3, \
                     updated_at = ?4 WHERE id = ?1",
                    params![id, error, at, now],
                )?,
                TaskOutcome::Failed(error) => tx.execute(
                    "UPDATE agent_tasks SET status = 'failed', last_error = ?2, updated_at = ?3 \
                     WHERE id = ?1",
                    params![id, error, now],
                )?,
            };
            tx.query_row(
                &format!("SELECT {TASK_COLS} FROM agent_tasks WHERE id = ?1"),
                [id],
                task_row,
            )
            .optional()?
            .ok_or_else(|| not_found("task", id))
        })
    }

    fn task(&self, tenant_id: &str, agent_id: &str, id: i64) -> Result<TaskRecord> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {TASK_COLS} FROM agent_tasks WHERE id = ?1 AND tenant_id = ?2 \
                     AND agent_id = ?3"
                ),
                params![id, tenant_id, agent_id],
                task_row,
            )
            .optional()?
            .ok_or_else(|| not_found("task", id))
        })
    }

    fn list_tasks(&self, tenant_id: &str, agent_id: &str, limit: u64) -> Result<Vec<TaskRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {TASK_COLS} FROM agent_tasks WHERE tenant_id = ?1 AND agent_id = ?2 \
                 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st
                .query_map(params![tenant_id, agent_id, limit as i64], task_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn requeue_running_tasks(&self, holder: &str, _alive_since: DateTime<Utc>) -> Result<u64> {
        // The data directory's lock makes this process the file's only user: a task it did
        // not claim was left running by a process that is gone.
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE agent_tasks SET status = 'pending', \
                 last_error = COALESCE(last_error, 'interrupted by a restart') \
                 WHERE status = 'running' AND (claimed_by IS NULL OR claimed_by <> ?1)",
                [holder],
            )? as u64)
        })
    }

    fn agents_with_due_tasks(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT DISTINCT tenant_id, agent_id FROM agent_tasks \
                 WHERE status = 'pending' AND run_at <= ?1",
            )?;
            let rows = st
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn add_schedule(&self, s: &NewSchedule) -> Result<ScheduleRecord> {
        self.write(|tx| {
            let id = new_id();
            tx.execute(
                "INSERT INTO agent_schedules (id, tenant_id, agent_id, kind, spec, task_kind, \
                 payload, next_run, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id,
                    s.tenant_id,
                    s.agent_id,
                    s.kind,
                    s.spec,
                    s.task_kind,
                    s.payload.to_string(),
                    s.next_run,
                    Utc::now()
                ],
            )?;
            Ok(tx.query_row(
                &format!("SELECT {SCHED_COLS} FROM agent_schedules WHERE id = ?1"),
                [&id],
                sched_row,
            )?)
        })
    }

    fn list_schedules(&self, tenant_id: &str, agent_id: &str) -> Result<Vec<ScheduleRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {SCHED_COLS} FROM agent_schedules WHERE tenant_id = ?1 AND agent_id = ?2 \
                 ORDER BY created_at, id"
            ))?;
            let rows = st
                .query_map(params![tenant_id, agent_id], sched_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn delete_schedule(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM agent_schedules WHERE id = ?1 AND tenant_id = ?2 AND agent_id = ?3",
                params![id, tenant_id, agent_id],
            )? > 0)
        })
    }

    fn fire_due_schedules(
        &self,
        now: DateTime<Utc>,
        max_attempts: u32,
        next: &dyn Fn(&ScheduleRecord) -> Option<DateTime<Utc>>,
    ) -> Result<Vec<TaskRecord>> {
        self.write(|tx| {
            let due = {
                let mut st = tx.prepare(&format!(
                    "SELECT {SCHED_COLS} FROM agent_schedules \
                     WHERE next_run IS NOT NULL AND next_run <= ?1 ORDER BY next_run LIMIT 500"
                ))?;
                let rows = st
                    .query_map([now], sched_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            };
            let mut queued = Vec::with_capacity(due.len());
            for s in due {
                let mut payload = s.payload.clone();
                if let (Some(obj), Some(at)) = (payload.as_object_mut(), s.next_run) {
                    obj.entry("scheduled_for")
                        .or_insert_with(|| serde_json::json!(at));
                }
                queued.push(insert_task(
                    tx,
                    &NewTask {
                        tenant_id: s.tenant_id.clone(),
                        agent_id: s.agent_id.clone(),
                        kind: s.task_kind.clone(),
                        payload,
                        max_attempts,
                        run_at: now,
                        schedule_id: Some(s.id.clone()),
                    },
                )?);
                tx.execute(
                    "UPDATE agent_schedules SET next_run = ?2, last_run = ?3, runs = runs + 1 \
                     WHERE id = ?1",
                    params![s.id, next(&s), now],
                )?;
            }
            Ok(queued)
        })
    }

    fn append_events(&self, events: &[StoredEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let now = Utc::now();
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO agent_events (stream_id, seq, tenant_id, agent_id, event, \
                 data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for e in events {
                st.execute(params![
                    e.stream_id,
                    e.seq as i64,
                    e.tenant_id,
                    e.agent_id,
                    e.event,
                    e.data,
                    now
                ])?;
            }
            Ok(())
        })
    }

    fn events_after(
        &self,
        tenant_id: &str,
        agent_id: &str,
        stream_id: &str,
        after: u64,
    ) -> Result<Vec<StoredEvent>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT stream_id, seq, tenant_id, agent_id, event, data FROM agent_events \
                 WHERE stream_id = ?1 AND tenant_id = ?2 AND agent_id = ?3 AND seq > ?4 \
                 ORDER BY seq",
            )?;
            let rows = st
                .query_map(params![stream_id, tenant_id, agent_id, after as i64], |r| {
                    Ok(StoredEvent {
                        stream_id: r.get(0)?,
                        seq: r.get::<_, i64>(1)? as u64,
                        tenant_id: r.get(2)?,
                        agent_id: r.get(3)?,
                        event: r.get(4)?,
                        data: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn purge_events(&self, before: DateTime<Utc>) -> Result<u64> {
        self.write(|tx| {
            Ok(tx.execute("DELETE FROM agent_events WHERE created_at < ?1", [before])? as u64)
        })
    }

    // One process owns the file: it holds every agent, and there is nothing to release.
    fn claim_agent(
        &self,
        _tenant_id: &str,
        _id: &str,
        _holder: &str,
        _token: &str,
        _alive_since: DateTime<Utc>,
    ) -> Result<Holding> {
        Ok(Holding::Held)
    }

    fn release_agent(&self, _tenant_id: &str, _id: &str, _token: &str) -> Result<()> {
        Ok(())
    }

    fn release_agents(&self, _holder: &str) -> Result<u64> {
        Ok(0)
    }
}
