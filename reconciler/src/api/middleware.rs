//! Middleware around every request: latency and status metrics per route, the request id, and the methods a tenant path answers.

use super::*;

/// Upper bounds (seconds) of the API's latency histogram buckets.
pub(super) const LATENCY_BUCKETS: [f64; 9] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// One route and method: requests by status, and their latency histogram.
#[derive(Default)]
pub(super) struct RouteStats {
    statuses: std::collections::BTreeMap<u16, u64>,
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Requests served, by route, method and status, and their latency — rendered on the daemon's
/// /metrics. One lock per request, and no allocation once a route and method have been seen.
#[derive(Default)]
pub struct ApiMetrics {
    by_route: std::sync::Mutex<
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, RouteStats>>,
    >,
}

impl ApiMetrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        if !by_route.contains_key(route) {
            by_route.insert(route.to_owned(), Default::default());
        }
        let methods = by_route.get_mut(route).expect("just inserted");
        if !methods.contains_key(method) {
            methods.insert(method.to_owned(), RouteStats::default());
        }
        let stats = methods.get_mut(method).expect("just inserted");
        *stats.statuses.entry(status).or_default() += 1;
        for (n, le) in stats.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= le {
                *n += 1;
            }
        }
        stats.sum += seconds;
        stats.count += 1;
    }

    /// Prometheus text: `tenancy_api_requests_total` and `tenancy_api_request_seconds`.
    pub fn render(&self) -> String {
        let by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        let mut requests = String::from(
            "# HELP tenancy_api_requests_total REST API requests by method, route and status.\n# TYPE tenancy_api_requests_total counter\n",
        );
        let mut latency = String::from(
            "# HELP tenancy_api_request_seconds REST API request latency by method and route.\n# TYPE tenancy_api_request_seconds histogram\n",
        );
        for (route, methods) in by_route.iter() {
            for (method, stats) in methods {
                let labels = format!("method=\"{method}\",route=\"{route}\"");
                for (status, n) in &stats.statuses {
                    requests.push_str(&format!(
                        "tenancy_api_requests_total{{{labels},status=\"{status}\"}} {n}\n"
                    ));
                }
                for (le, n) in LATENCY_BUCKETS.iter().zip(stats.buckets) {
                    latency.push_str(&format!(
                        "tenancy_api_request_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
                    ));
                }
                let (sum, count) = (stats.sum, stats.count);
                latency.push_str(&format!(
                    "tenancy_api_request_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\ntenancy_api_request_seconds_sum{{{labels}}} {sum:.6}\ntenancy_api_request_seconds_count{{{labels}}} {count}\n"
                ));
            }
        }
        requests + &latency
    }
}

/// Count and time each request by its route (the template, never the ids in it), and log it:
/// writes at info, reads at debug.
pub(super) async fn observe(
    metrics: Arc<ApiMetrics>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let request_id = request_id_of(req.headers());
    let resp = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    metrics.record(method.as_str(), &route, status, seconds);
    let ms = (seconds * 1000.0) as u64;
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        tracing::debug!(%method, route, status, ms, request_id, "API request");
    } else {
        tracing::info!(%method, route, status, ms, request_id, "API request");
    }
    resp
}

/// `/tenants/{id}` and `/tenants/{id}:action` share one route (axum cannot split a path
/// segment): each answers the methods it does not take with 405 and its own `Allow`.
pub(super) async fn tenant_methods(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let raw = req.uri().path().rsplit('/').next().unwrap_or_default();
    // A percent-encoded colon is a colon (copied only when there is one to decode).
    let last: std::borrow::Cow<str> = if raw.contains('%') {
        raw.replace("%3A", ":").replace("%3a", ":").into()
    } else {
        raw.into()
    };
    // An action's path; an id with another colon in it is no tenant's (400 from the handler,
    // or 404 "no such action" for a POST).
    let action = last
        .rsplit_once(':')
        .is_some_and(|(_, a)| matches!(a, "activate" | "suspend"));
    let routed = [
        Method::GET,
        Method::HEAD,
        Method::PATCH,
        Method::DELETE,
        Method::POST,
    ];
    if !action && last.contains(':') && routed.contains(req.method()) {
        return next.run(req).await;
    }
    let (allowed, allow): (&[Method], &str) = if action {
        (&[Method::POST], "POST")
    } else {
        (
            &[Method::GET, Method::HEAD, Method::PATCH, Method::DELETE],
            "GET, PATCH, DELETE",
        )
    };
    if allowed.contains(req.method()) {
        return next.run(req).await;
    }
    let mut r = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        format!("{} is not allowed here (allowed: {allow})", req.method()),
    )
    .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Propagate `X-Request-Id` (or make one): it is the correlation id of what the request does.
pub(super) async fn request_id(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::store::stable_id(&[
                "request",
                &crate::store::now_ms().to_string(),
                &std::process::id().to_string(),
                &n.to_string(),
            ])
        });
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert("x-request-id", v.clone());
        let mut resp = next.run(req).await;
        resp.headers_mut().insert("x-request-id", v);
        resp
    } else {
        next.run(req).await
    }
}
