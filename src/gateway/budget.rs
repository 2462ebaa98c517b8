//! Spend limits. Each call reserves its worst-case cost (prompt estimate + `max_tokens` at the
//! model's price) against every budget that applies to it, atomically under one lock, before
//! the provider is called; the reservation is settled with the real cost afterwards. So the
//! money spent can exceed a limit only by what settled calls cost beyond their reservation —
//! never by the number of calls racing through a check, the race other gateways have.
//!
//! Settled spend is recovered from the call log at start (per window), so restarts do not reset
//! budgets. On a store shared by several replicas the accounts live in the store instead
//! ([`Shared`]): a reservation is one transaction of conditional updates there, so the limit
//! holds over every replica together; a reservation whose replica died before settling is
//! released when it expires. Bookkeeping only: no I/O except the loader or store it is given.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::gateway::{BudgetAccount, BudgetHold, GatewayStore};
use crate::store::StoreError;

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

/// Why a reservation was not made.
#[derive(Debug)]
pub enum Refused {
    /// A budget would be passed.
    Exceeded(Exceeded),
    /// The shared accounts could not be read (the call is refused, never let through).
    Store(StoreError),
}

/// Accounts kept in a store several replicas share.
pub struct Shared {
    /// Where the accounts live.
    pub store: Arc<dyn GatewayStore>,
    /// This replica (recorded with each reservation).
    pub holder: String,
    /// How long an unsettled reservation holds (longer than any call may take).
    pub hold_for: Duration,
}

