-- Usage reports (POST /billing/usage), idempotent on the client's key: the same key with the same
-- report answers the first record again; with a different report it is refused.
CREATE TABLE usage_records (
    record_id       VARCHAR(64) PRIMARY KEY,
    idempotency_key VARCHAR(255) NOT NULL UNIQUE,
    request_sha256  VARCHAR(64) NOT NULL,
    tenant_id       VARCHAR(64) NOT NULL,
    env             VARCHAR(32) NOT NULL,
    resource        VARCHAR(64) NOT NULL,
    amount          REAL NOT NULL,
    occurred_at     VARCHAR(40) NOT NULL,
    reported_by     TEXT NOT NULL,
    request_id      VARCHAR(128) NOT NULL,
    received_at     BIGINT NOT NULL
);
CREATE INDEX usage_records_tenant ON usage_records (tenant_id, occurred_at);
