//! [`GatewayStore`] on SQLite.

use chrono::{DateTime, Utc};
use rusqlite::{params, params_from_iter, OptionalExtension, Row};

use super::SqliteStore;
use crate::store::gateway::{
    hold_accounts, parse_hold_accounts, BudgetAccount, BudgetHold, BudgetRefusal, CacheEntry,
    CallLog, GatewayStore, LogQuery, UsageGroup, UsageRow,
};
use crate::store::{Page, Result};

const COLS: &str = "id, tenant_id, ts, kind, key_id, user_id, agent_id, route, provider, model, \
    status, error, attempts, latency_ms, ttft_ms, tokens_in, tokens_out, cost_usd, cache, \
    guardrails, stream, request, response";

fn json_col(r: &Row<'_>, i: usize) -> rusqlite::Result<serde_json::Value> {
    let s: String = r.get(i)?;
    Ok(serde_json::from_str(&s).unwrap_or(serde_json::Value::Null))
}

fn row(r: &Row<'_>) -> rusqlite::Result<CallLog> {
    let request: Option<String> = r.get(21)?;
    Ok(CallLog {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        ts: r.get(2)?,
        kind: r.get(3)?,
        key_id: r.get(4)?,
        user_id: r.get(5)?,
        agent_id: r.get(6)?,
        route: r.get(7)?,
        provider: r.get(8)?,
        model: r.get(9)?,
        status: r.get(10)?,
        error: r.get(11)?,
        attempts: json_col(r, 12)?,
        latency_ms: r.get(13)?,
        ttft_ms: r.get(14)?,
        tokens_in: r.get(15)?,
        tokens_out: r.get(16)?,
        cost_usd: r.get(17)?,
        cache: r.get(18)?,
        guardrails: json_col(r, 19)?,
        stream: r.get(20)?,
        request: request.and_then(|s| serde_json::from_str(&s).ok()),
        response: r.get(22)?,
    })
}

/// A time as rusqlite stores `DateTime<Utc>` (so text comparisons order correctly).
fn sql_time(t: DateTime<Utc>) -> String {
    use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
    match t.to_sql() {
        Ok(ToSqlOutput::Owned(rusqlite::types::Value::Text(s))) => s,
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(b))) => String::from_utf8_lossy(b).into_owned(),
        _ => t.format("%F %T%.f%:z").to_string(),
    }
}

/// `WHERE` clause and its parameters for a log query.
fn filter(q: &LogQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as V;
    let mut sql = String::from("tenant_id = ?");
    let mut args = vec![V::Text(q.tenant_id.clone())];
    for (col, v) in [
        ("key_id", &q.key_id),
        ("user_id", &q.user_id),
        ("agent_id", &q.agent_id),
        ("route", &q.route),
        ("model", &q.model),
        ("status", &q.status),
    ] {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {col} = ?"));
            args.push(V::Text(v.clone()));
        }
    }
    if let Some(s) = q.since {
        sql.push_str(" AND ts >= ?");
        args.push(V::Text(sql_time(s)));
    }
    if let Some(u) = q.until {
        sql.push_str(" AND ts < ?");
        args.push(V::Text(sql_time(u)));
    }
    (sql, args)
}

/// Settled spend since `since` where `column` equals `subject` (every call when `None`).
fn spend(
    conn: &rusqlite::Connection,
    column: Option<&'static str>,
    subject: &str,
    since: DateTime<Utc>,
) -> Result<f64> {
    let v: Option<f64> = match column {
        Some(col) => conn.query_row(
            &format!("SELECT SUM(cost_usd) FROM gateway_calls WHERE {col} = ?1 AND ts >= ?2"),
            params![subject, since],
            |r| r.get(0),
        )?,
        None => conn.query_row(
            "SELECT SUM(cost_usd) FROM gateway_calls WHERE ts >= ?1",
            params![since],
            |r| r.get(0),
        )?,
    };
    Ok(v.unwrap_or(0.0))
}

