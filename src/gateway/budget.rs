//! Spend limits. Each call reserves its worst-case cost (prompt estimate + `max_tokens` at the
//! model's price) against every budget that applies to it, atomically under one lock, before
//! the provider is called; the reservation is settled with the real cost afterwards. So the
//! money spent can exceed a limit only by what settled calls cost beyond their reservation —
//! never by the number of calls racing through a check, the race other gateways have.
//!
//! Settled spend is recovered from the call log at start (per window), so restarts do not reset
//! budgets. Pure bookkeeping: no I/O except the loader it is given.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// What a budget is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// Per API key (`demo` without keys).
    Key,
    /// Per end user (`user` field or `X-Groundwork-User`).
    User,
    /// Per agent (`X-Groundwork-Agent`).
    Agent,
    /// Per route.
    Route,
    /// Everything together.
    Global,
}

impl BudgetScope {
    /// The log column holding this scope's subject.
    pub fn column(self) -> Option<&'static str> {
        match self {
            BudgetScope::Key => Some("key_id"),
            BudgetScope::User => Some("user_id"),
            BudgetScope::Agent => Some("agent_id"),
            BudgetScope::Route => Some("route"),
            BudgetScope::Global => None,
        }
    }
}

/// The period a budget covers (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// A calendar day.
    Day,
    /// A calendar month.
    Month,
    /// For ever.
    Total,
}

impl Window {
    /// Start of the window holding `now`, and when the next one starts.
    pub fn bounds(self, now: DateTime<Utc>) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let day = now.date_naive();
        let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
        match self {
            Window::Day => (at(day), day.succ_opt().map(at)),
            Window::Month => {
                let first = day.with_day(1).unwrap_or(day);
                let next = if day.month() == 12 {
                    NaiveDate::from_ymd_opt(day.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(day.year(), day.month() + 1, 1)
                };
                (at(first), next.map(at))
            }
            Window::Total => (DateTime::<Utc>::UNIX_EPOCH, None),
        }
    }
}

/// `[[gateway.budgets]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// What it is counted per.
    pub scope: BudgetScope,
    /// Only this key/user/agent/route; absent: each one separately.
    #[serde(default)]
    pub id: Option<String>,
    /// Period.
    pub window: Window,
    /// Most USD per subject and window.
    pub limit_usd: f64,
}

/// Who is calling, for budgets and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Subjects {
    /// API key id (`demo` without keys).
    pub key: String,
    /// End user.
    pub user: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// Route name.
    pub route: String,
}

impl Subjects {
    fn of(&self, scope: BudgetScope) -> Option<&str> {
        match scope {
            BudgetScope::Key => Some(&self.key),
            BudgetScope::User => self.user.as_deref(),
            BudgetScope::Agent => self.agent.as_deref(),
            BudgetScope::Route => Some(&self.route),
            BudgetScope::Global => Some("*"),
        }
    }
}

/// A refused reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    /// The budget's scope.
    pub scope: BudgetScope,
    /// Its subject.
    pub subject: String,
    /// Its limit, USD.
    pub limit_usd: f64,
    /// Settled spend in the window, USD.
    pub spent_usd: f64,
    /// When the window resets (`None`: never).
    pub resets_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Account {
    settled: f64,
    reserved: f64,
}

type AccountKey = (usize, String, i64);

