//! Signed webhook delivery.
//!
//! Each delivery is an HTTP `POST` of the event — in CloudEvents binary content mode by
//! default (the attributes in `ce-*` headers, the body seed 000's `{ id, type, tenantId,
//! reason, timestamp, data }` as `application/json`), or structured (`[events] content-mode =
//! "structured"`: the whole CloudEvent as `application/cloudevents+json`) — with:
//!
//! - `Tenancy-Delivery`: the delivery id (the same on every retry: receivers deduplicate on it);
//! - `Tenancy-Event-Id`, `Tenancy-Event-Type`;
//! - `Tenancy-Timestamp`: Unix seconds of this attempt;
//! - `Tenancy-Signature: v1=<hex>` — HMAC-SHA256 with the webhook's secret over
//!   `"<timestamp>.<body>"`. Receivers recompute it, compare in constant time, and reject
//!   timestamps older than a few minutes (replay protection).
//!
//! A 2xx answer delivers; anything else (or no answer within 10 s) is retried with exponential
//! backoff and jitter, and dead-lettered after the webhook's maximum attempts. Within one
//! webhook a tenant's events are delivered in order: a later one waits while an earlier one is
//! being retried.
//!
//! Where a webhook may point is [`guard`]'s business (checked at registration and, after DNS
//! resolution, at every delivery); [`dispatch`] runs deliveries beside the reconcile loop,
//! concurrently across webhooks, so a slow or hanging receiver delays only itself.

pub mod dispatch;
pub mod guard;

use crate::store::{DeliveryState, DueDelivery, Store, now_ms};
use hmac::{Hmac, Mac};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The event types a webhook can subscribe to.
/// The most event types one webhook may filter on (a registration says each at most once in
/// practice; the bound keeps a request's list from growing without limit).
pub(crate) const MAX_EVENT_FILTERS: usize = 16;

/// The longest webhook URL accepted, in characters (the OpenAPI document's `maxLength`).
pub(crate) const MAX_URL_CHARS: usize = 2048;

/// The event types a webhook may filter on: every type the reconciler emits.
pub(crate) const EVENT_TYPES: [&str; 10] = {
    use crate::reconcile::events::EventType;
    let mut names = [""; 10];
    let mut i = 0;
    while i < EventType::ALL.len() {
        names[i] = EventType::ALL[i].as_str();
        i += 1;
    }
    names
};

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub(crate) fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone)]
pub(crate) struct DeliveryReport {
    pub delivered: usize,
    pub failed: usize,
    pub dead: usize,
    /// Seconds each successful delivery took, for the latency histogram.
    pub latencies: Vec<f64>,
    /// Milliseconds until the earliest pending delivery is due, if any is waiting.
    pub next_due_in_ms: Option<i64>,
}

pub(crate) struct Deliverer {
    client: reqwest::Client,
    guard: Arc<guard::Guard>,
    mode: crate::reconcile::events::ContentMode,
}

/// How many of a webhook's pending deliveries one round looks at (the oldest first).
const ROUND: i64 = 200;

