-- The file that last declared each tenant: a tenant the repository stops declaring is told
-- apart as orphaned (its file was removed) or blocked (its file can no longer be read).
ALTER TABLE reconcile_status ADD COLUMN manifest_file TEXT;
