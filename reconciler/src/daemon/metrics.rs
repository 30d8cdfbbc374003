//! The daemon's Prometheus metrics: what the loop counts, and their text exposition.

use super::*;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The plane that failed a tenant.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PlaneLabel {
    pub(super) plane: String,
}

/// How a webhook delivery attempt ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabel {
    pub(super) outcome: &'static str,
}

/// A tenant's last reconcile status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatusLabel {
    pub(super) status: String,
}

/// A latency histogram in seconds: 1 ms to about a minute.
#[derive(Clone)]
pub(super) struct Seconds(Histogram);

impl Default for Seconds {
    fn default() -> Self {
        Seconds(Histogram::new(exponential_buckets(0.001, 2.0, 17)))
    }
}

impl std::ops::Deref for Seconds {
    type Target = Histogram;
    fn deref(&self) -> &Histogram {
        &self.0
    }
}

/// What `/metrics` reports (prometheus-client: the loop updates the metrics, a scrape encodes
/// them; the registry is made at the first scrape).
#[derive(Default)]
pub struct Metrics {
    registry: std::sync::OnceLock<Registry>,
    pub(super) ready: AtomicBool,
    pub(super) reconciles: Counter,
    pub(super) reconcile_errors: Counter,
    pub(super) non_fast_forward: Counter,
    pub(super) last_duration: Gauge<f64, AtomicU64>,
    pub(super) last_success_unix: Gauge,
    pub(super) events_published: Counter,
    pub(super) outbox_pending: Gauge,
    /// Files of the last revision that could not be read (their findings belong to no tenant).
    pub(super) unreadable_files: Gauge,
    pub(super) retries: Counter,
    pub(super) retry_pending: Gauge,
    pub(super) webhook_deliveries: Family<OutcomeLabel, Counter>,
    pub(super) webhook_latency: Seconds,
    pub(super) webhook_pending: Gauge,
    pub(super) queue_depth: Gauge,
    pub(super) policy_evaluations: Counter,
    /// Seconds spent judging, per pass.
    pub(super) policy_seconds: Seconds,
    /// Tenants that failed, by the plane that failed them.
    pub(super) plane_errors: Family<PlaneLabel, Counter>,
    pub(super) fetches: Counter,
    pub(super) fetch_errors: Counter,
    pub(super) triggers: Counter,
    pub(super) triggers_refused: Counter,
    pub(super) tenants: Family<StatusLabel, Gauge>,
    /// Why the branch head is refused, while it is.
    pub(super) refusal: std::sync::Mutex<Option<String>>,
}