/// Loads settled spend: (scope column, subject, window start) → USD.
pub type SpendLoader = dyn Fn(Option<&'static str>, &str, DateTime<Utc>) -> f64 + Send + Sync;

/// The ledger.
pub struct Budgets {
    budgets: Vec<BudgetConfig>,
    accounts: Mutex<HashMap<AccountKey, Account>>,
    loader: Box<SpendLoader>,
    shared: Option<Shared>,
}

/// An open reservation; settle it with [`Budgets::settle`].
#[derive(Debug, Default)]
#[must_use]
pub struct Reservation {
    accounts: Vec<AccountKey>,
    amount: f64,
    /// Its id and accounts in the shared store.
    shared: Option<(String, Vec<BudgetAccount>)>,
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
            shared: None,
        }
    }

    /// Keeps the accounts in a store shared with other replicas instead of this process.
    pub fn shared(mut self, shared: Shared) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Releases shared reservations whose replica died before settling them.
    pub fn expire_holds(&self) {
        if let Some(sh) = &self.shared {
            match sh.store.expire_budget_holds(Utc::now()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(reservations = n, "expired budget reservations released"),
                Err(e) => tracing::warn!(error = %e, "cannot release expired budget reservations"),
            }
        }
    }

    /// The budgets applying to `who` now: (budget index, subject, window start, reset).
    fn applying<'a>(
        &'a self,
        who: &'a Subjects,
        now: DateTime<Utc>,
    ) -> impl Iterator<
        Item = (
            usize,
            &'a BudgetConfig,
            &'a str,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
        ),
    > + 'a {
        self.budgets.iter().enumerate().filter_map(move |(i, b)| {
            let subject = who.of(b.scope)?;
            if b.id.as_deref().is_some_and(|id| id != subject) {
                return None;
            }
            let (start, resets_at) = b.window.bounds(now);
            Some((i, b, subject, start, resets_at))
        })
    }

    fn reserve_shared(
        &self,
        sh: &Shared,
        who: &Subjects,
        amount: f64,
    ) -> Result<Reservation, Refused> {
        let now = Utc::now();
        let mut resets = Vec::new();
        let accounts: Vec<BudgetAccount> = self
            .applying(who, now)
            .map(|(i, b, subject, start, resets_at)| {
                resets.push((b.scope, resets_at));
                BudgetAccount {
                    budget: format!("{i}:{:?}:{:?}", b.scope, b.window).to_lowercase(),
                    subject: subject.to_owned(),
                    window_start: start,
                    limit_usd: b.limit_usd,
                    column: b.scope.column(),
                }
            })
            .collect();
        if accounts.is_empty() || amount <= 0.0 {
            // A free call always passes (so a budget can fall back to a local model).
            return Ok(Reservation::default());
        }
        let id = uuid::Uuid::new_v4().to_string();
        let hold = BudgetHold {
            id: id.clone(),
            holder: sh.holder.clone(),
            amount,
            expires_at: now
                + chrono::Duration::from_std(sh.hold_for).unwrap_or(chrono::Duration::hours(1)),
            accounts,
        };
        match sh.store.reserve_budget(&hold).map_err(Refused::Store)? {
            Ok(()) => Ok(Reservation {
                accounts: Vec::new(),
                amount,
                shared: Some((id, hold.accounts)),
            }),
            Err(refusal) => {
                let a = &hold.accounts[refusal.account];
                Err(Refused::Exceeded(Exceeded {
                    scope: resets[refusal.account].0,
                    subject: a.subject.clone(),
                    limit_usd: a.limit_usd,
                    spent_usd: refusal.settled_usd,
                    resets_at: resets[refusal.account].1,
                }))
            }
        }
    }

    /// Whether any budget is configured.
    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }

    /// Reserves `amount` USD against every budget applying to `who`, or none if one refuses.
    pub fn reserve(&self, who: &Subjects, amount: f64) -> Result<Reservation, Refused> {
        if self.budgets.is_empty() {
            return Ok(Reservation::default());
        }
        if let Some(sh) = &self.shared {
            return self.reserve_shared(sh, who, amount);
        }
        let now = Utc::now();
        let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = Vec::new();
        for (i, b, subject, start, resets_at) in self.applying(who, now) {
            let key = (i, subject.to_owned(), start.timestamp());
            let acct = accounts.entry(key.clone()).or_insert_with(|| Account {
                settled: (self.loader)(b.scope.column(), subject, start),
                reserved: 0.0,
            });
            // A free call always passes (so a budget can fall back to a local model).
            if amount > 0.0 && acct.settled + acct.reserved + amount > b.limit_usd {
                return Err(Refused::Exceeded(Exceeded {
                    scope: b.scope,
                    subject: subject.to_owned(),
                    limit_usd: b.limit_usd,
                    spent_usd: acct.settled,
                    resets_at,
                }));
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
            shared: None,
        })
    }

    /// Replaces a reservation by the real cost.
    pub fn settle(&self, r: Reservation, cost: f64) {
        if let (Some(sh), Some((id, accounts))) = (&self.shared, &r.shared) {
            if let Err(e) = sh.store.settle_budget(id, accounts, cost) {
                // The reservation stays held until it expires: the spend is over-counted for
                // that long, never under-counted.
                tracing::error!(error = %e, reservation = %id, "budget reservation not settled");
            }
            return;
        }
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
        let Err(Refused::Exceeded(e)) = budgets.reserve(&who("k"), 0.05) else {
            panic!("exhausted")
        };
        assert!(e.resets_at.is_some());
        assert!(budgets.reserve(&who("k"), 0.0).is_ok(), "free calls pass");
        assert!(budgets.reserve(&who("other"), 0.5).is_ok());
    }

    #[test]
    fn budgets_kept_in_a_shared_store_hold_over_replicas_and_dead_holds_expire() {
        let dir = tempfile::tempdir().expect("tmp");
        let store: Arc<dyn GatewayStore> = Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("db.sqlite3")).expect("store"),
        );
        let config = vec![BudgetConfig {
            scope: BudgetScope::Key,
            id: None,
            window: Window::Day,
            limit_usd: 1.0,
        }];
        // Two replicas' ledgers over one store (their own memory would allow 1 USD each).
        let replica = |name: &str, hold_for: Duration| {
            Arc::new(
                Budgets::new(config.clone(), Box::new(|_, _, _| 0.0)).shared(Shared {
                    store: store.clone(),
                    holder: name.into(),
                    hold_for,
                }),
            )
        };
        let (a, b) = (
            replica("a", Duration::from_secs(60)),
            replica("b", Duration::from_secs(60)),
        );
        let spent = Arc::new(Mutex::new(0.0f64));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (l, spent) = (
                    if i % 2 == 0 { a.clone() } else { b.clone() },
                    spent.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..40 {
                        if let Ok(r) = l.reserve(&who("k"), 0.01) {
                            *spent.lock().expect("lock") += 0.009;
                            l.settle(r, 0.009);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let total = *spent.lock().expect("lock");
        assert!(total <= 1.0 + 1e-9, "spent {total} over two replicas");
        assert!(total > 0.98, "stopped early at {total}");
        let Err(Refused::Exceeded(e)) = b.reserve(&who("k"), 0.05) else {
            panic!("exhausted for every replica")
        };
        assert!((e.spent_usd - total).abs() < 1e-6, "{e:?}");
        // A replica dies holding a reservation: the money is held until the hold expires.
        let dying = replica("dying", Duration::from_millis(1));
        let held = dying.reserve(&who("j"), 0.7).expect("reserve");
        std::mem::forget(held);
        assert!(
            a.reserve(&who("j"), 0.5).is_err(),
            "held by the dead replica"
        );
        std::thread::sleep(Duration::from_millis(5));
        a.expire_holds();
        let r = a.reserve(&who("j"), 0.5).expect("released");
        a.settle(r, 0.5);
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
