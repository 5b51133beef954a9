-- kling-mcp job store on PostgreSQL, version 1.
-- Every job is one row: the full record as JSON plus the columns queries filter and sort on.
CREATE TABLE kling_jobs (
    job_id        text PRIMARY KEY,
    version       integer NOT NULL,
    status        text NOT NULL,
    created_at    double precision NOT NULL,
    fingerprint   text NOT NULL DEFAULT '',
    record        jsonb NOT NULL,
    lease_owner   text,
    lease_expires double precision  -- epoch seconds on the database's clock
);
CREATE INDEX kling_jobs_newest ON kling_jobs (created_at DESC);
CREATE INDEX kling_jobs_status_newest ON kling_jobs (status, created_at DESC);
CREATE INDEX kling_jobs_unfinished ON kling_jobs (created_at)
    WHERE status NOT IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX kling_jobs_fingerprint ON kling_jobs (fingerprint, created_at DESC) WHERE fingerprint <> '';

-- An idempotency key names one job and the request it was first used with.
CREATE TABLE kling_idempotency_keys (
    key         text PRIMARY KEY,
    job_id      text NOT NULL REFERENCES kling_jobs (job_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    fingerprint jsonb NOT NULL
);

-- The spend ledger: one entry per job, on the day it was submitted.
CREATE TABLE kling_ledger (
    job_id  text PRIMARY KEY,
    day     text NOT NULL,
    usd     double precision NOT NULL,
    basis   text NOT NULL,
    settled boolean NOT NULL DEFAULT false
);
CREATE INDEX kling_ledger_day ON kling_ledger (day);

-- Small adapter state (upload caches), with an optional expiry.
CREATE TABLE kling_kv (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    expires_at double precision  -- epoch seconds on the database's clock
);
