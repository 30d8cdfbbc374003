//! Reconcile status per tenant: synced, drifted, blocked, failed, orphaned — and why.

use super::*;

impl Store {
    /// Record the outcome of a reconcile attempt.
    pub async fn set_status(&self, s: &Status) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::set_status_on(&mut conn, s).await
    }

    pub(super) async fn set_status_on(
        conn: &mut AnyConnection,
        s: &Status,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reconcile_status (tenant_id, status, last_applied_commit, last_attempted_commit, blocked_reason, error, updated_at, manifest_file) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id) DO UPDATE SET status = excluded.status, \
               last_applied_commit = COALESCE(excluded.last_applied_commit, reconcile_status.last_applied_commit), \
               last_attempted_commit = excluded.last_attempted_commit, blocked_reason = excluded.blocked_reason, \
               error = excluded.error, updated_at = excluded.updated_at, \
               manifest_file = COALESCE(excluded.manifest_file, reconcile_status.manifest_file)",
        )
        .bind(&s.tenant_id)
        .bind(s.status.as_str())
        .bind(&s.last_applied_commit)
        .bind(&s.last_attempted_commit)
        .bind(&s.blocked_reason)
        .bind(&s.error)
        .bind(s.updated_at)
        .bind(&s.manifest_file)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Every tenant's last reconcile outcome, by tenant id.
    pub async fn statuses(&self) -> Result<Vec<Status>, StoreError> {
        let rows = sqlx::query(safe(format!(
            "SELECT {} FROM reconcile_status ORDER BY tenant_id",
            Self::STATUS_COLUMNS
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::status_from_row).collect()
    }

    const STATUS_COLUMNS: &'static str = "tenant_id, status, last_applied_commit, last_attempted_commit, blocked_reason, error, updated_at, manifest_file";

    fn status_from_row(r: &sqlx::any::AnyRow) -> Result<Status, StoreError> {
        Ok(Status {
            tenant_id: r.try_get("tenant_id")?,
            status: ReconcileStatus::parse(&r.try_get::<String, _>("status")?)?,
            last_applied_commit: r.try_get("last_applied_commit")?,
            last_attempted_commit: r.try_get("last_attempted_commit")?,
            blocked_reason: r.try_get("blocked_reason")?,
            error: r.try_get("error")?,
            updated_at: r.try_get("updated_at")?,
            manifest_file: r.try_get("manifest_file")?,
        })
    }

    pub async fn status(&self, tenant: &str) -> Result<Option<Status>, StoreError> {
        let row = sqlx::query(safe(format!(
            "SELECT {} FROM reconcile_status WHERE tenant_id = $1",
            Self::STATUS_COLUMNS
        )))
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::status_from_row).transpose()
    }
}
