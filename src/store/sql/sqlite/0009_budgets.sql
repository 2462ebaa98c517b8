-- Budget accounts and open reservations (PostgreSQL migration 0005): spend limits counted in
-- the store, so that every process sharing it reserves against the same sums.
CREATE TABLE budget_accounts (
    budget       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    window_start TEXT NOT NULL,
    settled      REAL NOT NULL DEFAULT 0,
    reserved     REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, subject, window_start)
);
CREATE TABLE budget_holds (
    id         TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    amount     REAL NOT NULL,
    accounts   TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX budget_holds_expiry ON budget_holds (expires_at);
