-- Tenancy state store, PostgreSQL. Tables after seed 002 (tenants, environments, tenant_audit,
-- tenant_jobs, tenant_webhooks) plus reconcile status and policy decisions.
-- Timestamps are milliseconds since the Unix epoch (the same in both backends).

CREATE TABLE tenants (
    tenant_id       VARCHAR(64) PRIMARY KEY,
    organization_id VARCHAR(64) NOT NULL,
    profile         VARCHAR(32) NOT NULL,
    state           VARCHAR(32) NOT NULL,
    region          VARCHAR(64) NOT NULL,
    plan            VARCHAR(64) NOT NULL,
    quotas          JSONB NOT NULL,
    policies        JSONB NOT NULL,
    billing         JSONB NOT NULL,
    manifest        JSONB NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    version         BIGINT NOT NULL
);
CREATE INDEX tenants_organization ON tenants (organization_id);
CREATE INDEX tenants_state ON tenants (state);
CREATE INDEX tenants_region ON tenants (region);

CREATE TABLE environments (
    env_id          VARCHAR(128) PRIMARY KEY,
    tenant_id       VARCHAR(64) NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    name            VARCHAR(32) NOT NULL,
    region          VARCHAR(64) NOT NULL,
    isolation_level VARCHAR(32) NOT NULL,
    quotas          JSONB NOT NULL,
    retention_days  INTEGER,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE tenant_audit (
    audit_id       VARCHAR(64) PRIMARY KEY,
    tenant_id      VARCHAR(64) NOT NULL,
    event_type     VARCHAR(64) NOT NULL,
    actor          TEXT NOT NULL,
    target         TEXT NOT NULL,
    outcome        VARCHAR(32) NOT NULL,
    commit_sha     VARCHAR(64),
    payload        JSONB NOT NULL,
    correlation_id VARCHAR(64) NOT NULL,
    occurred_at    BIGINT NOT NULL
);
CREATE INDEX tenant_audit_tenant ON tenant_audit (tenant_id, occurred_at);
CREATE INDEX tenant_audit_type ON tenant_audit (event_type, occurred_at);

CREATE TABLE tenant_jobs (
    job_id     VARCHAR(64) PRIMARY KEY,
    tenant_id  VARCHAR(64) NOT NULL,
    action     VARCHAR(64) NOT NULL,
    state      VARCHAR(32) NOT NULL,
    progress   DOUBLE PRECISION NOT NULL,
    steps      JSONB NOT NULL,
    logs       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tenant_jobs_tenant_state ON tenant_jobs (tenant_id, state);

CREATE TABLE tenant_webhooks (
    webhook_id   VARCHAR(64) PRIMARY KEY,
    tenant_id    VARCHAR(64) NOT NULL,
    url          TEXT NOT NULL,
    events       JSONB NOT NULL,
    secret       TEXT NOT NULL,
    retry_policy JSONB NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX tenant_webhooks_tenant ON tenant_webhooks (tenant_id);

CREATE TABLE reconcile_status (
    tenant_id             VARCHAR(64) PRIMARY KEY,
    status                VARCHAR(32) NOT NULL,
    last_applied_commit   VARCHAR(64),
    last_attempted_commit VARCHAR(64),
    blocked_reason        TEXT,
    error                 TEXT,
    updated_at            BIGINT NOT NULL
);

CREATE TABLE policy_decisions (
    decision_id VARCHAR(64) PRIMARY KEY,
    tenant_id   VARCHAR(64) NOT NULL,
    commit_sha  VARCHAR(64) NOT NULL,
    operation   VARCHAR(32) NOT NULL,
    policy      VARCHAR(64) NOT NULL,
    digest      VARCHAR(64) NOT NULL,
    mode        VARCHAR(16) NOT NULL,
    blocks      BOOLEAN NOT NULL,
    verdicts    JSONB NOT NULL,
    failure     TEXT,
    decided_at  BIGINT NOT NULL
);
CREATE INDEX policy_decisions_tenant ON policy_decisions (tenant_id, decided_at);
CREATE INDEX policy_decisions_commit ON policy_decisions (commit_sha);
