-- Lifecycle jobs: the commit they converge and why they failed.
ALTER TABLE tenant_jobs ADD COLUMN commit_sha VARCHAR(64);
ALTER TABLE tenant_jobs ADD COLUMN error TEXT;
CREATE INDEX tenant_jobs_created ON tenant_jobs (created_at);

-- Webhook deliveries: one row per (webhook, event), retried with backoff until delivered or
-- dead-lettered after the webhook's maximum attempts; an operator can requeue a dead one.
CREATE TABLE webhook_deliveries (
    delivery_id     VARCHAR(64) PRIMARY KEY,
    webhook_id      VARCHAR(64) NOT NULL,
    event_id        VARCHAR(64) NOT NULL,
    tenant_id       VARCHAR(64) NOT NULL,
    state           VARCHAR(16) NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    BIGINT,
    created_at      BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
-- Which outbox events have been fanned out to webhook deliveries.
ALTER TABLE outbox ADD COLUMN fanned_out INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_fan_out ON outbox (fanned_out, created_at);
