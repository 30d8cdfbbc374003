//! `tenancy run`: the long-running reconciler.
//!
//! Watches a local repository (inotify on `.git` through `notify`, plus a poll every
//! `interval` as a safety net), and on a new commit reconciles only the tenants it changed
//! (all of them on the first run, when a platform file changed, and on every periodic resync,
//! which also catches drift). A commit that does not descend from the last one reconciled (a
//! force-push, a rewritten history) is refused and reported by default — old state is never
//! silently re-applied — or applied when `[daemon] on-non-fast-forward = "apply"`.
//!
//! Each reconcile is the same pipeline as `tenancy apply` (and records the same status,
//! decisions, audit, events and git note), followed by the relay of pending events. The last
//! reconciled commit is kept in the state store, so a restart resumes from it. `/healthz`,
//! `/readyz` and Prometheus `/metrics` are served on `--listen`. SIGTERM or Ctrl-C stops it
//! between reconciles (a reconcile in progress finishes first; every step is idempotent).

mod http;

use crate::config::{Config, NonFastForward};
use crate::reconcile::{self, Inputs, Outcome, Planes};
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Options {
    pub repo: PathBuf,
    pub path: String,
    pub config: Config,
    pub bundle: Option<PathBuf>,
    /// Largest manifest file read (`--max-file-size`).
    pub max_file_bytes: u64,
    pub listen: Option<SocketAddr>,
    /// Poll the repository at least this often (the watcher usually reacts first).
    pub interval: Duration,
    /// Reconcile every tenant at least this often.
    pub resync: Duration,
}

/// A progress message for people on stderr; with JSON logs, the structured log line (logged
/// next to it) is the only output, so stderr stays parseable.
macro_rules! say {
    ($($arg:tt)*) => {
        if !crate::diagnostics::JSON_LOGS.load(Ordering::Relaxed) {
            // What is said may carry a plane's error or a module's reason: never raw.
            eprintln!("{}", crate::diagnostics::printable(&format!($($arg)*)));
        }
    };
}

/// Which tenants a pass reconciles.
enum Scope {
    /// Every tenant (start, periodic resync, after an accepted non-fast-forward).
    Full,
    /// The tenants changed since this commit.
    Since(String),
    /// These tenants again (they failed; their backoff has expired).
    Retry(BTreeSet<String>),
}

/// A failed tenant's next attempt: exponential backoff (1 s, 2 s, 4 s, … up to 5 min) with
/// ±20 % jitter, so a recovering service is not hit by every tenant at the same instant.
struct Retry {
    attempt: u32,
    due: Instant,
}

impl Retry {
    fn after(attempt: u32) -> Retry {
        // The same schedule as webhook deliveries' default policy.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let wait =
            crate::store::RetryPolicy::default().backoff_ms(i64::from(attempt), u64::from(nanos));
        Retry {
            attempt,
            due: Instant::now() + Duration::from_millis(wait.max(0) as u64),
        }
    }
}

/// What `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    ready: AtomicBool,
    reconciles: AtomicU64,
    reconcile_errors: AtomicU64,
    non_fast_forward: AtomicU64,
    last_duration_ms: AtomicU64,
    last_success_unix: AtomicU64,
    events_published: AtomicU64,
    outbox_pending: AtomicU64,
    /// Files of the last revision that could not be read (their findings belong to no tenant).
    unreadable_files: AtomicU64,
    retries: AtomicU64,
    retry_pending: AtomicU64,
    webhook_delivered: AtomicU64,
    webhook_failed: AtomicU64,
    webhook_dead: AtomicU64,
    /// Microseconds, summed over successful deliveries.
    webhook_latency_us: AtomicU64,
    webhook_pending: AtomicU64,
    queue_depth: AtomicU64,
    policy_evaluations: AtomicU64,
    /// Microseconds spent judging, summed.
    policy_us: AtomicU64,
    /// Tenants that failed, by the plane that failed them.
    plane_errors: std::sync::Mutex<BTreeMap<String, u64>>,
    fetches: AtomicU64,
    fetch_errors: AtomicU64,
    triggers: AtomicU64,
    triggers_refused: AtomicU64,
    tenants: std::sync::Mutex<BTreeMap<String, u64>>,
    /// Why the branch head is refused, while it is.
    refusal: std::sync::Mutex<Option<String>>,
}