impl GatewayStore for SqliteStore {
    fn insert_calls(&self, calls: &[CallLog]) -> Result<()> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO gateway_calls ({COLS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
                  ?18, ?19, ?20, ?21, ?22, ?23)"
            ))?;
            for c in calls {
                stmt.execute(params![
                    c.id,
                    c.tenant_id,
                    c.ts,
                    c.kind,
                    c.key_id,
                    c.user_id,
                    c.agent_id,
                    c.route,
                    c.provider,
                    c.model,
                    c.status,
                    c.error,
                    c.attempts.to_string(),
                    c.latency_ms,
                    c.ttft_ms,
                    c.tokens_in,
                    c.tokens_out,
                    c.cost_usd,
                    c.cache,
                    c.guardrails.to_string(),
                    c.stream,
                    c.request.as_ref().map(|r| r.to_string()),
                    c.response,
                ])?;
            }
            Ok(())
        })
    }

    fn calls(&self, q: &LogQuery) -> Result<Page<CallLog>> {
        let (cond, mut args) = filter(q);
        self.read(|conn| {
            let total: u64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM gateway_calls WHERE {cond}"),
                params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            args.push(rusqlite::types::Value::Integer(q.limit as i64));
            args.push(rusqlite::types::Value::Integer(q.offset as i64));
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLS} FROM gateway_calls WHERE {cond} ORDER BY ts DESC, id DESC \
                 LIMIT ? OFFSET ?"
            ))?;
            let items = stmt
                .query_map(params_from_iter(args.iter()), row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
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
                UsageGroup::Day => ("day", "substr(ts, 1, 10)"),
                UsageGroup::Model => ("model", "model"),
                UsageGroup::Key => ("key", "key_id"),
                UsageGroup::User => ("user", "user_id"),
                UsageGroup::Agent => ("agent", "agent_id"),
                UsageGroup::Route => ("route", "route"),
            })
            .collect();
        let select: Vec<String> = cols.iter().map(|(_, e)| e.to_string()).collect();
        let group_by = if select.is_empty() {
            String::new()
        } else {
            format!(
                "GROUP BY {} ORDER BY {}",
                select.join(", "),
                select.join(", ")
            )
        };
        let lead = if select.is_empty() {
            String::new()
        } else {
            format!("{}, ", select.join(", "))
        };
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {lead} COUNT(*), SUM(status != 'ok'), SUM(cache = 'hit'), \
                 SUM(tokens_in), SUM(tokens_out), SUM(cost_usd) \
                 FROM gateway_calls WHERE {cond} {group_by}"
            ))?;
            let n = cols.len();
            let rows = stmt
                .query_map(params_from_iter(args.iter()), |r| {
                    let mut g = serde_json::Map::new();
                    for (i, (name, _)) in cols.iter().enumerate() {
                        let v: Option<String> = r.get(i)?;
                        g.insert(
                            (*name).to_owned(),
                            v.map_or(serde_json::Value::Null, Into::into),
                        );
                    }
                    Ok(UsageRow {
                        group: g,
                        requests: r.get::<_, i64>(n)? as u64,
                        errors: r.get::<_, Option<i64>>(n + 1)?.unwrap_or(0) as u64,
                        cache_hits: r.get::<_, Option<i64>>(n + 2)?.unwrap_or(0) as u64,
                        tokens_in: r.get::<_, Option<i64>>(n + 3)?.unwrap_or(0) as u64,
                        tokens_out: r.get::<_, Option<i64>>(n + 4)?.unwrap_or(0) as u64,
                        cost_usd: r.get::<_, Option<f64>>(n + 5)?.unwrap_or(0.0),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter(|r| r.requests > 0).collect())
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
        // One writer at a time on this file: read, check and add in one transaction.
        self.write(|tx| {
            for (i, a) in hold.accounts.iter().enumerate() {
                let row: Option<(f64, f64)> = tx
                    .prepare_cached(
                        "SELECT settled, reserved FROM budget_accounts
                         WHERE budget = ?1 AND subject = ?2 AND window_start = ?3",
                    )?
                    .query_row(params![a.budget, a.subject, a.window_start], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                let (settled, reserved) = match row {
                    Some(r) => r,
                    None => {
                        let opening = spend(tx, a.column, &a.subject, a.window_start)?;
                        tx.execute(
                            "INSERT INTO budget_accounts (budget, subject, window_start, settled)
                             VALUES (?1, ?2, ?3, ?4)",
                            params![a.budget, a.subject, a.window_start, opening],
                        )?;
                        (opening, 0.0)
                    }
                };
                if hold.amount > 0.0 && settled + reserved + hold.amount > a.limit_usd {
                    return Ok(Err(BudgetRefusal {
                        account: i,
                        settled_usd: settled,
                    }));
                }
            }
            for a in &hold.accounts {
                tx.prepare_cached(
                    "UPDATE budget_accounts SET reserved = reserved + ?4
                     WHERE budget = ?1 AND subject = ?2 AND window_start = ?3",
                )?
                .execute(params![
                    a.budget,
                    a.subject,
                    a.window_start,
                    hold.amount
                ])?;
            }
            tx.prepare_cached(
                "INSERT INTO budget_holds (id, holder, amount, accounts, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                hold.id,
                hold.holder,
                hold.amount,
                accounts,
                hold.expires_at
            ])?;
            Ok(Ok(()))
        })
    }

    fn settle_budget(&self, id: &str, accounts: &[BudgetAccount], cost: f64) -> Result<()> {
        self.write(|tx| {
            let released: f64 = tx
                .prepare_cached("DELETE FROM budget_holds WHERE id = ?1 RETURNING amount")?
                .query_row([id], |r| r.get(0))
                .optional()?
                .unwrap_or(0.0);
            for a in accounts {
                tx.prepare_cached(
                    "UPDATE budget_accounts SET reserved = MAX(reserved - ?4, 0),
                            settled = settled + ?5
                     WHERE budget = ?1 AND subject = ?2 AND window_start = ?3",
                )?
                .execute(params![
                    a.budget,
                    a.subject,
                    a.window_start,
                    released,
                    cost
                ])?;
            }
            Ok(())
        })
    }

    fn expire_budget_holds(&self, now: DateTime<Utc>) -> Result<usize> {
        self.write(|tx| {
            let expired: Vec<(f64, String)> = tx
                .prepare(
                    "DELETE FROM budget_holds WHERE expires_at < ?1 RETURNING amount, accounts",
                )?
                .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (amount, raw) in &expired {
                for (budget, subject, window_start) in parse_hold_accounts(raw)? {
                    tx.execute(
                        "UPDATE budget_accounts SET reserved = MAX(reserved - ?4, 0)
                         WHERE budget = ?1 AND subject = ?2 AND window_start = ?3",
                        params![budget, subject, window_start, amount],
                    )?;
                }
            }
            Ok(expired.len())
        })
    }

    fn cache_get(&self, key: &str, now: DateTime<Utc>) -> Result<Option<CacheEntry>> {
        let entry = self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT key, route, value, expires_at FROM gateway_cache WHERE key = ?1",
                    params![key],
                    |r| {
                        Ok(CacheEntry {
                            key: r.get(0)?,
                            route: r.get(1)?,
                            value: r.get(2)?,
                            expires_at: r.get(3)?,
                        })
                    },
                )
                .optional()?)
        })?;
        match entry {
            Some(e) if e.expires_at > now => {
                // Recency for eviction; losing this update to a race only ages the entry.
                self.write(|tx| {
                    tx.execute(
                        "UPDATE gateway_cache SET last_used = ?2 WHERE key = ?1",
                        params![key, Utc::now().timestamp_millis()],
                    )?;
                    Ok(())
                })?;
                Ok(Some(e))
            }
            _ => Ok(None),
        }
    }

    fn cache_put(&self, e: &CacheEntry, max_bytes: u64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO gateway_cache (key, route, value, bytes, expires_at, last_used) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    e.key,
                    e.route,
                    e.value,
                    e.value.len() as i64,
                    e.expires_at,
                    Utc::now().timestamp_millis()
                ],
            )?;
            tx.execute(
                "DELETE FROM gateway_cache WHERE expires_at <= ?1",
                params![Utc::now()],
            )?;
            let total: i64 =
                tx.query_row("SELECT COALESCE(SUM(bytes), 0) FROM gateway_cache", [], |r| {
                    r.get(0)
                })?;
            let mut excess = total - max_bytes as i64;
            if excess > 0 {
                // Least recently used first, until the total fits.
                let mut stmt = tx.prepare(
                    "SELECT key, bytes FROM gateway_cache ORDER BY last_used ASC, key ASC",
                )?;
                let mut victims = Vec::new();
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    if excess <= 0 {
                        break;
                    }
                    victims.push(r.get::<_, String>(0)?);
                    excess -= r.get::<_, i64>(1)?;
                }
                drop(rows);
                for k in victims {
                    tx.execute("DELETE FROM gateway_cache WHERE key = ?1", params![k])?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn the_cache_expires_and_stays_within_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("db.sqlite3")).expect("store");
        let now = Utc::now();
        let entry = |k: &str, ttl: i64| CacheEntry {
            key: k.into(),
            route: "fast".into(),
            value: "x".repeat(100),
            expires_at: now + Duration::seconds(ttl),
        };
        // Recency is kept in milliseconds: space the operations so each has its own.
        let tick = || std::thread::sleep(std::time::Duration::from_millis(3));
        store.cache_put(&entry("a", 60), 250).expect("put");
        tick();
        store.cache_put(&entry("b", 60), 250).expect("put");
        tick();
        assert!(store.cache_get("a", now).expect("get").is_some());
        tick();
        store.cache_put(&entry("c", 60), 250).expect("put");
        // b was used least recently.
        assert!(store.cache_get("b", now).expect("get").is_none());
        assert!(store.cache_get("a", now).expect("get").is_some());
        assert!(store.cache_get("c", now).expect("get").is_some());
        store.cache_put(&entry("d", -1), 10_000).expect("put");
        assert!(store.cache_get("d", now).expect("get").is_none(), "expired");
    }
}
