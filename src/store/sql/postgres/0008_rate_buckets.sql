-- Rate-limit buckets shared by the replicas (per-process memory on SQLite, which has one
-- process): `level` is what is left, as of `at`; NULL until first used (a full bucket).
CREATE TABLE rate_buckets (
    key   TEXT PRIMARY KEY,
    level DOUBLE PRECISION,
    at    DOUBLE PRECISION NOT NULL DEFAULT 0
);