impl Metrics {
    /// The registry of every metric (each registered as a handle on the same value).
    fn registry(&self) -> &Registry {
        self.registry.get_or_init(|| {
            let m = self;
            // Every outcome is shown from the start, at 0.
            for outcome in ["delivered", "failed", "dead"] {
                m.webhook_deliveries
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc_by(0);
            }
            let mut registry = Registry::default();
            let r = &mut registry;
            // Counters get `_total` from the encoder.
            r.register(
                "tenancy_reconciles",
                "Reconcile passes completed",
                m.reconciles.clone(),
            );
            r.register(
                "tenancy_reconcile_errors",
                "Reconcile passes that could not run (repository, state store)",
                m.reconcile_errors.clone(),
            );
            r.register(
                "tenancy_non_fast_forward",
                "Commits refused because they do not descend from the last reconciled one",
                m.non_fast_forward.clone(),
            );
            r.register(
                "tenancy_reconcile_duration_seconds",
                "Duration of the last reconcile pass",
                m.last_duration.clone(),
            );
            r.register(
                "tenancy_last_success_timestamp_seconds",
                "When the last reconcile pass completed",
                m.last_success_unix.clone(),
            );
            r.register(
                "tenancy_events_published",
                "Events relayed from the outbox to Kafka",
                m.events_published.clone(),
            );
            r.register(
                "tenancy_retry_passes",
                "Passes that retried failed tenants after their backoff",
                m.retries.clone(),
            );
            r.register(
                "tenancy_tenants_awaiting_retry",
                "Failed tenants waiting for their next attempt",
                m.retry_pending.clone(),
            );
            r.register(
                "tenancy_unreadable_files",
                "Files of the last reconciled revision that could not be read (too large, not UTF-8, a symlink, broken YAML); their tenants keep their last applied state",
                m.unreadable_files.clone(),
            );
            r.register(
                "tenancy_outbox_pending",
                "Events recorded but not yet published",
                m.outbox_pending.clone(),
            );
            r.register(
                "tenancy_queue_depth",
                "Tenants of the current pass still waiting to be reconciled",
                m.queue_depth.clone(),
            );
            r.register(
                "tenancy_policy_evaluations",
                "Policy module evaluations (one module, one tenant)",
                m.policy_evaluations.clone(),
            );
            r.register(
                "tenancy_policy_evaluation_seconds",
                "Time spent in policy evaluations (all modules) per pass",
                m.policy_seconds.0.clone(),
            );
            r.register(
                "tenancy_fetches",
                "Fetches of the remote repository",
                m.fetches.clone(),
            );
            r.register(
                "tenancy_fetch_errors",
                "Fetches of the remote repository that failed",
                m.fetch_errors.clone(),
            );
            r.register(
                "tenancy_triggers",
                "Accepted POST /hooks/git triggers",
                m.triggers.clone(),
            );
            r.register(
                "tenancy_triggers_refused",
                "POST /hooks/git requests refused (missing or wrong signature)",
                m.triggers_refused.clone(),
            );
            r.register(
                "tenancy_webhook_deliveries_pending",
                "Webhook deliveries waiting for their (next) attempt",
                m.webhook_pending.clone(),
            );
            r.register(
                "tenancy_plane_errors",
                "Tenant reconciles that failed, by the plane that failed them",
                m.plane_errors.clone(),
            );
            r.register(
                "tenancy_webhook_deliveries",
                "Webhook delivery attempts by outcome (failed: will be retried; dead: dead-lettered)",
                m.webhook_deliveries.clone(),
            );
            r.register(
                "tenancy_webhook_delivery_seconds",
                "Latency of successful webhook deliveries",
                m.webhook_latency.0.clone(),
            );
            r.register(
                "tenancy_tenants",
                "Tenants by last outcome",
                m.tenants.clone(),
            );
            registry
        })
    }
}

/// The state-store key of the current refusal of a branch head (`tenancy status` shows it).
pub const REFUSED: &str = "repository.refused";

impl Metrics {
    pub(super) fn refuse(&self, why: Option<String>) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    pub(super) fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn refusing(&self) -> bool {
        self.refusal().is_some()
    }

    /// The daemon's metrics as OpenMetrics text, without the closing `# EOF` (the API's
    /// follow, when it is on).
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, self.registry());
        out
    }

    /// Count one webhook delivery round.
    pub(super) fn delivered(&self, delivered: u64, failed: u64, dead: u64, latencies: &[f64]) {
        for (outcome, n) in [("delivered", delivered), ("failed", failed), ("dead", dead)] {
            self.webhook_deliveries
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(n);
        }
        for s in latencies {
            self.webhook_latency.observe(*s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_metrics_render_as_openmetrics() {
        let m = Metrics::default();
        m.reconciles.inc();
        m.queue_depth.set(3);
        m.delivered(2, 1, 1, &[0.02, 0.5]);
        m.plane_errors
            .get_or_create(&PlaneLabel {
                plane: "postgres".into(),
            })
            .inc();
        let text = m.render();
        crate::testing::assert_lines(
            &text,
            &[
                "tenancy_reconciles_total 1",
                "tenancy_reconcile_errors_total 0",
                "tenancy_queue_depth 3",
                "tenancy_webhook_deliveries_total{outcome=\"delivered\"} 2",
                "tenancy_webhook_deliveries_total{outcome=\"dead\"} 1",
                "tenancy_webhook_delivery_seconds_count 2",
                "tenancy_plane_errors_total{plane=\"postgres\"} 1",
                "# TYPE tenancy_last_success_timestamp_seconds gauge",
            ],
        );
        assert!(!text.contains("# EOF"), "serve closes the exposition");
    }
}
