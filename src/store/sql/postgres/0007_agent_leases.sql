-- Where each replica answers (other replicas forward an agent's requests there) and keeps its
-- data (a process that restarts on the same directory forgets its dead predecessor at once),
-- and which replica holds each active agent. A lease is valid while its holder's heartbeat is fresh;
-- `token` names one activation, so an evicted actor never releases a later one's lease.
ALTER TABLE replicas ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE replicas ADD COLUMN home TEXT NOT NULL DEFAULT '';

CREATE TABLE agent_leases (
    tenant_id TEXT NOT NULL,
    agent_id  TEXT NOT NULL,
    holder    TEXT NOT NULL,
    token     TEXT NOT NULL,
    since     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, agent_id)
);
CREATE INDEX agent_leases_holder ON agent_leases (holder);
