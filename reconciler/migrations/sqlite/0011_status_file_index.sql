-- The daemon looks up the tenants a commit's changed files last declared.
CREATE INDEX reconcile_status_manifest_file ON reconcile_status (manifest_file);
