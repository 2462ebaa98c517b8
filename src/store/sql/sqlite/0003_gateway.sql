-- Every model call through the gateway; also the record of settled spend.
CREATE TABLE gateway_calls (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    ts          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    user_id     TEXT,
    agent_id    TEXT,
    route       TEXT NOT NULL,
    provider    TEXT,
    model       TEXT,
    status      TEXT NOT NULL,
    error       TEXT,
    attempts    TEXT NOT NULL,
    latency_ms  REAL NOT NULL,
    ttft_ms     REAL,
    tokens_in   INTEGER NOT NULL,
    tokens_out  INTEGER NOT NULL,
    cost_usd    REAL NOT NULL,
    cache       TEXT NOT NULL,
    guardrails  TEXT NOT NULL,
    stream      INTEGER NOT NULL,
    request     TEXT,
    response    TEXT
);
CREATE INDEX gateway_calls_tenant_ts ON gateway_calls (tenant_id, ts);
CREATE INDEX gateway_calls_key_ts ON gateway_calls (key_id, ts);

-- Answers by hash of the canonical request.
CREATE TABLE gateway_cache (
    key         TEXT PRIMARY KEY,
    route       TEXT NOT NULL,
    value       TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    expires_at  TEXT NOT NULL,
    last_used   INTEGER NOT NULL
);
CREATE INDEX gateway_cache_lru ON gateway_cache (last_used);
