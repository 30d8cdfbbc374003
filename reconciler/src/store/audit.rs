//! The audit trail and the policy decisions of a tenant, for `tenancy history` and the API.

use super::*;

impl Store {
    /// A tenant's audit trail, oldest first: (event type, actor, outcome, commit, correlation).
    pub async fn audit(&self, tenant: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, event_type, actor, target, outcome, commit_sha, CAST(payload AS TEXT) AS payload, correlation_id \
             FROM tenant_audit WHERE tenant_id = $1 ORDER BY occurred_at, entry_order",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("payload")?;
                Ok(AuditRecord {
                    tenant_id: r.try_get("tenant_id")?,
                    event_type: r.try_get("event_type")?,
                    actor: r.try_get("actor")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    commit_sha: r.try_get("commit_sha")?,
                    payload: serde_json::from_str(&text).map_err(|source| StoreError::Json {
                        what: "payload",
                        source,
                    })?,
                    correlation_id: r.try_get("correlation_id")?,
                })
            })
            .collect()
    }

    /// A tenant's decisions, oldest first.
    pub async fn decisions(&self, tenant: &str) -> Result<Vec<DecisionRecord>, StoreError> {
        self.select_decisions("tenant_id", tenant).await
    }

    /// Decisions whose `column` (a constant of this module) is `value`.
    pub(super) async fn select_decisions(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows = sqlx::query(safe(format!(
            "SELECT tenant_id, commit_sha, operation, policy, digest, mode, CAST(blocks AS INTEGER) AS blocks, \
             CAST(verdicts AS TEXT) AS verdicts, failure, decided_at, against FROM policy_decisions WHERE {column} = $1 \
             ORDER BY decided_at, tenant_id, policy, against"
        )))
        .bind(value)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let verdicts: String = r.try_get("verdicts")?;
                let blocks: i64 = r
                    .try_get::<i32, _>("blocks")
                    .map(i64::from)
                    .or_else(|_| r.try_get::<i64, _>("blocks"))?;
                Ok(DecisionRecord {
                    tenant_id: r.try_get("tenant_id")?,
                    commit_sha: r.try_get("commit_sha")?,
                    operation: r.try_get("operation")?,
                    policy: r.try_get("policy")?,
                    digest: r.try_get("digest")?,
                    mode: r.try_get("mode")?,
                    blocks: blocks != 0,
                    verdicts: serde_json::from_str(&verdicts).map_err(|source| {
                        StoreError::Json {
                            what: "verdicts",
                            source,
                        }
                    })?,
                    failure: r.try_get("failure")?,
                    decided_at: r.try_get("decided_at")?,
                    against: r.try_get("against")?,
                })
            })
            .collect()
    }
}