/// The state-store key of the current refusal of a branch head (`tenancy status` shows it).
pub const REFUSED: &str = "repository.refused";

impl Metrics {
    fn refuse(&self, why: Option<String>) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refusing(&self) -> bool {
        self.refusal().is_some()
    }

    fn render(&self) -> String {
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

/// `POST /hooks/git`: a Git host's push webhook, verified with the shared secret.
struct Trigger {
    secret: String,
    pending: Arc<AtomicBool>,
    wake: tokio::sync::mpsc::Sender<()>,
}

/// Is `signature` (`sha256=<hex>` as GitHub, Forgejo and GitLab-compatible hosts send in
/// `X-Hub-Signature-256`, or bare hex as Gitea's `X-Gitea-Signature`) the HMAC-SHA256 of `body`?
/// Compared in constant time.
fn trigger_signature_ok(secret: &str, body: &[u8], signature: &str) -> bool {
    use hmac::Mac;
    let hex_sig = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Ok(given) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    trigger: Option<Trigger>,
    api: Option<(axum::Router, Arc<crate::api::ApiMetrics>)>,
) {
    use axum::routing::{get, post};
    let ready = metrics.clone();
    let (mut app, api_metrics) = match api {
        Some((router, m)) => (router, Some(m)),
        None => (axum::Router::new(), None),
    };
    if let Some(trigger) = trigger {
        let trigger = Arc::new(trigger);
        let m = metrics.clone();
        app = app.route(
            "/hooks/git",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (trigger, m) = (trigger.clone(), m.clone());
                    async move {
                        let signature = headers
                            .get("x-hub-signature-256")
                            .or_else(|| headers.get("x-gitea-signature"))
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        if !trigger_signature_ok(&trigger.secret, &body, signature) {
                            m.triggers_refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!("POST /hooks/git refused: missing or wrong signature");
                            return (
                                axum::http::StatusCode::UNAUTHORIZED,
                                "signature missing or wrong (X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>)\n",
                            );
                        }
                        m.triggers.fetch_add(1, Ordering::Relaxed);
                        trigger.pending.store(true, Ordering::Relaxed);
                        let _ = trigger.wake.try_send(());
                        (axum::http::StatusCode::ACCEPTED, "fetching\n")
                    }
                },
            ),
        );
    }
    let app = app
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    // A refusal is not a start-up: it says what is refused, since when, why.
                    if let Some(why) = ready.refusal() {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("{why}\n"),
                        )
                    } else if ready.ready.load(Ordering::Relaxed) {
                        (axum::http::StatusCode::OK, "ready\n".to_owned())
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "starting: the first reconcile has not finished yet\n".to_owned(),
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let (m, api, store) = (metrics.clone(), api_metrics.clone(), store.clone());
                async move {
                    // Counted at every scrape (one COUNT query), so the gauge is never stale:
                    // events recorded since the last relay attempt are waiting too.
                    match store.pending_count().await {
                        Ok(n) => m.outbox_pending.store(n.max(0) as u64, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(error = %e, "/metrics: the outbox could not be counted")
                        }
                    }
                    if let Ok(counts) = store.delivery_counts().await {
                        let pending = counts
                            .iter()
                            .find(|(s, _)| s == "pending")
                            .map_or(0, |(_, n)| *n);
                        m.webhook_pending
                            .store(pending.max(0) as u64, Ordering::Relaxed);
                    }
                    let mut text = m.render();
                    if let Some(api) = api {
                        text.push_str(&api.render());
                    }
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                }
            }),
        );
    // Every error answer is a problem (RFC 9457); oversized requests never reach a handler.
    let app = app
        .layer(axum::middleware::from_fn(crate::api::problem_json))
        .layer(axum::middleware::from_fn(http::limits));
    http::serve(listener, app).await;
}

