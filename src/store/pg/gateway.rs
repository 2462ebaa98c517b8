//! [`GatewayStore`] on PostgreSQL.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use postgres::Row;

use super::session::Session;
use super::{count, PgStore};
use crate::store::gateway::{
    hold_accounts, parse_hold_accounts, BudgetAccount, BudgetHold, BudgetRefusal, CacheEntry,
    CallLog, GatewayStore, LogQuery, UsageGroup, UsageRow,
};
use crate::store::{Page, Result};

const COLS: &str = "id, tenant_id, ts, kind, key_id, user_id, agent_id, route, provider, model, \
    status, error, attempts, latency_ms, ttft_ms, tokens_in, tokens_out, cost_usd, cache, \
    guardrails, stream, request, response";

fn json_col(r: &Row, i: usize) -> serde_json::Value {
    serde_json::from_str(r.get(i)).unwrap_or(serde_json::Value::Null)
}

fn row(r: &Row) -> CallLog {
    CallLog {
        id: r.get(0),
        tenant_id: r.get(1),
        ts: r.get(2),
        kind: r.get(3),
        key_id: r.get(4),
        user_id: r.get(5),
        agent_id: r.get(6),
        route: r.get(7),
        provider: r.get(8),
        model: r.get(9),
        status: r.get(10),
        error: r.get(11),
        attempts: json_col(r, 12),
        latency_ms: r.get(13),
        ttft_ms: r.get(14),
        tokens_in: r.get::<_, i64>(15) as u32,
        tokens_out: r.get::<_, i64>(16) as u32,
        cost_usd: r.get(17),
        cache: r.get(18),
        guardrails: json_col(r, 19),
        stream: r.get(20),
        request: r
            .get::<_, Option<&str>>(21)
            .and_then(|s| serde_json::from_str(s).ok()),
        response: r.get(22),
    }
}

type Args = Vec<Box<dyn ToSql + Sync>>;

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref()).collect()
}

/// `WHERE` clause and its parameters for a log query.
fn filter(q: &LogQuery) -> (String, Args) {
    let mut sql = String::from("tenant_id = $1");
    // Values are compared as they were written (NUL as U+FFFD, see `text`).
    let mut args: Args = vec![Box::new(text(&q.tenant_id).into_owned())];
    for (col, v) in [
        ("key_id", &q.key_id),
        ("user_id", &q.user_id),
        ("agent_id", &q.agent_id),
        ("route", &q.route),
        ("model", &q.model),
        ("status", &q.status),
    ] {
        if let Some(v) = v {
            args.push(Box::new(text(v).into_owned()));
            sql.push_str(&format!(" AND {col} = ${}", args.len()));
        }
    }
    if let Some(s) = q.since {
        args.push(Box::new(s));
        sql.push_str(&format!(" AND ts >= ${}", args.len()));
    }
    if let Some(u) = q.until {
        args.push(Box::new(u));
        sql.push_str(&format!(" AND ts < ${}", args.len()));
    }
    (sql, args)
}

/// PostgreSQL text cannot hold NUL; a call log keeps the record (its spend above all) with
/// NULs shown as U+FFFD rather than losing the batch it was written in, and lookups (log
/// filters, spend per user) spell their values the same way, so they find those records.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}").into()
    } else {
        s.into()
    }
}

fn text_opt(s: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
    s.as_deref().map(text)
}

/// Settled spend since `since` where `column` equals `subject` (every call when `None`).
fn spend(
    conn: &mut Session<'_, '_>,
    column: Option<&'static str>,
    subject: &str,
    since: DateTime<Utc>,
) -> Result<f64> {
    let row = match column {
        Some(col) => conn.query_one(
            &format!(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM gateway_calls WHERE {col} = $1 AND ts >= $2"
            ),
            &[&text(subject), &since],
        )?,
        None => conn.query_one(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM gateway_calls WHERE ts >= $1",
            &[&since],
        )?,
    };
    Ok(row.get(0))
}

