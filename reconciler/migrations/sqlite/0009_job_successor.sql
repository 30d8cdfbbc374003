-- A job ended because a later pass reconciled its tenant at a commit that includes its own
-- names the job that converged it: reading the superseded job reports its successor's state.
ALTER TABLE tenant_jobs ADD COLUMN superseded_by VARCHAR(64);
