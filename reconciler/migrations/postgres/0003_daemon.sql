-- Small facts the daemon keeps between restarts (e.g. the last commit reconciled per repository).
CREATE TABLE reconciler_state (
    state_key  VARCHAR(512) PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