impl GatewayStore for PgStore {
    fn insert_calls(&self, calls: &[CallLog]) -> Result<()> {
        self.write(|tx| {
            let stmt = format!(
                "INSERT INTO gateway_calls ({COLS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                  $18, $19, $20, $21, $22, $23)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, error = excluded.error,
                    attempts = excluded.attempts, latency_ms = excluded.latency_ms,
                    ttft_ms = excluded.ttft_ms, tokens_in = excluded.tokens_in,
                    tokens_out = excluded.tokens_out, cost_usd = excluded.cost_usd,
                    cache = excluded.cache, guardrails = excluded.guardrails,
                    request = excluded.request, response = excluded.response"
            );
            for c in calls {
                let attempts = c.attempts.to_string();
                let guardrails = c.guardrails.to_string();
                let request = c.request.as_ref().map(|r| r.to_string());
                tx.execute(
                    &stmt,
                    &[
                        &text(&c.id),
                        &text(&c.tenant_id),
                        &c.ts,
                        &text(&c.kind),
                        &text(&c.key_id),
                        &text_opt(&c.user_id),
                        &text_opt(&c.agent_id),
                        &text(&c.route),
                        &text_opt(&c.provider),
                        &text_opt(&c.model),
                        &text(&c.status),
                        &text_opt(&c.error),
                        &text(&attempts),
                        &c.latency_ms,
                        &c.ttft_ms,
                        &i64::from(c.tokens_in),
                        &i64::from(c.tokens_out),
                        &c.cost_usd,
                        &text(&c.cache),
                        &text(&guardrails),
                        &c.stream,
                        &text_opt(&request),
                        &text_opt(&c.response),
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn calls(&self, q: &LogQuery) -> Result<Page<CallLog>> {
        let (cond, mut args) = filter(q);
        let n = args.len();
        args.push(Box::new(count(q.limit)));
        args.push(Box::new(count(q.offset)));
        self.read(|conn| {
            let all = refs(&args);
            let total = conn
                .query_one(
                    &format!("SELECT COUNT(*) FROM gateway_calls WHERE {cond}"),
                    &all[..n],
                )?
                .get::<_, i64>(0) as u64;
            let items = conn
                .query(
                    &format!(
                        "SELECT {COLS} FROM gateway_calls WHERE {cond} ORDER BY ts DESC, id DESC \
                         LIMIT ${} OFFSET ${}",
                        n + 1,
                        n + 2
                    ),
                    &all,
                )?
                .iter()
                .map(row)
                .collect();
            Ok(Page { items, total })
        })
    }

    fn usage(
        &self,
        tenant_id: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        group: &[UsageGroup],
    ) -> Result<Vec<UsageRow>> {
        let (cond, args) = filter(&LogQuery {
            tenant_id: tenant_id.to_owned(),
            since,
            until,
            ..LogQuery::default()
        });
        let cols: Vec<(&str, &str)> = group
            .iter()
            .map(|g| match g {
                UsageGroup::Day => ("day", "to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
                UsageGroup::Model => ("model", "model"),
                UsageGroup::Key => ("key", "key_id"),
                UsageGroup::User => ("user", "user_id"),
                UsageGroup::Agent => ("agent", "agent_id"),
                UsageGroup::Route => ("route", "route"),
            })
            .collect();
        let select: Vec<&str> = cols.iter().map(|(_, e)| *e).collect();
        let (lead, group_by) = if select.is_empty() {
            (String::new(), String::new())
        } else {
            let list = select.join(", ");
            (
                format!("{list}, "),
                format!("GROUP BY {list} ORDER BY {list}"),
            )
        };
        self.read(|conn| {
            let n = cols.len();
            let rows = conn.query(
                &format!(
                    "SELECT {lead} COUNT(*), COUNT(*) FILTER (WHERE status <> 'ok'),
                            COUNT(*) FILTER (WHERE cache = 'hit'),
                            COALESCE(SUM(tokens_in), 0)::BIGINT,
                            COALESCE(SUM(tokens_out), 0)::BIGINT, COALESCE(SUM(cost_usd), 0)
                     FROM gateway_calls WHERE {cond} {group_by}"
                ),
                &refs(&args),
            )?;
            Ok(rows
                .iter()
                .map(|r| {
                    let mut g = serde_json::Map::new();
                    for (i, (name, _)) in cols.iter().enumerate() {
                        let v: Option<String> = r.get(i);
                        g.insert(
                            (*name).to_owned(),
                            v.map_or(serde_json::Value::Null, Into::into),
                        );
                    }
                    UsageRow {
                        group: g,
                        requests: r.get::<_, i64>(n) as u64,
                        errors: r.get::<_, i64>(n + 1) as u64,
                        cache_hits: r.get::<_, i64>(n + 2) as u64,
                        tokens_in: r.get::<_, i64>(n + 3) as u64,
                        tokens_out: r.get::<_, i64>(n + 4) as u64,
                        cost_usd: r.get(n + 5),
                    }
                })
                .filter(|r| r.requests > 0)
                .collect())
        })
    }

    fn spend_since(
        &self,
        column: Option<&'static str>,
        subject: &str,
        since: DateTime<Utc>,
    ) -> Result<f64> {
        self.read(|conn| spend(conn, column, subject, since))
    }

    fn reserve_budget(&self, hold: &BudgetHold) -> Result<std::result::Result<(), BudgetRefusal>> {
        let accounts = hold_accounts(&hold.accounts)?;
        // READ COMMITTED: the conditional UPDATE re-checks its condition on the latest row
        // after waiting for a concurrent reserver, so each account's check-and-add is one
        // atomic step on the server; accounts are taken in key order (no deadlock).
        let mut order: Vec<usize> = (0..hold.accounts.len()).collect();
        order.sort_by_key(|&i| hold.accounts[i].key());
        self.write_committed(|tx| {
            let mut added = Vec::new();
            for &i in &order {
                let a = &hold.accounts[i];
                let key: [&(dyn ToSql + Sync); 3] = [&a.budget, &a.subject, &a.window_start];
                let open = tx
                    .query_opt(
                        "SELECT 1 FROM budget_accounts
                         WHERE budget = $1 AND subject = $2 AND window_start = $3",
                        &key,
                    )?
                    .is_some();
                if !open {
                    let opening = spend(tx, a.column, &a.subject, a.window_start)?;
                    tx.execute(
                        "INSERT INTO budget_accounts (budget, subject, window_start, settled)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[&a.budget, &a.subject, &a.window_start, &opening],
                    )?;
                }
                let took = tx.query_opt(
                    "UPDATE budget_accounts SET reserved = reserved + $4::FLOAT8
                     WHERE budget = $1 AND subject = $2 AND window_start = $3
                       AND ($4::FLOAT8 <= 0 OR settled + reserved + $4::FLOAT8 <= $5::FLOAT8)
                     RETURNING settled",
                    &[
                        &a.budget,
                        &a.subject,
                        &a.window_start,
                        &hold.amount,
                        &a.limit_usd,
                    ],
                )?;
                if took.is_none() {
                    let settled: f64 = tx
                        .query_one(
                            "SELECT settled FROM budget_accounts
                             WHERE budget = $1 AND subject = $2 AND window_start = $3",
                            &key,
                        )?
                        .get(0);
                    // All or none: what this reservation added to earlier accounts goes back.
                    for &j in &added {
                        let b: &BudgetAccount = &hold.accounts[j];
                        tx.execute(
                            "UPDATE budget_accounts SET reserved = GREATEST(reserved - $4::FLOAT8, 0)
                             WHERE budget = $1 AND subject = $2 AND window_start = $3",
                            &[&b.budget, &b.subject, &b.window_start, &hold.amount],
                        )?;
                    }
                    return Ok(Err(BudgetRefusal {
                        account: i,
                        settled_usd: settled,
                    }));
                }
                added.push(i);
            }
            tx.execute(
                "INSERT INTO budget_holds (id, holder, amount, accounts, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &hold.id,
                    &hold.holder,
                    &hold.amount,
                    &accounts,
                    &hold.expires_at,
                ],
            )?;
            Ok(Ok(()))
        })
    }

    fn settle_budget(&self, id: &str, accounts: &[BudgetAccount], cost: f64) -> Result<()> {
        let mut sorted: Vec<&BudgetAccount> = accounts.iter().collect();
        sorted.sort_by_key(|a| a.key());
        self.write_committed(|tx| {
            let released: f64 = tx
                .query_opt(
                    "DELETE FROM budget_holds WHERE id = $1 RETURNING amount",
                    &[&id],
                )?
                .map_or(0.0, |r| r.get(0));
            for a in &sorted {
                tx.execute(
                    "UPDATE budget_accounts SET reserved = GREATEST(reserved - $4::FLOAT8, 0),
                            settled = settled + $5::FLOAT8
                     WHERE budget = $1 AND subject = $2 AND window_start = $3",
                    &[&a.budget, &a.subject, &a.window_start, &released, &cost],
                )?;
            }
            Ok(())
        })
    }

    fn expire_budget_holds(&self, now: DateTime<Utc>) -> Result<usize> {
        self.write_committed(|tx| {
            let expired = tx.query(
                "DELETE FROM budget_holds WHERE expires_at < $1 RETURNING amount, accounts",
                &[&now],
            )?;
            for r in &expired {
                let amount: f64 = r.get(0);
                let mut keys = parse_hold_accounts(r.get(1))?;
                keys.sort();
                for (budget, subject, window_start) in keys {
                    tx.execute(
                        "UPDATE budget_accounts SET reserved = GREATEST(reserved - $4::FLOAT8, 0)
                         WHERE budget = $1 AND subject = $2 AND window_start = $3",
                        &[&budget, &subject, &window_start, &amount],
                    )?;
                }
            }
            Ok(expired.len())
        })
    }

    fn cache_get(&self, key: &str, now: DateTime<Utc>) -> Result<Option<CacheEntry>> {
        // Found and fresh: its recency is bumped in the same statement, committed on its own
        // (no transaction around it: recency is best effort, and a miss writes nothing).
        self.read(|c| {
            Ok(c.query_opt(
                "UPDATE gateway_cache SET last_used = $3 WHERE key = $1 AND expires_at > $2
                     RETURNING key, route, value, expires_at",
                &[&key, &now, &Utc::now().timestamp_millis()],
            )?
            .map(|r| CacheEntry {
                key: r.get(0),
                route: r.get(1),
                value: r.get(2),
                expires_at: r.get(3),
            }))
        })
    }

    fn cache_put(&self, e: &CacheEntry, max_bytes: u64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO gateway_cache (key, route, value, bytes, expires_at, last_used)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (key) DO UPDATE SET route = excluded.route, value = excluded.value,
                    bytes = excluded.bytes, expires_at = excluded.expires_at,
                    last_used = excluded.last_used",
                &[
                    &e.key,
                    &e.route,
                    &e.value,
                    &(e.value.len() as i64),
                    &e.expires_at,
                    &Utc::now().timestamp_millis(),
                ],
            )?;
            tx.execute(
                "DELETE FROM gateway_cache WHERE expires_at <= $1",
                &[&Utc::now()],
            )?;
            // Least recently used first, until the total fits.
            tx.execute(
                "DELETE FROM gateway_cache WHERE key IN (
                     SELECT key FROM (
                         SELECT key, bytes,
                                SUM(bytes) OVER (ORDER BY last_used ASC, key ASC) AS upto,
                                SUM(bytes) OVER () AS total
                         FROM gateway_cache) x
                     WHERE x.total - x.upto + x.bytes > $1::BIGINT)",
                &[&(max_bytes as i64)],
            )?;
            Ok(())
        })
    }
}
