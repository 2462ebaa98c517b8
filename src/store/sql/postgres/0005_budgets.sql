-- Budget accounts and open reservations (SQLite migration 0009): spend limits counted in the
-- store, so that every replica reserves against the same sums.
CREATE TABLE budget_accounts (
    budget       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    settled      DOUBLE PRECISION NOT NULL DEFAULT 0,
    reserved     DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, subject, window_start)
);
CREATE TABLE budget_holds (
    id         TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    amount     DOUBLE PRECISION NOT NULL,
    accounts   TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX budget_holds_expiry ON budget_holds (expires_at);
