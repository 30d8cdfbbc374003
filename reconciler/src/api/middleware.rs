//! Middleware around every request: latency and status metrics per route, the request id, and the methods a tenant path answers.

use super::*;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the API's latency histogram buckets.
const LATENCY_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Requests served, by route, method and status, and their latency — rendered on the daemon's
/// /metrics after its own.
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let mut m = ApiMetrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        };
        m.registry.register(
            "tenancy_api_requests",
            "REST API requests by method, route and status",
            m.requests.clone(),
        );
        m.registry.register(
            "tenancy_api_request_seconds",
            "REST API request latency by method and route",
            m.latency.clone(),
        );
        m
    }
}

impl ApiMetrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let route_labels = RouteLabels {
            method: method.to_owned(),
            route: route.to_owned(),
        };
        self.latency.get_or_create(&route_labels).observe(seconds);
        let RouteLabels { method, route } = route_labels;
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// OpenMetrics text: `tenancy_api_requests_total` and `tenancy_api_request_seconds`,
    /// without the closing `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests are counted by route template, method and status, and timed by route and
    /// method, in OpenMetrics text.
    #[test]
    fn api_metrics_render_as_openmetrics() {
        let m = ApiMetrics::default();
        m.record("GET", "/api/tenancy/v1/tenants/{id}", 200, 0.003);
        m.record("GET", "/api/tenancy/v1/tenants/{id}", 200, 0.2);
        m.record("GET", "/api/tenancy/v1/tenants/{id}", 404, 0.001);
        let text = m.render();
        crate::testing::assert_lines(
            &text,
            &[
                "# TYPE tenancy_api_requests counter",
                "tenancy_api_requests_total{method=\"GET\",route=\"/api/tenancy/v1/tenants/{id}\",status=\"200\"} 2",
                "tenancy_api_requests_total{method=\"GET\",route=\"/api/tenancy/v1/tenants/{id}\",status=\"404\"} 1",
                "# TYPE tenancy_api_request_seconds histogram",
                "tenancy_api_request_seconds_count{method=\"GET\",route=\"/api/tenancy/v1/tenants/{id}\"} 3",
                "tenancy_api_request_seconds_bucket{le=\"0.005\",method=\"GET\",route=\"/api/tenancy/v1/tenants/{id}\"} 2",
                "tenancy_api_request_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/api/tenancy/v1/tenants/{id}\"} 3",
            ],
        );
        assert!(!text.contains("# EOF"), "the daemon closes the exposition");
    }
}