impl Deliverer {
    /// An HTTP(S) client for deliveries that connects only to addresses `guard` allows (no
    /// proxy, no redirects); fails (it does not panic) when TLS cannot be set up, e.g. on a
    /// machine without CA certificates.
    pub(crate) fn new(
        guard: guard::Guard,
        mode: crate::reconcile::events::ContentMode,
    ) -> Result<Deliverer, String> {
        let guard = Arc::new(guard);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(guard::Resolver(guard.clone())))
            .user_agent(concat!("tenancy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhook HTTP client: {}", error_chain(&e)))?;
        Ok(Deliverer {
            client,
            guard,
            mode,
        })
    }

    /// Attempt every due delivery of one webhook, in order (a tenant's later events wait while
    /// an earlier one is being retried).
    pub(crate) async fn run_webhook(
        &self,
        store: &Store,
        webhook: &str,
    ) -> Result<DeliveryReport, crate::store::StoreError> {
        let mut report = DeliveryReport::default();
        let pending = store.pending_deliveries(Some(webhook), ROUND).await?;
        let now = now_ms();
        // (webhook, tenant) pairs with an earlier event still waiting: later ones wait too.
        let mut held: HashSet<(String, String)> = HashSet::new();
        for due in pending {
            let key = (
                due.webhook.webhook_id.clone(),
                due.delivery.tenant_id.clone(),
            );
            if held.contains(&key) {
                continue;
            }
            if due.delivery.next_attempt_at > now {
                let wait = due.delivery.next_attempt_at - now;
                report.next_due_in_ms = Some(report.next_due_in_ms.map_or(wait, |w| w.min(wait)));
                held.insert(key);
                continue;
            }
            if !self.attempt(store, due, &mut report).await? {
                held.insert(key);
            }
        }
        Ok(report)
    }

    /// One attempt; `true` when delivered.
    async fn attempt(
        &self,
        store: &Store,
        due: DueDelivery,
        report: &mut DeliveryReport,
    ) -> Result<bool, crate::store::StoreError> {
        let DueDelivery {
            mut delivery,
            webhook,
            body,
            event_type,
        } = due;
        let timestamp = now_ms() / 1000;
        let started = std::time::Instant::now();
        // The URL's own rules (its scheme, a literal address) before anything is sent; a host
        // name is checked by the client's resolver, address by address.
        if let Err(why) = self.guard.check_url(&webhook.url) {
            delivery.attempts += 1;
            delivery.state = DeliveryState::Dead;
            report.failed += 1;
            report.dead += 1;
            tracing::error!(
                webhook = %webhook.webhook_id, delivery = %delivery.delivery_id,
                tenant = %delivery.tenant_id, error = %why,
                "webhook target refused; delivery dead-lettered"
            );
            let why = format!("target refused: {why}");
            store.record_attempt(&delivery, None, Some(&why)).await?;
            return Ok(false);
        }
        // The CloudEvents HTTP binding: binary (ce-* headers, the body is the data) or
        // structured (the whole event); the signature covers exactly the body sent.
        let (attrs, body) = match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(event) => crate::reconcile::events::encode(&event, self.mode, "ce-"),
            Err(_) => (
                vec![("content-type".into(), "application/cloudevents+json".into())],
                body,
            ),
        };
        let mut request = self.client.post(&webhook.url);
        for (k, v) in &attrs {
            request = request.header(k.as_str(), v.as_str());
        }
        let sent = request
            .header("tenancy-delivery", &delivery.delivery_id)
            .header("tenancy-event-id", &delivery.event_id)
            .header("tenancy-event-type", &event_type)
            .header("tenancy-timestamp", timestamp.to_string())
            .header(
                "tenancy-signature",
                signature(&webhook.secret, timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        delivery.attempts += 1;
        let (status, error) = match sent {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16() as i64), None),
            Ok(r) => (
                Some(r.status().as_u16() as i64),
                Some(format!("HTTP {}", r.status())),
            ),
            Err(e) => (None, Some(error_chain(&e))),
        };
        match &error {
            None => {
                delivery.state = DeliveryState::Delivered;
                delivery.delivered_at = Some(now_ms());
                report.delivered += 1;
                report.latencies.push(started.elapsed().as_secs_f64());
                tracing::info!(
                    webhook = %webhook.webhook_id, delivery = %delivery.delivery_id,
                    tenant = %delivery.tenant_id, attempts = delivery.attempts,
                    "webhook delivered"
                );
            }
            Some(why) => {
                report.failed += 1;
                if delivery.attempts >= webhook.retry_policy.max_attempts {
                    delivery.state = DeliveryState::Dead;
                    report.dead += 1;
                    tracing::error!(
                        webhook = %webhook.webhook_id, url = %webhook.url, delivery = %delivery.delivery_id,
                        tenant = %delivery.tenant_id, attempts = delivery.attempts, error = %why,
                        "webhook delivery dead-lettered (requeue with `tenancy webhooks requeue`)"
                    );
                } else {
                    let seed = started.elapsed().subsec_nanos() as u64 ^ delivery.attempts as u64;
                    let wait = webhook.retry_policy.backoff_ms(delivery.attempts, seed);
                    delivery.next_attempt_at = now_ms() + wait;
                    report.next_due_in_ms =
                        Some(report.next_due_in_ms.map_or(wait, |w| w.min(wait)));
                    tracing::warn!(
                        webhook = %webhook.webhook_id, url = %webhook.url, delivery = %delivery.delivery_id,
                        tenant = %delivery.tenant_id, attempts = delivery.attempts, retry_in_ms = wait,
                        error = %why, "webhook delivery failed"
                    );
                }
            }
        }
        store
            .record_attempt(&delivery, status, error.as_deref())
            .await?;
        Ok(error.is_none())
    }
}

use crate::diagnostics::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_filter_on_every_event_type() {
        use crate::reconcile::events::EventType;
        assert_eq!(EVENT_TYPES, EventType::ALL.map(EventType::as_str));
    }

    /// The HMAC primitive against RFC 4231 test case 2, then the documented construction:
    /// the signature over (timestamp, body) is the HMAC over "<timestamp>.<body>".
    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec_demo").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let want = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature("whsec_demo", 1_700_000_000, "{\"a\":1}"), want);
        assert_ne!(signature("other", 1_700_000_000, "{\"a\":1}"), want);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = crate::store::RetryPolicy::default();
        for seed in [0u64, 1, 12345, u64::MAX] {
            let first = p.backoff_ms(1, seed);
            assert!((800..=1200).contains(&first), "{first}");
            let third = p.backoff_ms(3, seed);
            assert!((3200..=4800).contains(&third), "{third}");
            assert!(p.backoff_ms(40, seed) <= 360_000);
        }
    }
}
