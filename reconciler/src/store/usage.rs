//! Usage reports (`usage_records`), idempotent on the client's key — scoped to the tenant and
//! the caller, so one client's key is never another's (no oracle, no squatting) — or, without
//! a key, on the report's natural key (tenant, environment, resource, time).

use super::{Store, StoreError, now_ms, stable_id};
use sqlx::Row;

/// A usage report as received.
#[derive(Debug, Clone)]
pub struct UsageReport {
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
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
    /// The key (or, without one, the natural key) was used for a different report.
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

impl UsageReport {
    /// What deduplicates the report: the client's key within its tenant and caller, or the
    /// report's natural key.
    fn dedup_key(&self) -> String {
        match &self.idempotency_key {
            Some(key) => stable_id(&["usage-key", &self.tenant_id, &self.reported_by, key]),
            None => stable_id(&[
                "usage-natural",
                &self.tenant_id,
                &self.env,
                &self.resource,
                &self.occurred_at,
            ]),
        }
    }
}

impl Store {
    /// Record a usage report once per deduplication key (concurrent duplicates included: the
    /// key is unique in the table, and the loser of a race reads the winner's record).
    pub async fn record_usage(&self, r: &UsageReport) -> Result<Recorded, StoreError> {
        let digest = r.digest();
        let key = r.dedup_key();
        let id = format!("usage_{}", &stable_id(&["usage", &key])[..20]);
        let inserted = sqlx::query(
            "INSERT INTO usage_records (record_id, idempotency_key, request_sha256, tenant_id, env, resource, amount, \
             occurred_at, reported_by, request_id, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&id)
        .bind(&key)
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
        .bind(&key)
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
