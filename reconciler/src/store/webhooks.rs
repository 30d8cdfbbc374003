//! Webhooks (`tenant_webhooks`) and their deliveries (`webhook_deliveries`).
//!
//! Each outbox event is fanned out once to a delivery per matching webhook (same tenant, or a
//! webhook for every tenant, `*`; subscribed to the event's type or to all). A delivery is
//! retried with backoff until the receiver answers 2xx, and dead-lettered after the webhook's
//! maximum attempts; `tenancy webhooks requeue` gives a dead one another round.

use super::{Store, StoreError, json_column, now_ms, safe, stable_id};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// How a webhook's deliveries are retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts before a delivery is dead-lettered.
    pub max_attempts: i64,
    /// Wait after the first failure; doubled after each further one.
    pub initial_backoff_ms: i64,
    pub max_backoff_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1`, with ±20 % jitter from `seed`.
    pub(crate) fn backoff_ms(&self, attempts: i64, seed: u64) -> i64 {
        let base = self
            .initial_backoff_ms
            .saturating_mul(1 << (attempts - 1).clamp(0, 20))
            .min(self.max_backoff_ms);
        let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        let factor = 0.8 + 0.4 * (mixed as f64 / (1u64 << 24) as f64);
        (base as f64 * factor) as i64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub(crate) webhook_id: String,
    /// A tenant id, or `*` for every tenant.
    pub tenant_id: String,
    pub url: String,
    /// Subscribed event types; empty = all.
    pub events: Vec<String>,
    /// Never serialized: it signs deliveries and is not shown again once registered.
    #[serde(skip)]
    pub secret: String,
    pub(crate) retry_policy: RetryPolicy,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A delivery's state: `pending` (attempts left), `delivered`, or `dead` (out of attempts;
/// `tenancy webhooks redeliver` gives it another round).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 3] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Dead,
    ];

    /// The spelling of the database column, the CLI and its JSON (`pending`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<DeliveryState, StoreError> {
        super::named(
            &DeliveryState::ALL,
            DeliveryState::as_str,
            "delivery state",
            s,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub(crate) delivery_id: String,
    pub(crate) webhook_id: String,
    pub event_id: String,
    pub tenant_id: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub(crate) next_attempt_at: i64,
    pub(crate) last_status: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) delivered_at: Option<i64>,
    pub created_at: i64,
}

/// A delivery to attempt, with what it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub webhook: Webhook,
    pub body: String,
    pub event_type: String,
}

const DELIVERY_COLUMNS: &str = "d.delivery_id, d.webhook_id, d.event_id, d.tenant_id, d.state, d.attempts, d.next_attempt_at, \
     d.last_status, d.last_error, d.delivered_at, d.created_at";
const WEBHOOK_COLUMNS: &str = "webhook_id, tenant_id, url, CAST(events AS TEXT) AS events, secret, \
     CAST(retry_policy AS TEXT) AS retry_policy, created_at, updated_at";

fn webhook_from_row(r: &sqlx::any::AnyRow) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        webhook_id: r.try_get("webhook_id")?,
        tenant_id: r.try_get("tenant_id")?,
        url: r.try_get("url")?,
        events: json_column(r, "events")?,
        secret: r.try_get("secret")?,
        retry_policy: json_column(r, "retry_policy")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn delivery_from_row(r: &sqlx::any::AnyRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        delivery_id: r.try_get("delivery_id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_id: r.try_get("event_id")?,
        tenant_id: r.try_get("tenant_id")?,
        state: DeliveryState::parse(&r.try_get::<String, _>("state")?)?,
        attempts: r
            .try_get::<i64, _>("attempts")
            .or_else(|_| r.try_get::<i32, _>("attempts").map(i64::from))?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_status: r.try_get::<Option<i64>, _>("last_status").or_else(|_| {
            r.try_get::<Option<i32>, _>("last_status")
                .map(|v| v.map(i64::from))
        })?,
        last_error: r.try_get("last_error")?,
        delivered_at: r.try_get("delivered_at")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Store {
    /// Register a webhook; its id is derived from tenant and URL (registering the same pair
    /// again updates it).
    pub async fn put_webhook(
        &self,
        tenant: &str,
        url: &str,
        events: &[String],
        secret: &str,
        retry: &RetryPolicy,
    ) -> Result<Webhook, StoreError> {
        let now = now_ms();
        let id = format!("wh_{}", &stable_id(&["webhook", tenant, url])[..16]);
        sqlx::query(safe(format!(
            "INSERT INTO tenant_webhooks (webhook_id, tenant_id, url, events, secret, retry_policy, created_at, updated_at) \
             VALUES ($1, $2, $3, {}, $5, {}, $7, $7) ON CONFLICT (webhook_id) DO UPDATE SET events = excluded.events, \
             secret = excluded.secret, retry_policy = excluded.retry_policy, updated_at = excluded.updated_at",
            self.dialect.json(4),
            self.dialect.json(6)
        )))
        .bind(&id)
        .bind(tenant)
        .bind(url)
        .bind(serde_json::to_string(events).unwrap_or_else(|_| "[]".into()))
        .bind(secret)
        .bind(serde_json::to_string(retry).unwrap_or_else(|_| "{}".into()))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(Webhook {
            webhook_id: id,
            tenant_id: tenant.to_owned(),
            url: url.to_owned(),
            events: events.to_vec(),
            secret: secret.to_owned(),
            retry_policy: retry.clone(),
            created_at: now,
            updated_at: now,
        })
    }

    pub async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let rows = sqlx::query(safe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM tenant_webhooks ORDER BY tenant_id, url"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    /// Remove a webhook and its undelivered deliveries; `false` when there was none.
    pub(crate) async fn remove_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM tenant_webhooks WHERE webhook_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND state <> 'delivered'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Turn outbox events not yet fanned out into deliveries for the webhooks that want them;
    /// returns how many deliveries were created. Events recorded while no webhook matched are
    /// not delivered later to webhooks registered afterwards.
    pub(crate) async fn fan_out(&self, limit: i64) -> Result<usize, StoreError> {
        // Read outside the transaction (the writes below are idempotent), so it only takes
        // SQLite's write lock.
        let rows = sqlx::query(
            "SELECT event_id, tenant_id, event_type FROM outbox WHERE fanned_out = 0 ORDER BY created_at, tenant_id, sequence LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let hooks = self.webhooks().await?;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut created = 0;
        for r in &rows {
            let event_id: String = r.try_get("event_id")?;
            let tenant: String = r.try_get("tenant_id")?;
            let ty: String = r.try_get("event_type")?;
            for h in hooks.iter().filter(|h| {
                (h.tenant_id == "*" || h.tenant_id == tenant)
                    && (h.events.is_empty() || h.events.contains(&ty))
            }) {
                created += sqlx::query(
                    "INSERT INTO webhook_deliveries (delivery_id, webhook_id, event_id, tenant_id, state, attempts, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6) ON CONFLICT (webhook_id, event_id) DO NOTHING",
                )
                .bind(format!("dl_{}", &stable_id(&["delivery", &h.webhook_id, &event_id])[..20]))
                .bind(&h.webhook_id)
                .bind(&event_id)
                .bind(&tenant)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected() as usize;
            }
            sqlx::query("UPDATE outbox SET fanned_out = 1 WHERE event_id = $1")
                .bind(&event_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    /// Each webhook with pending deliveries, and when its earliest one is due (epoch ms).
    pub(crate) async fn pending_webhooks(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT webhook_id, CAST(MIN(next_attempt_at) AS BIGINT) AS due FROM webhook_deliveries \
             WHERE state = 'pending' GROUP BY webhook_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("webhook_id")?, r.try_get("due")?)))
            .collect()
    }

    /// Pending deliveries in order (oldest first), due or not, with their webhook and body:
    /// every webhook's, or one webhook's (`webhook`).
    pub(crate) async fn pending_deliveries(
        &self,
        webhook: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let rows = sqlx::query(safe(format!(
            "SELECT {DELIVERY_COLUMNS}, CAST(o.event AS TEXT) AS body, o.event_type AS event_type \
             FROM webhook_deliveries d JOIN outbox o ON o.event_id = d.event_id \
             WHERE d.state = 'pending' AND ($1 = '' OR d.webhook_id = $1) \
             ORDER BY o.created_at, o.tenant_id, o.sequence, d.webhook_id LIMIT $2"
        )))
        .bind(webhook.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let hooks: std::collections::HashMap<String, Webhook> = self
            .webhooks()
            .await?
            .into_iter()
            .map(|h| (h.webhook_id.clone(), h))
            .collect();
        let mut out = Vec::new();
        for r in &rows {
            let delivery = delivery_from_row(r)?;
            let Some(webhook) = hooks.get(&delivery.webhook_id).cloned() else {
                continue;
            };
            out.push(DueDelivery {
                delivery,
                webhook,
                body: r.try_get("body")?,
                event_type: r.try_get("event_type")?,
            });
        }
        Ok(out)
    }

    /// Record one attempt: delivered, or failed (retried at `next_attempt_at`, or `dead`).
    pub(crate) async fn record_attempt(
        &self,
        d: &Delivery,
        status: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $2, attempts = $3, next_attempt_at = $4, last_status = $5, \
             last_error = $6, delivered_at = $7 WHERE delivery_id = $1",
        )
        .bind(&d.delivery_id)
        .bind(d.state.as_str())
        .bind(d.attempts)
        .bind(d.next_attempt_at)
        .bind(status)
        .bind(error)
        .bind(d.delivered_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deliveries, newest first; only those in `state` when given.
    pub async fn deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = match state {
            Some(s) => sqlx::query(safe(format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.state = $1 ORDER BY d.created_at DESC LIMIT $2"
            )))
            .bind(s.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
            None => sqlx::query(safe(format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d ORDER BY d.created_at DESC LIMIT $1"
            )))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?,
        };
        rows.iter().map(delivery_from_row).collect()
    }

    /// Give dead-lettered deliveries another round of attempts: one by id, or all (`None`).
    /// Returns how many were requeued.
    pub async fn requeue(&self, delivery: Option<&str>) -> Result<u64, StoreError> {
        let now = now_ms();
        let q = match delivery {
            Some(id) => sqlx::query(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $2 \
                 WHERE state = 'dead' AND delivery_id = $1",
            )
            .bind(id)
            .bind(now),
            None => sqlx::query(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1 WHERE state = 'dead'",
            )
            .bind(now),
        };
        Ok(q.execute(&self.pool).await?.rows_affected())
    }

    /// Deliveries by state (for metrics): one counting query.
    pub(crate) async fn delivery_counts(&self) -> Result<Vec<(DeliveryState, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, CAST(COUNT(*) AS BIGINT) AS n FROM webhook_deliveries GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok((DeliveryState::parse(&state)?, r.try_get("n")?))
            })
            .collect()
    }
}
