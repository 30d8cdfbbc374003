-- What each pass did to each tenant at each commit: the record a commit's git note is rendered
-- from (so every commit an outcome names gets its note, even after a crash between recording
-- the outcome and writing the note). A pass that finds nothing new for a tenant (same outcome
-- and reason, no change made) adds no row.
CREATE TABLE commit_outcomes (
    commit_sha      VARCHAR(64) NOT NULL,
    pass_id         VARCHAR(64) NOT NULL,
    tenant_id       VARCHAR(64) NOT NULL,
    outcome         VARCHAR(16) NOT NULL,
    changes_made    BIGINT NOT NULL,
    changes_planned BIGINT NOT NULL,
    reason          TEXT,
    recorded_at     BIGINT NOT NULL,
    PRIMARY KEY (commit_sha, pass_id, tenant_id)
);
CREATE INDEX commit_outcomes_recorded ON commit_outcomes (recorded_at);
CREATE INDEX commit_outcomes_tenant ON commit_outcomes (commit_sha, tenant_id, recorded_at);
