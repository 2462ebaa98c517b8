//! [`AgentStore`] on PostgreSQL.

use chrono::{DateTime, Utc};
use postgres::Row;

use super::session::Session;
use super::{count, new_id, u, PgStore};
use crate::store::agents::*;
use crate::store::{Page, Result, StoreError};

fn json(r: &Row, i: usize) -> serde_json::Value {
    serde_json::from_str(r.get(i)).unwrap_or(serde_json::Value::Null)
}

const AGENT_COLS: &str = "tenant_id, id, config, state, version, created_at, updated_at";

fn agent_row(r: &Row) -> AgentRecord {
    AgentRecord {
        tenant_id: r.get(0),
        id: r.get(1),
        config: json(r, 2),
        state: json(r, 3),
        version: u(r, 4),
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

const CONV_COLS: &str = "id, agent_id, title, summary, summary_upto, created_at, updated_at";

fn conv_row(r: &Row) -> Conversation {
    Conversation {
        id: r.get(0),
        agent_id: r.get(1),
        title: r.get(2),
        summary: r.get(3),
        summary_upto: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

const MSG_COLS: &str = "m.id, m.conversation_id, m.role, m.content, m.citations, m.tokens_in, \
    m.tokens_out, m.cost_usd, m.meta, m.created_at";

fn msg_row(r: &Row) -> Result<MessageRecord> {
    let role: &str = r.get(2);
    Ok(MessageRecord {
        id: r.get(0),
        conversation_id: r.get(1),
        role: MessageRole::parse(role)
            .ok_or_else(|| StoreError::Database(format!("unknown message role `{role}`")))?,
        content: r.get(3),
        citations: json(r, 4),
        tokens_in: u(r, 5) as u32,
        tokens_out: u(r, 6) as u32,
        cost_usd: r.get(7),
        meta: json(r, 8),
        created_at: r.get(9),
    })
}

const TASK_COLS: &str = "id, agent_id, kind, payload, status, attempts, max_attempts, run_at, \
    last_error, result, schedule_id, created_at, updated_at, tenant_id";

fn task_row(r: &Row) -> TaskRecord {
    TaskRecord {
        id: r.get(0),
        agent_id: r.get(1),
        kind: r.get(2),
        payload: json(r, 3),
        status: TaskStatus::parse(r.get(4)).unwrap_or(TaskStatus::Failed),
        attempts: u(r, 5) as u32,
        max_attempts: u(r, 6) as u32,
        run_at: r.get(7),
        last_error: r.get(8),
        result: r
            .get::<_, Option<&str>>(9)
            .and_then(|s| serde_json::from_str(s).ok()),
        schedule_id: r.get(10),
        created_at: r.get(11),
        updated_at: r.get(12),
        tenant_id: r.get(13),
    }
}

const SCHED_COLS: &str = "id, agent_id, kind, spec, task_kind, payload, next_run, last_run, runs, \
    created_at, tenant_id";

fn sched_row(r: &Row) -> ScheduleRecord {
    ScheduleRecord {
        id: r.get(0),
        agent_id: r.get(1),
        kind: r.get(2),
        spec: r.get(3),
        task_kind: r.get(4),
        payload: json(r, 5),
        next_run: r.get(6),
        last_run: r.get(7),
        runs: u(r, 8),
        created_at: r.get(9),
        tenant_id: r.get(10),
    }
}

fn not_found(kind: &'static str, id: impl ToString) -> StoreError {
    StoreError::NotFound {
        kind,
        id: id.to_string(),
    }
}

fn insert_task(tx: &mut Session<'_, '_>, t: &NewTask) -> Result<TaskRecord> {
    let now = Utc::now();
    let row = tx.query_one(
        &format!(
            "INSERT INTO agent_tasks (tenant_id, agent_id, kind, payload, status, attempts,
                                      max_attempts, run_at, schedule_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $7, $8, $8)
             RETURNING {TASK_COLS}"
        ),
        &[
            &t.tenant_id,
            &t.agent_id,
            &t.kind,
            &t.payload.to_string(),
            &i64::from(t.max_attempts),
            &t.run_at,
            &t.schedule_id,
            &now,
        ],
    )?;
    Ok(task_row(&row))
}

impl AgentStore for PgStore {
    fn load_agent(
        &self,
        tenant_id: &str,
        id: &str,
        config: &serde_json::Value,
    ) -> Result<AgentRecord> {
        let select = format!("SELECT {AGENT_COLS} FROM agents WHERE tenant_id = $1 AND id = $2");
        let found = self.read(|c| Ok(c.query_opt(&select, &[&tenant_id, &id])?))?;
        if let Some(a) = found {
            return Ok(agent_row(&a));
        }
        self.write(|tx| {
            // The (tenant, id) key decides between processes creating the same agent at once.
            tx.execute(
                "INSERT INTO agents (tenant_id, id, config, state, version, created_at, updated_at)
                 VALUES ($1, $2, $3, 'null', 0, $4, $4) ON CONFLICT DO NOTHING",
                &[&tenant_id, &id, &config.to_string(), &Utc::now()],
            )?;
            Ok(agent_row(&tx.query_one(&select, &[&tenant_id, &id])?))
        })
    }

    fn list_agents(&self, tenant_id: &str, offset: u64, limit: u64) -> Result<Page<AgentSummary>> {
        self.read(|c| {
            let total = u(
                &c.query_one(
                    "SELECT COUNT(*) FROM agents WHERE tenant_id = $1",
                    &[&tenant_id],
                )?,
                0,
            );
            let items = c
                .query(
                    // The name is read here, not with `::jsonb` in SQL: jsonb refuses text
                    // holding `\u0000`, which JSON (and so a config) may.
                    "SELECT id, config, version, created_at, updated_at
                     FROM agents WHERE tenant_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
                    &[&tenant_id, &count(limit), &count(offset)],
                )?
                .iter()
                .map(|r| AgentSummary {
                    id: r.get(0),
                    name: serde_json::from_str::<serde_json::Value>(r.get::<_, &str>(1))
                        .ok()
                        .and_then(|c| c.get("name")?.as_str().map(str::to_owned)),
                    version: u(r, 2),
                    created_at: r.get(3),
                    updated_at: r.get(4),
                })
                .collect();
            Ok(Page { items, total })
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
                "UPDATE agents SET state = $3, config = $4, version = $5, updated_at = $6
                 WHERE tenant_id = $1 AND id = $2",
                &[
                    &tenant_id,
                    &id,
                    &state.to_string(),
                    &config.to_string(),
                    &(version as i64),
                    &now,
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
                "DELETE FROM agent_events WHERE tenant_id = $1 AND agent_id = $2",
                &[&tenant_id, &id],
            )?;
            Ok(tx.execute(
                "DELETE FROM agents WHERE tenant_id = $1 AND id = $2",
                &[&tenant_id, &id],
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
            let row = tx.query_one(
                &format!(
                    "INSERT INTO agent_conversations (id, tenant_id, agent_id, title, created_at,
                                                      updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5) RETURNING {CONV_COLS}"
                ),
                &[&new_id(), &tenant_id, &agent_id, &title, &Utc::now()],
            )?;
            Ok(conv_row(&row))
        })
    }

    fn conversation(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<Conversation> {
        self.read(|c| {
            c.query_opt(
                &format!(
                    "SELECT {CONV_COLS} FROM agent_conversations
                     WHERE id = $1 AND tenant_id = $2 AND agent_id = $3"
                ),
                &[&id, &tenant_id, &agent_id],
            )?
            .as_ref()
            .map(conv_row)
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
            Ok(c.query(
                &format!(
                    "SELECT {CONV_COLS} FROM agent_conversations
                     WHERE tenant_id = $1 AND agent_id = $2
                       AND ($4::text IS NULL OR title ILIKE $4 ESCAPE '\\' OR EXISTS (
                           SELECT 1 FROM agent_messages m
                           WHERE m.conversation_id = agent_conversations.id
                             AND m.content ILIKE $4 ESCAPE '\\'))
                     ORDER BY updated_at DESC, id DESC LIMIT $3"
                ),
                &[&tenant_id, &agent_id, &count(limit), &pattern],
            )?
            .iter()
            .map(conv_row)
            .collect())
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
            tx.query_opt(
                &format!(
                    "UPDATE agent_conversations SET title = $4
                     WHERE id = $1 AND tenant_id = $2 AND agent_id = $3 RETURNING {CONV_COLS}"
                ),
                &[&id, &tenant_id, &agent_id, &title],
            )?
            .as_ref()
            .map(conv_row)
            .ok_or_else(|| not_found("conversation", id))
        })
    }

    fn delete_conversation(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM agent_conversations WHERE id = $1 AND tenant_id = $2 AND agent_id = $3",
                &[&id, &tenant_id, &agent_id],
            )? > 0)
        })
    }

    fn append_message(
        &self,
        tenant_id: &str,
        agent_id: &str,
        m: &NewMessage,
    ) -> Result<MessageRecord> {
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
        self.write(|tx| {
            let now = Utc::now();
            let n = tx.execute(
                "UPDATE agent_conversations SET updated_at = $4
                 WHERE id = $1 AND tenant_id = $2 AND agent_id = $3",
                &[&m.conversation_id, &tenant_id, &agent_id, &now],
            )?;
            if n == 0 {
                return Err(not_found("conversation", &m.conversation_id));
            }
            let row = tx.query_one(
                &format!(
                    "INSERT INTO agent_messages AS m (conversation_id, role, content, citations,
                                                      tokens_in, tokens_out, cost_usd, meta,
                                                      created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {MSG_COLS}"
                ),
                &[
                    &m.conversation_id,
                    &m.role.as_str(),
                    &m.content,
                    &citations,
                    &i64::from(m.tokens_in),
                    &i64::from(m.tokens_out),
                    &m.cost_usd,
                    &meta,
                    &now,
                ],
            )?;
            msg_row(&row)
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
            c.query(
                &format!(
                    "SELECT {MSG_COLS} FROM agent_messages m
                     JOIN agent_conversations c ON c.id = m.conversation_id
                     WHERE m.conversation_id = $1 AND c.tenant_id = $2 AND c.agent_id = $3
                       AND m.id > $4 ORDER BY m.id LIMIT $5"
                ),
                &[
                    &conversation_id,
                    &tenant_id,
                    &agent_id,
                    &after,
                    &count(limit),
                ],
            )?
            .iter()
            .map(msg_row)
            .collect()
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
                "UPDATE agent_conversations SET summary = $4, summary_upto = $5
                 WHERE id = $1 AND tenant_id = $2 AND agent_id = $3 AND summary_upto <= $5",
                &[&conversation_id, &tenant_id, &agent_id, &summary, &upto],
            )?)
        })?;
        if n == 0 {
            return Err(not_found("conversation", conversation_id));
        }
        Ok(())
    }

    fn agent_spend(&self, tenant_id: &str, agent_id: &str, since: DateTime<Utc>) -> Result<f64> {
        self.read(|c| {
            Ok(c.query_one(
                "SELECT COALESCE(SUM(m.cost_usd), 0) FROM agent_messages m
                 JOIN agent_conversations c ON c.id = m.conversation_id
                 WHERE c.tenant_id = $1 AND c.agent_id = $2 AND m.created_at >= $3",
                &[&tenant_id, &agent_id, &since],
            )?
            .get(0))
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
            let head = tx.query_opt(
                &format!(
                    "SELECT {TASK_COLS} FROM agent_tasks WHERE tenant_id = $1 AND agent_id = $2
                       AND status IN ('pending', 'running') ORDER BY id LIMIT 1"
                ),
                &[&tenant_id, &agent_id],
            )?;
            let Some(task) = head.as_ref().map(task_row) else {
                return Ok(None);
            };
            if task.status != TaskStatus::Pending || task.run_at > now {
                return Ok(None);
            }
            let row = tx.query_one(
                &format!(
                    "UPDATE agent_tasks SET status = 'running', attempts = attempts + 1,
                            updated_at = $2, claimed_by = $3
                     WHERE id = $1 RETURNING {TASK_COLS}"
                ),
                &[&task.id, &now, &holder],
            )?;
            Ok(Some(task_row(&row)))
        })
    }

    fn next_task_time(&self, tenant_id: &str, agent_id: &str) -> Result<Option<DateTime<Utc>>> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT run_at FROM agent_tasks WHERE tenant_id = $1 AND agent_id = $2
                   AND status = 'pending' ORDER BY id LIMIT 1",
                &[&tenant_id, &agent_id],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn finish_task(&self, id: i64, outcome: &TaskOutcome) -> Result<TaskRecord> {
        self.write(|tx| {
            let now = Utc::now();
            let row = match outcome {
                TaskOutcome::Done(v) => tx.query_opt(
                    &format!(
                        "UPDATE agent_tasks SET status = 'done', result = $2, last_error = NULL,
                                updated_at = $3
                         WHERE id = $1 RETURNING {TASK_COLS}"
                    ),
                    &[&id, &v.to_string(), &now],
                )?,
                TaskOutcome::Retry { error, at } => tx.query_opt(
                    &format!(
                        "UPDATE agent_tasks SET status = 'pending', last_error = $2, run_at = $3,
                                updated_at = $4
                         WHERE id = $1 RETURNING {TASK_COLS}"
                    ),
                    &[&id, error, at, &now],
                )?,
                TaskOutcome::Failed(error) => tx.query_opt(
                    &format!(
                        "UPDATE agent_tasks SET status = 'failed', last_error = $2,
                                updated_at = $3
                         WHERE id = $1 RETURNING {TASK_COLS}"
                    ),
                    &[&id, error, &now],
                )?,
            };
            row.as_ref()
                .map(task_row)
                .ok_or_else(|| not_found("task", id))
        })
    }

    fn task(&self, tenant_id: &str, agent_id: &str, id: i64) -> Result<TaskRecord> {
        self.read(|c| {
            c.query_opt(
                &format!(
                    "SELECT {TASK_COLS} FROM agent_tasks
                     WHERE id = $1 AND tenant_id = $2 AND agent_id = $3"
                ),
                &[&id, &tenant_id, &agent_id],
            )?
            .as_ref()
            .map(task_row)
            .ok_or_else(|| not_found("task", id))
        })
    }

    fn list_tasks(&self, tenant_id: &str, agent_id: &str, limit: u64) -> Result<Vec<TaskRecord>> {
        self.read(|c| {
            Ok(c.query(
                &format!(
                    "SELECT {TASK_COLS} FROM agent_tasks WHERE tenant_id = $1 AND agent_id = $2
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&tenant_id, &agent_id, &count(limit)],
            )?
            .iter()
            .map(task_row)
            .collect())
        })
    }

    fn requeue_running_tasks(&self, holder: &str, alive_since: DateTime<Utc>) -> Result<u64> {
        // Other replicas may be running tasks: only those of replicas gone silent go back.
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE agent_tasks SET status = 'pending',
                        last_error = COALESCE(last_error, 'interrupted by a restart')
                 WHERE status = 'running'
                   AND (claimed_by IS NULL
                        OR (claimed_by <> $1
                            AND claimed_by NOT IN (SELECT id FROM replicas
                                                   WHERE heartbeat_at >= $2)))",
                &[&holder, &alive_since],
            )?)
        })
    }

    fn agents_with_due_tasks(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            Ok(c.query(
                "SELECT DISTINCT tenant_id, agent_id FROM agent_tasks
                 WHERE status = 'pending' AND run_at <= $1",
                &[&now],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn add_schedule(&self, s: &NewSchedule) -> Result<ScheduleRecord> {
        self.write(|tx| {
            let row = tx.query_one(
                &format!(
                    "INSERT INTO agent_schedules (id, tenant_id, agent_id, kind, spec, task_kind,
                                                  payload, next_run, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {SCHED_COLS}"
                ),
                &[
                    &new_id(),
                    &s.tenant_id,
                    &s.agent_id,
                    &s.kind,
                    &s.spec,
                    &s.task_kind,
                    &s.payload.to_string(),
                    &s.next_run,
                    &Utc::now(),
                ],
            )?;
            Ok(sched_row(&row))
        })
    }

    fn list_schedules(&self, tenant_id: &str, agent_id: &str) -> Result<Vec<ScheduleRecord>> {
        self.read(|c| {
            Ok(c.query(
                &format!(
                    "SELECT {SCHED_COLS} FROM agent_schedules
                     WHERE tenant_id = $1 AND agent_id = $2 ORDER BY created_at, id"
                ),
                &[&tenant_id, &agent_id],
            )?
            .iter()
            .map(sched_row)
            .collect())
        })
    }

    fn delete_schedule(&self, tenant_id: &str, agent_id: &str, id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM agent_schedules WHERE id = $1 AND tenant_id = $2 AND agent_id = $3",
                &[&id, &tenant_id, &agent_id],
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
            // Locked rows are being fired by another process: skipped, never fired twice.
            let due: Vec<ScheduleRecord> = tx
                .query(
                    &format!(
                        "SELECT {SCHED_COLS} FROM agent_schedules
                         WHERE next_run IS NOT NULL AND next_run <= $1
                         ORDER BY next_run LIMIT 500 FOR UPDATE SKIP LOCKED"
                    ),
                    &[&now],
                )?
                .iter()
                .map(sched_row)
                .collect();
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
                    "UPDATE agent_schedules SET next_run = $2, last_run = $3, runs = runs + 1
                     WHERE id = $1",
                    &[&s.id, &next(&s), &now],
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
            let st = "INSERT INTO agent_events (stream_id, seq, tenant_id, agent_id, event, data,
                                           created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
            for e in events {
                tx.execute(
                    st,
                    &[
                        &e.stream_id,
                        &(e.seq as i64),
                        &e.tenant_id,
                        &e.agent_id,
                        &e.event,
                        &e.data,
                        &now,
                    ],
                )?;
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
            Ok(c.query(
                "SELECT stream_id, seq, tenant_id, agent_id, event, data FROM agent_events
                 WHERE stream_id = $1 AND tenant_id = $2 AND agent_id = $3 AND seq > $4
                 ORDER BY seq",
                &[&stream_id, &tenant_id, &agent_id, &count(after)],
            )?
            .iter()
            .map(|r| StoredEvent {
                stream_id: r.get(0),
                seq: u(r, 1),
                tenant_id: r.get(2),
                agent_id: r.get(3),
                event: r.get(4),
                data: r.get(5),
            })
            .collect())
        })
    }

    fn purge_events(&self, before: DateTime<Utc>) -> Result<u64> {
        self.write(|tx| {
            Ok(tx.execute("DELETE FROM agent_events WHERE created_at < $1", &[&before])?)
        })
    }

    fn claim_agent(
        &self,
        tenant_id: &str,
        id: &str,
        holder: &str,
        token: &str,
        alive_since: DateTime<Utc>,
    ) -> Result<Holding> {
        // One statement: concurrent claimers queue on the row, and each re-checks the
        // condition against the lease the one before it left (READ COMMITTED re-evaluates the
        // conflict's WHERE on the latest row version), so at most one takes a free agent.
        self.write_committed(|tx| {
            let taken = tx.query_opt(
                "INSERT INTO agent_leases (tenant_id, agent_id, holder, token)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id, agent_id) DO UPDATE
                    SET holder = excluded.holder, token = excluded.token, since = now()
                  WHERE agent_leases.holder = excluded.holder
                     OR NOT EXISTS (SELECT 1 FROM replicas r
                                     WHERE r.id = agent_leases.holder
                                       AND r.heartbeat_at >= $5)
                 RETURNING holder",
                &[&tenant_id, &id, &holder, &token, &alive_since],
            )?;
            if taken.is_some() {
                return Ok(Holding::Held);
            }
            let row = tx.query_opt(
                "SELECT l.holder, COALESCE(r.address, '') FROM agent_leases l
                   LEFT JOIN replicas r ON r.id = l.holder
                  WHERE l.tenant_id = $1 AND l.agent_id = $2",
                &[&tenant_id, &id],
            )?;
            match row {
                Some(r) => Ok(Holding::Elsewhere {
                    replica: r.get(0),
                    address: r.get(1),
                }),
                // Released between the two statements: claim again.
                None => Err(StoreError::Busy("an agent lease changed hands".into())),
            }
        })
    }

    fn release_agent(&self, tenant_id: &str, id: &str, token: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM agent_leases WHERE tenant_id = $1 AND agent_id = $2 AND token = $3",
                &[&tenant_id, &id, &token],
            )?;
            Ok(())
        })
    }

    fn release_agents(&self, holder: &str) -> Result<u64> {
        self.write(|tx| Ok(tx.execute("DELETE FROM agent_leases WHERE holder = $1", &[&holder])?))
    }
}