fn head_of(repo: &std::path::Path) -> Result<String, String> {
    let r = git2::Repository::open(repo).map_err(|e| e.message().to_owned())?;
    let head = r.head().map_err(|e| e.message().to_owned())?;
    head.peel_to_commit()
        .map(|c| c.id().to_string())
        .map_err(|e| e.message().to_owned())
}

fn descends(repo: &std::path::Path, head: &str, from: &str) -> bool {
    let Ok(r) = git2::Repository::open(repo) else {
        return false;
    };
    match (git2::Oid::from_str(head), git2::Oid::from_str(from)) {
        (Ok(h), Ok(f)) => h == f || r.graph_descendant_of(h, f).unwrap_or(false),
        _ => false,
    }
}

/// The state-store key of the last commit reconciled from this repository.
fn cursor_key(opts: &Options) -> String {
    let repo = std::fs::canonicalize(&opts.repo).unwrap_or_else(|_| opts.repo.clone());
    format!("daemon.last-commit:{}:{}", repo.display(), opts.path)
}

/// Why the daemon stopped, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Evaluate(#[from] reconcile::EvaluateError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("state store: {0}")]
    State(#[source] crate::store::StoreError),
    #[error(transparent)]
    Apply(#[from] reconcile::ApplyError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub async fn run(mut opts: Options) -> Result<(), DaemonError> {
    let mut shutdown = Box::pin(shutdown_signal());
    // A remote repository is followed through a bare mirror under the embedded root.
    let remote = opts.config.daemon.remote.clone();
    if let Some(url) = &remote {
        let name = crate::store::stable_id(&[url, &opts.config.daemon.branch]);
        opts.repo = opts.config.embedded.root.join("mirrors").join(&name[..16]);
        std::fs::create_dir_all(&opts.repo)?;
        say!(
            "tenancy run: following {} (branch {}, fetched every {} s) through {}",
            crate::source::redact(url),
            opts.config.daemon.branch,
            opts.config.daemon.fetch_interval_seconds,
            opts.repo.display()
        );
    }
    let opts = opts;
    let config = &opts.config;
    if config.state.url.is_none() {
        std::fs::create_dir_all(&config.embedded.root)?;
    }
    let store = Store::open(&config.state_url())
        .await
        .map_err(DaemonError::State)?;
    let planes = Arc::new(Planes::from_config(config));
    let platform = Arc::new(crate::api::Platform::default());
    let producer = match &config.events.kafka {
        Some(k) => Some(
            reconcile::EventsProducer::new(k, config.events.content_mode)
                .map_err(|e| DaemonError::Io(std::io::Error::other(e)))?,
        ),
        None => None,
    };
    let metrics = Arc::new(Metrics::default());
    // Wake-ups: the watcher on .git, a Git-host trigger, the poll interval, shutdown.
    let (wake_tx, mut wake) = tokio::sync::mpsc::channel::<()>(1);
    let fetch_now = Arc::new(AtomicBool::new(true));

    let relay = producer.map(|p| {
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(relay_loop(p, store.clone(), metrics.clone(), wake.clone()));
        wake
    });
    let listener = match opts.listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    // Where webhooks may point: never this daemon's own listener.
    let own = listener.as_ref().and_then(|l| l.local_addr().ok());
    let guard = crate::webhooks::guard::Guard::new(&config.webhooks, own);
    if let Some(listener) = listener {
        tracing::info!(addr = %listener.local_addr()?, "serving /healthz /readyz /metrics");
        say!(
            "tenancy run: serving /healthz /readyz /metrics on http://{}",
            listener.local_addr()?
        );
        let trigger = config.daemon.trigger_secret.clone().map(|secret| Trigger {
            secret,
            pending: fetch_now.clone(),
            wake: wake_tx.clone(),
        });
        let api = if config.api.tokens.is_empty() {
            None
        } else {
            say!(
                "tenancy run: REST API on http://{}{} ({} token(s))",
                listener.local_addr()?,
                crate::api::BASE,
                config.api.tokens.len()
            );
            Some(
                crate::api::router(
                    store.clone(),
                    &config.api,
                    crate::api::writes::WriteTarget {
                        repo: opts.repo.clone(),
                        path: opts.path.clone(),
                        bundle: opts.bundle.clone(),
                        max_file_bytes: opts.max_file_bytes,
                        // Following a remote, writes go there (the mirror follows); otherwise
                        // to `[api] push` when set.
                        push: match (&remote, &config.api.push) {
                            (Some(url), _) => Some(crate::api::writes::Push {
                                remote: url.clone(),
                                branch: config.daemon.branch.clone(),
                            }),
                            (None, Some(name)) => Some(crate::api::writes::Push {
                                remote: name.clone(),
                                branch: crate::source::current_branch(&opts.repo)
                                    .unwrap_or_else(|| "main".into()),
                            }),
                            (None, None) => None,
                        },
                        cache: Default::default(),
                    },
                    planes.clone(),
                    platform.clone(),
                    guard.clone(),
                )
                .map_err(DaemonError::Usage)?,
            )
        };
        tokio::spawn(serve(
            listener,
            metrics.clone(),
            store.clone(),
            trigger,
            api,
        ));
    }
    let _watcher = {
        use notify::Watcher;
        let tx = wake_tx.clone();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Only changes: reading the repository (as each pass does) must not wake it again.
            if let Ok(event) = res
                && matches!(
                    event.kind,
                    notify::EventKind::Access(_) | notify::EventKind::Other
                )
            {
                return;
            }
            let _ = tx.try_send(());
        })
        .map_err(|e| DaemonError::Io(std::io::Error::other(format!("watch: {e}"))))?;
        let git_dir = opts.repo.join(".git");
        let watched = if git_dir.is_dir() {
            git_dir
        } else {
            opts.repo.clone()
        };
        if let Err(e) = w.watch(&watched, notify::RecursiveMode::Recursive) {
            tracing::warn!(error = %e, "cannot watch the repository; polling only");
        }
        w
    };
    // Commits a crash left without their note (outcomes recorded, note not yet written).
    if config.apply.notes {
        write_notes(&store, &opts.repo).await;
    }
    // Webhook deliveries run beside the loop: a pass never waits for a receiver.
    let deliveries = match crate::webhooks::Deliverer::new(guard, config.events.content_mode) {
        Ok(d) => {
            let m = metrics.clone();
            Some(crate::webhooks::dispatch::spawn(
                d,
                store.clone(),
                move |r| {
                    m.webhook_delivered
                        .fetch_add(r.delivered as u64, Ordering::Relaxed);
                    m.webhook_failed
                        .fetch_add((r.failed - r.dead) as u64, Ordering::Relaxed);
                    m.webhook_dead.fetch_add(r.dead as u64, Ordering::Relaxed);
                    m.webhook_latency_us.fetch_add(
                        r.latencies.iter().map(|s| (s * 1e6) as u64).sum(),
                        Ordering::Relaxed,
                    );
                },
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook deliveries are off");
            say!("tenancy run: {e}; webhook deliveries are off");
            None
        }
    };
    let key = match &remote {
        Some(url) => format!(
            "daemon.last-commit:{}#{}:{}",
            crate::source::redact(url),
            config.daemon.branch,
            opts.path
        ),
        None => cursor_key(&opts),
    };
    let fetch_every = Duration::from_secs(config.daemon.fetch_interval_seconds.max(1));
    let mut last_fetch: Option<Instant> = None;
    let mut last_full: Option<Instant> = None;
    let mut refused: Option<String> = None;
    let mut retries: BTreeMap<String, Retry> = BTreeMap::new();
    // What each file parsed to, by blob id: a pass re-parses only the files a commit changed.
    let mut cache = crate::validate::ParseCache::default();
    tracing::info!(repo = %opts.repo.display(), interval = ?opts.interval, resync = ?opts.resync, "watching");
    say!(
        "tenancy run: watching {} (poll every {:?}, full resync every {:?})",
        opts.repo.display(),
        opts.interval,
        opts.resync
    );
    loop {
        if let Some(url) = &remote
            && (fetch_now.swap(false, Ordering::Relaxed)
                || last_fetch.is_none_or(|t| t.elapsed() >= fetch_every))
        {
            last_fetch = Some(Instant::now());
            let (url, branch, dir) = (url.clone(), config.daemon.branch.clone(), opts.repo.clone());
            let fetched = tokio::task::spawn_blocking(move || {
                crate::source::fetch_mirror(&url, &branch, &dir)
            })
            .await
            .map_err(|e| DaemonError::Io(std::io::Error::other(e)))?;
            metrics.fetches.fetch_add(1, Ordering::Relaxed);
            match fetched {
                Ok(head) => tracing::debug!(%head, "fetched"),
                Err(e) => {
                    metrics.fetch_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "fetch failed; retrying at the next interval");
                    say!("tenancy run: {e}");
                }
            }
        }
        let head = match head_of(&opts.repo) {
            Ok(h) => h,
            Err(e) => {
                metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot read the repository's HEAD");
                String::new()
            }
        };
        let last = store.state_value(&key).await.map_err(DaemonError::State)?;
        let resync_due = last_full.is_none_or(|t| t.elapsed() >= opts.resync);
        let moved = last.as_deref() != Some(head.as_str());
        let now = Instant::now();
        let due: BTreeSet<String> = retries
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(t, _)| t.clone())
            .collect();
        let fast_forward = last
            .as_deref()
            .is_none_or(|l| descends(&opts.repo, &head, l));
        let scope = if head.is_empty() {
            None
        } else if (moved || resync_due)
            && !fast_forward
            && config.daemon.on_non_fast_forward == NonFastForward::Refuse
        {
            if refused.as_deref() != Some(head.as_str()) {
                metrics.non_fast_forward.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%head, last = ?last, "refusing a commit that does not descend from the last reconciled one (force-push or rewritten history); set [daemon] on-non-fast-forward = \"apply\" or reset the branch");
                let why = format!(
                    "{} does not descend from the last reconciled commit {} (a force-push or rewritten history); nothing is applied until the branch moves forward again or [daemon] on-non-fast-forward = \"apply\"",
                    &head[..head.len().min(12)],
                    last.as_deref()
                        .map(|l| &l[..l.len().min(12)])
                        .unwrap_or("-")
                );
                say!("tenancy run: refused {why}");
                // Said where people look: `tenancy status`, /readyz. Kept from the first
                // refusal of this head (a restart does not reset "since").
                let since = store
                    .state_value(REFUSED)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
                    .filter(|v| v["head"] == head.as_str())
                    .and_then(|v| v["since"].as_i64())
                    .unwrap_or_else(crate::store::now_ms);
                let record = serde_json::json!({
                    "head": head, "last": last, "since": since, "reason": why,
                });
                if let Err(e) = store.set_state_value(REFUSED, &record.to_string()).await {
                    tracing::warn!(error = %e, "could not record the refusal");
                }
                metrics.refuse(Some(format!(
                    "refusing {} since {}: {why}",
                    &head[..head.len().min(12)],
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(since.max(0) as u64)
                    )
                )));
                refused = Some(head.clone());
            }
            None
        } else if resync_due || !fast_forward || last.is_none() {
            Some(Scope::Full)
        } else if moved {
            last.clone().map(Scope::Since)
        } else if !due.is_empty() {
            Some(Scope::Retry(due))
        } else {
            None
        };
        if let Some(scope) = scope {
            if refused.take().is_some() || metrics.refusing() {
                metrics.refuse(None);
                if let Err(e) = store.set_state_value(REFUSED, "").await {
                    tracing::warn!(error = %e, "could not clear the refusal");
                }
            }
            let full = matches!(scope, Scope::Full);
            let retrying = matches!(scope, Scope::Retry(_));
            let started = Instant::now();
            let parts = Parts {
                opts: &opts,
                planes: &planes,
                platform: &platform,
                relay: relay.as_deref(),
                deliveries: deliveries.as_deref(),
                store: &store,
                metrics: &metrics,
            };
            match reconcile_once(&parts, &head, scope, &mut cache).await {
                Ok(outcomes) => {
                    store
                        .set_state_value(&key, &head)
                        .await
                        .map_err(DaemonError::State)?;
                    if full {
                        last_full = Some(Instant::now());
                    }
                    // Failed tenants are retried with exponential backoff and jitter; any other
                    // outcome ends their retries.
                    for (tenant, outcome) in outcomes {
                        if outcome == Outcome::Failed {
                            let attempt = retries.get(&tenant).map_or(0, |r| r.attempt) + 1;
                            retries.insert(tenant, Retry::after(attempt));
                        } else {
                            retries.remove(&tenant);
                        }
                    }
                    if retrying {
                        metrics.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    metrics
                        .retry_pending
                        .store(retries.len() as u64, Ordering::Relaxed);
                    metrics.reconciles.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .last_duration_ms
                        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    metrics.last_success_unix.store(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0),
                        Ordering::Relaxed,
                    );
                    metrics.ready.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, %head, "reconcile failed");
                    say!(
                        "tenancy run: reconcile of {} failed: {e}",
                        &head[..head.len().min(12)]
                    );
                }
            }
        }
        // Sleep until the next poll or retry, whichever is first.
        let next_retry = retries
            .values()
            .map(|r| r.due.saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(opts.interval);
        let nap = opts.interval.min(next_retry).max(Duration::from_millis(10));
        tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("shutting down");
        say!("tenancy run: shutting down");
                    return Ok(());
                }
                _ = wake.recv() => {
                    // Debounce: a commit touches several files under .git.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    while wake.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(nap) => {}
            }
    }
}

