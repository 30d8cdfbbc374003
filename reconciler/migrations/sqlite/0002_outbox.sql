-- Events: written in the same transaction as the state change they describe (the outbox
-- pattern), then relayed to Kafka and webhooks. `event` is the whole CloudEvents 1.0 JSON.
-- `sequence` is per tenant, gap-free, assigned inside that transaction.
CREATE TABLE outbox (
    event_id     VARCHAR(64) PRIMARY KEY,
    tenant_id    VARCHAR(64) NOT NULL,
    sequence     BIGINT NOT NULL,
    event_type   VARCHAR(64) NOT NULL,
    event        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, sequence)
);
CREATE INDEX outbox_pending ON outbox (published_at, created_at);

-- Entries recorded together (one reconcile) keep the order they were recorded in.
ALTER TABLE tenant_audit ADD COLUMN entry_order INTEGER NOT NULL DEFAULT 0;
