//! Usage reports (`usage_records`), idempotent on the client's key.

use super::{Store, StoreError, now_ms, stable_id};
use sqlx::Row;

/// A usage report as received.
#[derive(Debug, Clone)]
pub struct UsageReport {
    pub idempotency_key: String,
    pub tenant_id: String,
    pub env: String,
    pub resource: String,
    pub amount: f64,
    pub occurred_at: String,
    pub reported_by: String,
    pub request_id: String,
}

/// What recording a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Stored now, with this id.
    New(String),
    /// The same key and the same report were recorded before: the first record's id.
    Replayed(String),
    /// The key was used for a different report.
    Conflict(String),
}

impl UsageReport {
    /// A digest of what was reported (not of who or when it was received).
    fn digest(&self) -> String {
        stable_id(&[
            &self.tenant_id,
            &self.env,
            &self.resource,
            &format!("{:?}", self.amount),
            &self.occurred_at,
        ])
    }
}

impl Store {
    /// Record a usage report once per idempotency key (concurrent duplicates included: the key
    /// is unique in the table, and the loser of a race reads the winner's record).
    pub async fn record_usage(&self, r: &UsageReport) -> Result<Recorded, StoreError> {
        let digest = r.digest();
        let id = format!("usage_{}", &stable_id(&["usage", &r.idempotency_key])[..20]);
        let inserted = sqlx::query(
            "INSERT INTO usage_records (record_id, idempotency_key, request_sha256, tenant_id, env, resource, amount, \
             occurred_at, reported_by, request_id, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&id)
        .bind(&r.idempotency_key)
        .bind(&digest)
        .bind(&r.tenant_id)
        .bind(&r.env)
        .bind(&r.resource)
        .bind(r.amount)
        .bind(&r.occurred_at)
        .bind(&r.reported_by)
        .bind(&r.request_id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Recorded::New(id));
        }
        let row = sqlx::query(
            "SELECT record_id, request_sha256 FROM usage_records WHERE idempotency_key = $1",
        )
        .bind(&r.idempotency_key)
        .fetch_one(&self.pool)
        .await?;
        let first: String = row.try_get("record_id")?;
        let first_digest: String = row.try_get("request_sha256")?;
        Ok(if first_digest == digest {
            Recorded::Replayed(first)
        } else {
            Recorded::Conflict(first)
        })
    }

    /// How many usage records a tenant has (for checks and tests).
    pub async fn usage_count(&self, tenant: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM usage_records WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(&self.pool)
        .await?)
    }
}
