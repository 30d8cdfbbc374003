//! The daemon's Prometheus metrics: what the loop counts, and their text exposition.

use super::*;

/// What `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    pub(super) ready: AtomicBool,
    pub(super) reconciles: AtomicU64,
    pub(super) reconcile_errors: AtomicU64,
    pub(super) non_fast_forward: AtomicU64,
    pub(super) last_duration_ms: AtomicU64,
    pub(super) last_success_unix: AtomicU64,
    pub(super) events_published: AtomicU64,
    pub(super) outbox_pending: AtomicU64,
    /// Files of the last revision that could not be read (their findings belong to no tenant).
    pub(super) unreadable_files: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) retry_pending: AtomicU64,
    pub(super) webhook_delivered: AtomicU64,
    pub(super) webhook_failed: AtomicU64,
    pub(super) webhook_dead: AtomicU64,
    /// Microseconds, summed over successful deliveries.
    pub(super) webhook_latency_us: AtomicU64,
    pub(super) webhook_pending: AtomicU64,
    pub(super) queue_depth: AtomicU64,
    pub(super) policy_evaluations: AtomicU64,
    /// Microseconds spent judging, summed.
    pub(super) policy_us: AtomicU64,
    /// Tenants that failed, by the plane that failed them.
    pub(super) plane_errors: std::sync::Mutex<BTreeMap<String, u64>>,
    pub(super) fetches: AtomicU64,
    pub(super) fetch_errors: AtomicU64,
    pub(super) triggers: AtomicU64,
    pub(super) triggers_refused: AtomicU64,
    pub(super) tenants: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Why the branch head is refused, while it is.
    pub(super) refusal: std::sync::Mutex<Option<String>>,
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

    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric(
            "tenancy_reconciles_total",
            "counter",
            "Reconcile passes completed.",
            get(&self.reconciles),
        );
        metric(
            "tenancy_reconcile_errors_total",
            "counter",
            "Reconcile passes that could not run (repository, state store).",
            get(&self.reconcile_errors),
        );
        metric(
            "tenancy_non_fast_forward_total",
            "counter",
            "Commits refused because they do not descend from the last reconciled one.",
            get(&self.non_fast_forward),
        );
        metric(
            "tenancy_reconcile_duration_seconds",
            "gauge",
            "Duration of the last reconcile pass.",
            format!(
                "{:.3}",
                self.last_duration_ms.load(Ordering::Relaxed) as f64 / 1000.0
            ),
        );
        metric(
            "tenancy_last_success_timestamp_seconds",
            "gauge",
            "When the last reconcile pass completed.",
            get(&self.last_success_unix),
        );
        metric(
            "tenancy_events_published_total",
            "counter",
            "Events relayed from the outbox to Kafka.",
            get(&self.events_published),
        );
        metric(
            "tenancy_retry_passes_total",
            "counter",
            "Passes that retried failed tenants after their backoff.",
            get(&self.retries),
        );
        metric(
            "tenancy_tenants_awaiting_retry",
            "gauge",
            "Failed tenants waiting for their next attempt.",
            get(&self.retry_pending),
        );
        metric(
            "tenancy_unreadable_files",
            "gauge",
            "Files of the last reconciled revision that could not be read (too large, not UTF-8, a symlink, broken YAML); their tenants keep their last applied state.",
            get(&self.unreadable_files),
        );
        metric(
            "tenancy_outbox_pending",
            "gauge",
            "Events recorded but not yet published.",
            get(&self.outbox_pending),
        );
        metric(
            "tenancy_queue_depth",
            "gauge",
            "Tenants of the current pass still waiting to be reconciled.",
            get(&self.queue_depth),
        );
        metric(
            "tenancy_policy_evaluations_total",
            "counter",
            "Policy module evaluations (one module, one tenant).",
            get(&self.policy_evaluations),
        );
        metric(
            "tenancy_fetches_total",
            "counter",
            "Fetches of the remote repository.",
            get(&self.fetches),
        );
        metric(
            "tenancy_fetch_errors_total",
            "counter",
            "Fetches of the remote repository that failed.",
            get(&self.fetch_errors),
        );
        metric(
            "tenancy_triggers_total",
            "counter",
            "Accepted POST /hooks/git triggers.",
            get(&self.triggers),
        );
        metric(
            "tenancy_triggers_refused_total",
            "counter",
            "POST /hooks/git requests refused (missing or wrong signature).",
            get(&self.triggers_refused),
        );
        metric(
            "tenancy_webhook_deliveries_pending",
            "gauge",
            "Webhook deliveries waiting for their (next) attempt.",
            get(&self.webhook_pending),
        );
        out.push_str(&format!(
            "# HELP tenancy_policy_evaluation_seconds Time spent in policy evaluations (all modules) per pass.\n# TYPE tenancy_policy_evaluation_seconds summary\ntenancy_policy_evaluation_seconds_sum {:.6}\ntenancy_policy_evaluation_seconds_count {}\n",
            self.policy_us.load(Ordering::Relaxed) as f64 / 1e6,
            self.reconciles.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP tenancy_plane_errors_total Tenant reconciles that failed, by the plane that failed them.\n# TYPE tenancy_plane_errors_total counter\n");
        if let Ok(p) = self.plane_errors.lock() {
            for (plane, n) in p.iter() {
                out.push_str(&format!(
                    "tenancy_plane_errors_total{{plane=\"{plane}\"}} {n}\n"
                ));
            }
        }
        out.push_str("# HELP tenancy_webhook_deliveries_total Webhook delivery attempts by outcome (failed: will be retried; dead: dead-lettered).\n# TYPE tenancy_webhook_deliveries_total counter\n");
        for (outcome, n) in [
            ("delivered", &self.webhook_delivered),
            ("failed", &self.webhook_failed),
            ("dead", &self.webhook_dead),
        ] {
            out.push_str(&format!(
                "tenancy_webhook_deliveries_total{{outcome=\"{outcome}\"}} {}\n",
                n.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP tenancy_webhook_delivery_seconds Latency of successful webhook deliveries.\n# TYPE tenancy_webhook_delivery_seconds summary\ntenancy_webhook_delivery_seconds_sum {:.6}\ntenancy_webhook_delivery_seconds_count {}\n",
            self.webhook_latency_us.load(Ordering::Relaxed) as f64 / 1e6,
            self.webhook_delivered.load(Ordering::Relaxed)
        ));
        out.push_str(
            "# HELP tenancy_tenants Tenants by last outcome.\n# TYPE tenancy_tenants gauge\n",
        );
        if let Ok(t) = self.tenants.lock() {
            for (status, n) in t.iter() {
                out.push_str(&format!("tenancy_tenants{{status=\"{status}\"}} {n}\n"));
            }
        }
        out
    }
}