/// Loads settled spend: (scope column, subject, window start) → USD.
pub type SpendLoader = dyn Fn(Option<&'static str>, &str, DateTime<Utc>) -> f64 + Send + Sync;

/// The ledger.
pub struct Budgets {
    budgets: Vec<BudgetConfig>,
    accounts: Mutex<HashMap<AccountKey, Account>>,
    loader: Box<SpendLoader>,
}

/// An open reservation; settle it with [`Budgets::settle`].
#[derive(Debug, Default)]
#[must_use]
pub struct Reservation {
    accounts: Vec<AccountKey>,
    amount: f64,
}

impl Reservation {
    /// The amount reserved, USD.
    pub fn amount(&self) -> f64 {
        self.amount
    }
}

impl Budgets {
    /// A ledger of `budgets` whose past spend `loader` reads.
    pub fn new(budgets: Vec<BudgetConfig>, loader: Box<SpendLoader>) -> Self {
        Self {
            budgets,
            accounts: Mutex::new(HashMap::new()),
            loader,
        }
    }

    /// Whether any budget is configured.
    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }

    /// Reserves `amount` USD against every budget applying to `who`, or none if one refuses.
    pub fn reserve(&self, who: &Subjects, amount: f64) -> Result<Reservation, Exceeded> {
        if self.budgets.is_empty() {
            return Ok(Reservation::default());
        }
        let now = Utc::now();
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = Vec::new();
        for (i, b) in self.budgets.iter().enumerate() {
            let Some(subject) = who.of(b.scope) else {
                continue;
            };
            if b.id.as_deref().is_some_and(|id| id != subject) {
                continue;
            }
            let (start, resets_at) = b.window.bounds(now);
            let key = (i, subject.to_owned(), start.timestamp());
            let acct = accounts.entry(key.clone()).or_insert_with(|| Account {
                settled: (self.loader)(b.scope.column(), subject, start),
                reserved: 0.0,
            });
            // A free call always passes (so a budget can fall back to a local model).
            if amount > 0.0 && acct.settled + acct.reserved + amount > b.limit_usd {
                return Err(Exceeded {
                    scope: b.scope,
                    subject: subject.to_owned(),
                    limit_usd: b.limit_usd,
                    spent_usd: acct.settled,
                    resets_at,
                });
            }
            keys.push(key);
        }
        for k in &keys {
            if let Some(a) = accounts.get_mut(k) {
                a.reserved += amount;
            }
        }
        Ok(Reservation {
            accounts: keys,
            amount,
        })
    }

    /// Replaces a reservation by the real cost.
    pub fn settle(&self, r: Reservation, cost: f64) {
        if r.accounts.is_empty() {
            return;
        }
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        for k in &r.accounts {
            if let Some(a) = accounts.get_mut(k) {
                a.reserved = (a.reserved - r.amount).max(0.0);
                a.settled += cost;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn who(key: &str) -> Subjects {
        Subjects {
            key: key.into(),
            route: "frontier".into(),
            ..Subjects::default()
        }
    }

    #[test]
    fn concurrent_reservations_never_overspend() {
        let budgets = Arc::new(Budgets::new(
            vec![BudgetConfig {
                scope: BudgetScope::Key,
                id: None,
                window: Window::Day,
                limit_usd: 1.0,
            }],
            Box::new(|_, _, _| 0.25),
        ));
        let spent = Arc::new(Mutex::new(0.0f64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, spent) = (budgets.clone(), spent.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if let Ok(r) = b.reserve(&who("k"), 0.01) {
                            *spent.lock().expect("lock") += 0.009;
                            b.settle(r, 0.009);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let total = 0.25 + *spent.lock().expect("lock");
        assert!(total <= 1.0 + 1e-9, "spent {total}");
        assert!(total > 0.98, "stopped early at {total}");
        let e = budgets.reserve(&who("k"), 0.05).expect_err("exhausted");
        assert!(e.resets_at.is_some());
        assert!(budgets.reserve(&who("k"), 0.0).is_ok(), "free calls pass");
        assert!(budgets.reserve(&who("other"), 0.5).is_ok());
    }

    #[test]
    fn windows_reset_at_utc_boundaries() {
        let t = Utc
            .with_ymd_and_hms(2026, 12, 31, 15, 0, 0)
            .single()
            .expect("date");
        let (s, r) = Window::Month.bounds(t);
        assert_eq!(s.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(r.expect("reset").to_rfc3339(), "2027-01-01T00:00:00+00:00");
        let (s, r) = Window::Day.bounds(t);
        assert_eq!(s.to_rfc3339(), "2026-12-31T00:00:00+00:00");
        assert_eq!(r.expect("reset").to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }
}
