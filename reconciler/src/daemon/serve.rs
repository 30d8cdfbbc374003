//! The daemon's HTTP side: `/healthz`, `/readyz`, `/metrics`, the Git-host trigger, and the
//! API beside them.

use super::*;

/// `POST /hooks/git`: a Git host's push webhook, verified with the shared secret.
pub(super) struct Trigger {
    pub(super) secret: String,
    pub(super) pending: Arc<AtomicBool>,
    pub(super) wake: tokio::sync::mpsc::Sender<()>,
}

/// Is `signature` (`sha256=<hex>` as GitHub, Forgejo and GitLab-compatible hosts send in
/// `X-Hub-Signature-256`, or bare hex as Gitea's `X-Gitea-Signature`) the HMAC-SHA256 of `body`?
/// Compared in constant time.
pub(super) fn trigger_signature_ok(secret: &str, body: &[u8], signature: &str) -> bool {
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

pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    trigger: Option<Trigger>,
    beside: Option<super::Served>,
) {
    use axum::routing::{get, post};
    let ready = metrics.clone();
    let (mut app, api_metrics) = match beside {
        Some(served) => (served.router, Some(Arc::new(served.metrics))),
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
                            m.triggers_refused.inc();
                            tracing::warn!("POST /hooks/git refused: missing or wrong signature");
                            return (
                                axum::http::StatusCode::UNAUTHORIZED,
                                "signature missing or wrong (X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>)\n",
                            );
                        }
                        m.triggers.inc();
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
                        Ok(n) => {
                            m.outbox_pending.set(n.max(0));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "/metrics: the outbox could not be counted")
                        }
                    }
                    if let Ok(counts) = store.delivery_counts().await {
                        let pending = counts
                            .iter()
                            .find(|(s, _)| *s == crate::store::DeliveryState::Pending)
                            .map_or(0, |(_, n)| *n);
                        m.webhook_pending.set(pending.max(0));
                    }
                    let mut text = m.render();
                    if let Some(api) = api {
                        text.push_str(&api());
                    }
                    text.push_str("# EOF\n");
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
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