/// Annotate every commit with outcomes recorded since the last time (this pass's, and any a
/// crash left without their note); a failure is logged and retried after the next pass.
async fn write_notes(store: &Store, repo: &std::path::Path) {
    match reconcile::notes::write_notes(store, repo).await {
        Ok(n) if n > 0 => tracing::debug!(notes = n, "git notes written"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not write the git notes"),
    }
}

/// Publish the outbox to Kafka whenever a pass recorded events, at start (events a crash or
/// an outage left behind), and — while Kafka is unreachable — again after a backoff (1 s
/// doubling to 30 s). Events are marked published only once acknowledged, so nothing is lost;
/// a retry after an unacknowledged send may publish an event twice, with the same id.
async fn relay_loop(
    producer: reconcile::EventsProducer,
    store: Store,
    metrics: Arc<Metrics>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut backoff: Option<Duration> = None;
    loop {
        let r = producer.relay(&store).await;
        metrics
            .events_published
            .fetch_add(r.published as u64, Ordering::Relaxed);
        match r.error {
            Some(e) => {
                let next = backoff.map_or(Duration::from_secs(1), |b| {
                    (b * 2).min(Duration::from_secs(30))
                });
                backoff = Some(next);
                tracing::warn!(error = %e, pending = r.pending, retry_in = ?next, "events wait in the outbox");
            }
            None => {
                if backoff.take().is_some() {
                    tracing::info!("events relayed again; the outbox is drained");
                }
            }
        }
        match backoff {
            Some(wait) => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// Two malloc arenas instead of glibc's default of eight per core: a long-running process whose
/// passes parse on a thread pool otherwise keeps each thread's arena half full between passes
/// (measured at 10,000 tenants: 139 MiB idle with the default, 114 MiB with two, and faster
/// passes). Call before any thread starts; `MALLOC_ARENA_MAX` in the environment still wins.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tunable; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Give the memory a pass freed back to the system: the daemon then idles at its steady-state
/// size, not at the peak of its largest evaluation (glibc keeps freed heap pages otherwise).
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's heap to the kernel; it touches no
    // memory in use and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are registered when this is called (not when
/// first polled), so a signal arriving during the first reconcile is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One pass: the tenants changed since `last` (all when `full`), through the whole pipeline.
/// What every pass works with.
struct Parts<'a> {
    opts: &'a Options,
    planes: &'a Planes,
    /// Where the API reads regions and plans from.
    platform: &'a crate::api::Platform,
    /// Wakes the relay task (present when events go to Kafka).
    relay: Option<&'a tokio::sync::Notify>,
    /// Wakes the webhook dispatcher (present when deliveries are on).
    deliveries: Option<&'a tokio::sync::Notify>,
    store: &'a Store,
    metrics: &'a Metrics,
}

async fn reconcile_once(
    parts: &Parts<'_>,
    head: &str,
    scope: Scope,
    cache: &mut crate::validate::ParseCache,
) -> Result<Vec<(String, Outcome)>, DaemonError> {
    let Parts {
        opts,
        planes,
        platform,
        relay,
        deliveries,
        store,
        metrics,
    } = *parts;
    let pass = Instant::now();
    // An incremental pass judges only the files the commit changed (the others' decisions
    // stand); if a platform or organization file changed, everything is judged again.
    let changed: Option<BTreeSet<String>> = match &scope {
        Scope::Since(last) => crate::source::changed_paths(
            &opts.repo,
            last,
            head,
            &crate::source::ReadOptions {
                path: opts.path.clone(),
                ..Default::default()
            },
        )
        .ok()
        .map(|c| c.into_iter().map(|p| p.path).collect()),
        _ => None,
    };
    let full = matches!(scope, Scope::Full);
    // Where tenants the revision no longer declares are looked for: everywhere on a full
    // pass, in the changed files on an incremental one, nowhere on a retry.
    let absent_in: Option<BTreeSet<String>> = match &scope {
        Scope::Full => None,
        Scope::Since(_) => changed.clone(),
        Scope::Retry(_) => Some(BTreeSet::new()),
    };
    // Every change is judged against what is applied: a refused change stays refused on every
    // later pass (a restart, a resync, another commit) until a change that passes replaces it.
    let applied = reconcile::applied_baseline(store)
        .await
        .map_err(DaemonError::State)?;
    let inputs = Inputs {
        path: opts.path.clone(),
        max_file_bytes: opts.max_file_bytes,
        bundle: opts.bundle.clone(),
        govern_only: changed,
        previous: vec![applied],
        ..Inputs::new(&opts.repo, Some(head))
    };
    let (evaluation, selected) = {
        let mut inputs = inputs.clone();
        let head = head.to_owned();
        let mut owned = std::mem::take(cache);
        let (cache_back, result) = tokio::task::spawn_blocking(move || {
            let cache = &mut owned;
            let result = (|| -> Result<_, DaemonError> {
                let mut evaluation = reconcile::evaluate_cached(&inputs, Some(cache))?;
                let selected = match scope {
                    Scope::Since(last) => {
                        reconcile::changed_tenants(
                            &inputs,
                            &last,
                            &head,
                            &evaluation.report.catalog,
                        )?
                        .0
                    }
                    Scope::Retry(tenants) => Some(tenants),
                    Scope::Full => None,
                };
                if selected.is_none() && inputs.govern_only.is_some() {
                    inputs.govern_only = None;
                    evaluation = reconcile::evaluate_cached(&inputs, Some(cache))?;
                }
                tracing::debug!(parsed = cache.parsed, "files parsed (others unchanged)");
                Ok((evaluation, selected))
            })();
            (owned, result)
        })
        .await
        .map_err(|e| DaemonError::Io(std::io::Error::other(e)))?;
        *cache = cache_back;
        result?
    };
    platform.update(&evaluation.report.catalog);
    let evaluated_ms = pass.elapsed().as_millis() as u64;
    metrics
        .policy_evaluations
        .fetch_add(evaluation.governance.evaluations as u64, Ordering::Relaxed);
    metrics.policy_us.fetch_add(
        (evaluation.governance.seconds * 1e6) as u64,
        Ordering::Relaxed,
    );
    let plan = reconcile::plan(planes, &evaluation, selected.as_ref()).await;
    let planned_ms = pass.elapsed().as_millis() as u64;
    // The pass's work queue: tenants still to reconcile (one at a time each, `concurrency`
    // together).
    metrics
        .queue_depth
        .store(plan.tenants.len() as u64, Ordering::Relaxed);
    let applied = reconcile::apply(
        planes,
        &evaluation,
        &plan,
        store,
        &opts.config.apply.detect_only,
        opts.config.apply.concurrency,
        &|_| {
            let _ = metrics
                .queue_depth
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        },
    )
    .await
    .map_err(DaemonError::Apply)?;
    let applied_ms = pass.elapsed().as_millis() as u64;
    // Nothing is silent: files that could not be read (logged, counted, kept for `tenancy
    // status`), tenants no file declares any more (orphaned) or whose file is unreadable.
    if !matches!(absent_in.as_ref(), Some(f) if f.is_empty()) {
        let unreadable = reconcile::absent::record_unreadable(store, &evaluation)
            .await
            .map_err(DaemonError::Apply)?;
        metrics
            .unreadable_files
            .store(unreadable as u64, Ordering::Relaxed);
        let correlation = reconcile::correlation_id(&evaluation);
        let absent =
            reconcile::absent::record_absent(store, &evaluation, absent_in.as_ref(), &correlation)
                .await
                .map_err(DaemonError::Apply)?;
        for a in &absent {
            let (status, why) = a.status(head);
            say!("tenancy run: {} is {status}: {why}", a.tenant);
        }
    }
    // A failure's reason starts with the plane that gave it ("object-store: …").
    if let Ok(mut errors) = metrics.plane_errors.lock() {
        for t in applied
            .tenants
            .iter()
            .filter(|t| t.outcome == Outcome::Failed)
        {
            let plane = t
                .reason
                .as_deref()
                .and_then(|r| r.split(':').next())
                .filter(|p| planes.names().any(|n| n == *p))
                .unwrap_or("other");
            *errors.entry(plane.to_owned()).or_default() += 1;
        }
    }
    if opts.config.apply.notes {
        write_notes(store, &opts.repo).await;
    }
    let noted_ms = pass.elapsed().as_millis() as u64;
    // The relay task publishes what this pass recorded (it runs on its own, so an unreachable
    // Kafka never holds up reconciling).
    if let Some(wake) = relay {
        wake.notify_one();
    }
    if let Some(wake) = deliveries {
        wake.notify_one();
    }
    tracing::debug!(
        evaluated_ms,
        planned_ms,
        applied_ms,
        noted_ms,
        "pass timings (cumulative)"
    );
    // Metrics from counting queries, whatever the number of tenants and events (the outbox
    // gauge is counted at each scrape).
    if let Ok(counts) = store.status_counts().await
        && let Ok(mut t) = metrics.tenants.lock()
    {
        *t = counts
            .into_iter()
            .map(|(status, n)| (status, n.max(0) as u64))
            .collect();
    }
    let summary = format!(
        "{} applied, {} blocked, {} failed, {} drifted",
        applied.count(Outcome::Applied),
        applied.count(Outcome::Blocked),
        applied.count(Outcome::Failed),
        applied.count(Outcome::Drifted)
    );
    tracing::info!(commit = %head, tenants = applied.tenants.len(), full, %summary, "reconciled");
    say!(
        "tenancy run: reconciled {} ({} tenant(s){}): {summary}",
        &head[..12],
        applied.tenants.len(),
        if full { ", full resync" } else { "" }
    );
    let outcomes = applied
        .tenants
        .iter()
        .map(|t| (t.tenant.clone(), t.outcome.clone()))
        .collect();
    drop((evaluation, plan, applied));
    release_memory();
    Ok(outcomes)
}
