//! The event outbox: what is pending, in order, until its own delivery report marks it published.

use super::*;

impl Store {
    /// Events in the outbox, oldest first (and in sequence within a tenant): all, or one
    /// tenant's; only those after the cursor `after` = (created_at, tenant, sequence) of the
    /// last one seen, for following; at most `limit`.
    pub async fn events(
        &self,
        tenant: Option<&str>,
        after: Option<(i64, String, i64)>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.select_events(tenant, after, limit, false).await
    }

    /// Events not yet published, oldest first and in sequence within each tenant.
    pub(crate) async fn pending_events(&self, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        self.select_events(None, None, limit, true).await
    }

    async fn select_events(
        &self,
        tenant: Option<&str>,
        after: Option<(i64, String, i64)>,
        limit: i64,
        pending_only: bool,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let (after_time, after_tenant, after_seq) = after.unwrap_or((-1, String::new(), 0));
        let rows = sqlx::query(
            "SELECT event_id, tenant_id, sequence, event_type, CAST(event AS TEXT) AS event, created_at, published_at, \
             CAST(attempts AS BIGINT) AS attempts FROM outbox \
             WHERE ($1 = '' OR tenant_id = $1) \
               AND (created_at > $2 OR (created_at = $2 AND (tenant_id > $3 OR (tenant_id = $3 AND sequence > $4)))) \
               AND ($6 = 0 OR published_at IS NULL) \
             ORDER BY created_at, tenant_id, sequence LIMIT $5",
        )
        .bind(tenant.unwrap_or(""))
        .bind(after_time)
        .bind(after_tenant)
        .bind(after_seq)
        .bind(limit)
        .bind(i32::from(pending_only))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("event")?;
                Ok(EventRecord {
                    event_id: r.try_get("event_id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    sequence: r.try_get("sequence")?,
                    event_type: r.try_get("event_type")?,
                    event: serde_json::from_str(&text).map_err(|source| StoreError::Json {
                        what: "event",
                        source,
                    })?,
                    created_at: r.try_get("created_at")?,
                    published_at: r.try_get("published_at")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }
}
