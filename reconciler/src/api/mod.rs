//! The REST API `/api/tenancy/v1` (seed 000), served by `tenancy run` beside `/metrics`.
//!
//! This first slice is the read side: tenants (list with filters and cursor pagination, one by
//! id with its `ETag`), a tenant's environments, and jobs. Every request needs a bearer token
//! from `[api] tokens` (stored as SHA-256, compared in constant time); a token confined to a
//! tenant or an organization sees nothing else — another tenant is "not found", never
//! "forbidden", so ids do not leak. Every error is one RFC 9457 problem+json shape, and every
//! response carries `X-Request-Id` (the caller's, or a new one).

use crate::config::ApiToken;
use crate::store::{Store, TenantFilter, TenantRecord, TenantSummary};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

pub mod edit;
pub mod openapi;
mod problem;
pub mod views;
pub mod writes;

mod auth;

use auth::{Action, Caller, Limiter, too_many};
use problem::internal;
pub use problem::{FieldError, Problem, problem_json, slug_of as problem_slug};

pub const BASE: &str = "/api/tenancy/v1";

pub(crate) struct Api {
    store: Store,
    planes: Arc<crate::reconcile::Planes>,
    platform: Arc<Platform>,
    /// Writes commit one at a time.
    write_lock: tokio::sync::Mutex<()>,
    limits: crate::config::ApiConfig,
    limiter: Limiter,
    /// Failed logins by peer address: throttled, so tokens cannot be guessed at speed.
    failures: Limiter,
    /// Where writes commit (and push).
    writes: writes::WriteTarget,
    /// (SHA-256 of the token, its grant).
    tokens: Vec<([u8; 32], ApiToken)>,
    /// Where webhooks may point.
    guard: crate::webhooks::guard::Guard,
}

/// The API's routes under [`BASE`], or an error naming the token whose digest is malformed.
pub fn router(
    store: Store,
    config: &crate::config::ApiConfig,
    writes: writes::WriteTarget,
    planes: Arc<crate::reconcile::Planes>,
    platform: Arc<Platform>,
    guard: crate::webhooks::guard::Guard,
) -> Result<(axum::Router, Arc<ApiMetrics>), String> {
    let mut parsed = Vec::new();
    for t in &config.tokens {
        let bytes = hex::decode(&t.sha256)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                format!(
                    "[api] token `{}`: sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)",
                    t.name
                )
            })?;
        if t.tenant.is_some() && t.organization.is_some() {
            return Err(format!(
                "[api] token `{}`: set tenant or organization, not both",
                t.name
            ));
        }
        parsed.push((bytes, t.clone()));
    }
    let api = Arc::new(Api {
        store,
        planes,
        platform,
        write_lock: tokio::sync::Mutex::new(()),
        limits: config.clone(),
        limiter: Limiter::default(),
        failures: Limiter::default(),
        writes,
        tokens: parsed,
        guard,
    });
    use axum::routing::get;
    let metrics = Arc::new(ApiMetrics::default());
    let observed = metrics.clone();
    let router = axum::Router::new()
        .route(
            &format!("{BASE}/tenants"),
            get(list_tenants).post(create_tenant),
        )
        .route(
            &format!("{BASE}/tenants/{{id}}"),
            get(get_tenant)
                .post(tenant_action)
                .patch(patch_tenant)
                .delete(delete_tenant)
                .layer(axum::middleware::from_fn(tenant_methods)),
        )
        .route(
            &format!("{BASE}/tenants/{{id}}/environments"),
            get(environments),
        )
        .route(&format!("{BASE}/tenants/{{id}}/topology"), get(topology))
        .route(&format!("{BASE}/jobs/{{id}}"), get(get_job))
        .route(&format!("{BASE}/governance/policies"), get(governance))
        .route(
            &format!("{BASE}/tenants/by-external-id/{{system}}/{{value}}"),
            get(by_external_id),
        )
        .route(&format!("{BASE}/events"), get(event_stream))
        .route(
            &format!("{BASE}/webhooks"),
            get(list_webhooks).post(create_webhook),
        )
        .route(
            &format!("{BASE}/webhooks/{{id}}"),
            axum::routing::delete(delete_webhook),
        )
        .route(
            &format!("{BASE}/billing/usage"),
            axum::routing::post(post_usage),
        )
        .route(
            &format!("{BASE}/openapi.json"),
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi::document(),
                )
            }),
        )
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not-found", "no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::from_fn(move |req, next| {
            observe(observed.clone(), req, next)
        }))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(api);
    Ok((router, metrics))
}

/// Upper bounds (seconds) of the API's latency histogram buckets.
const LATENCY_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// One route and method: requests by status, and their latency histogram.
#[derive(Default)]
struct RouteStats {
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
async fn observe(
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
async fn tenant_methods(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
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
async fn request_id(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    org: Option<String>,
    #[param(value_type = Option<String>, pattern = "^(Draft|Active|Suspended|Archived|Deleted)$")]
    state: Option<String>,
    region: Option<String>,
    plan: Option<String>,
    #[param(pattern = "^(mt-standard|st-dedicated|hybrid)$")]
    profile: Option<String>,
    cursor: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(v)| v).map_err(|e| {
        let text = e.body_text();
        // serde names the offending parameter: "unknown field `x`, expected one of …".
        let field = text.split('`').nth(1).unwrap_or("query").to_owned();
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "the query string is not valid",
        )
        .field(&field, text)
    })
}

const STATES: &[&str] = &["Draft", "Active", "Suspended", "Archived", "Deleted"];
const PROFILES: &[&str] = &["mt-standard", "st-dedicated", "hybrid"];

#[utoipa::path(get, path = "/api/tenancy/v1/tenants", tag = "tenants", params(ListQuery), responses((status = 200, description = "A page of tenants (`items`, `nextCursor`)", body = views::TenantPage), (status = 400, description = "Invalid filter or cursor", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn list_tenants(
    State(api): State<Arc<Api>>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "limit is out of range",
        )
        .field("limit", "between 1 and 500"));
    }
    if let Some(s) = q.state.as_deref().filter(|s| !STATES.contains(s)) {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "unknown state").field(
                "state",
                format!("`{s}` is not one of {}", STATES.join(", ")),
            ),
        );
    }
    if let Some(p) = q.profile.as_deref().filter(|p| !PROFILES.contains(p)) {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "unknown profile").field(
                "profile",
                format!("`{p}` is not one of {}", PROFILES.join(", ")),
            ),
        );
    }
    // A confined caller's scope narrows the filter; a filter outside it matches nothing.
    let organization = match (&caller.organization, q.org) {
        (Some(mine), Some(asked)) if *mine != asked => return Ok(page(&[], None)),
        (Some(mine), _) => Some(mine.clone()),
        (None, asked) => asked,
    };
    let filter = TenantFilter {
        organization,
        state: q.state,
        region: q.region,
        plan: q.plan,
        profile: q.profile,
        tenant: caller.tenant.clone(),
    };
    // One more than asked: whether there is a next page.
    let mut rows = api
        .store
        .list_tenants(&filter, q.cursor.as_deref(), limit + 1)
        .await
        .map_err(internal)?;
    let next = (rows.len() as i64 > limit).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(|t| t.tenant_id.clone())
    });
    Ok(page(&rows, next.flatten()))
}

fn page(rows: &[TenantSummary], next: Option<String>) -> Response {
    axum::Json(views::TenantPage {
        items: rows.to_vec(),
        next_cursor: next,
    })
    .into_response()
}

/// An RFC 3339 time (UTC, milliseconds) for epoch milliseconds.
fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// A tenant the caller may see, or "not found" (also for one outside the caller's scope).
async fn visible(api: &Api, caller: &Caller, id: &str) -> Result<TenantRecord, Problem> {
    tenant_id(id)?;
    let t = match api.store.tenant(id).await.map_err(internal)? {
        Some(t) if caller.sees(&t) => t,
        _ => return Err(Problem::not_found(&format!("tenant `{id}`"))),
    };
    charge_tenant(api, id)?;
    Ok(t)
}

/// 400 unless `id` is a tenant id.
fn tenant_id(id: &str) -> Result<(), Problem> {
    match crate::manifest::ids::TenantId::parse(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(
            Problem::new(StatusCode::BAD_REQUEST, "invalid-id", "not a tenant id")
                .field("id", "tenant ids match ^[a-z][a-z0-9_]{2,62}$"),
        ),
    }
}

/// Charge a request to tenant `id`'s rate limit — once the tenant is known to be the caller's:
/// asking about another tenant drains nothing of its bucket, and made-up ids add no buckets.
fn charge_tenant(api: &Api, id: &str) -> Result<(), Problem> {
    api.limiter
        .take(
            &format!("tenant:{id}"),
            api.limits.tenant_requests_per_second,
            api.limits.tenant_burst,
        )
        .map_err(|secs| too_many(format!("tenant `{id}` is over its rate limit"), secs))
}

#[utoipa::path(get, path = "/api/tenancy/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "Tenant id", pattern = "^[a-z][a-z0-9_]{2,62}$")), responses((status = 200, description = "The tenant (ETag: its version)", body = views::TenantView), (status = 400, description = "Not a tenant id", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn get_tenant(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let t = visible(&api, &caller, &id).await?;
    Ok(tenant_response(&t))
}

/// `GET /tenants/by-external-id/{system}/{value}` — e.g. `/crm/0015g00000XyZ`: the tenant
/// whose manifest declares that external id, as `GET /tenants/{id}` shows it.
#[utoipa::path(get, path = "/api/tenancy/v1/tenants/by-external-id/{system}/{value}", tag = "tenants", params(("system" = String, Path, description = "crm, billing, …", pattern = "^[A-Za-z0-9_-]{1,32}$"), ("value" = String, Path, pattern = "^[A-Za-z0-9._:@/+-]{1,128}$")), responses((status = 200, description = "The tenant", body = views::TenantView), (status = 400, description = "Invalid system or value", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn by_external_id(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((system, value)): Path<(String, String)>,
) -> Result<Response, Problem> {
    if system.is_empty()
        || system.len() > 32
        || !system
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-id",
            "not an external id system",
        )
        .field(
            "system",
            "1–32 letters, digits, `_` or `-` (e.g. crm, billing)",
        ));
    }
    // The manifest schema's rule for external id values.
    if value.is_empty()
        || value.len() > 128
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@/+-".contains(&b))
    {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "invalid-id", "not an external id")
                .field("value", "1–128 of A–Z a–z 0–9 . _ : @ / + -"),
        );
    }
    match api
        .store
        .tenant_by_external_id(&system, &value)
        .await
        .map_err(internal)?
    {
        Some(t) if caller.sees(&t) => Ok(tenant_response(&t)),
        _ => Err(Problem::not_found(&format!(
            "tenant with {system} id `{value}`"
        ))),
    }
}

fn tenant_response(t: &TenantRecord) -> Response {
    let spec = &t.manifest["spec"];
    let body = views::TenantView {
        tenant_id: t.tenant_id.clone(),
        organization_id: t.organization_id.clone(),
        profile: t.profile.clone(),
        state: t.state.clone(),
        region: t.region.clone(),
        plan: t.plan.clone(),
        environments: spec["environments"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|e| e["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        quotas: t.quotas.clone(),
        policies: t.policies.clone(),
        billing: t.billing.clone(),
        external_ids: spec["externalIds"].clone(),
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
        version: t.version,
    };
    let mut r = axum::Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", t.version)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

#[utoipa::path(get, path = "/api/tenancy/v1/tenants/{id}/environments", tag = "tenants", params(("id" = String, Path, description = "Tenant id", pattern = "^[a-z][a-z0-9_]{2,62}$")), responses((status = 200, description = "`items`: name, region, quota (effective: the environment's, else the tenant's, else the plan's ceiling), quotaSources (where each came from), isolation, retentionDays", body = views::EnvironmentList), (status = 400, description = "Not a tenant id", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn environments(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let t = visible(&api, &caller, &id).await?;
    let text =
        |e: &serde_json::Value, k: &str| e.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    // The plan's ceilings, as the daemon's last pass read the platform.
    let platform = api.platform.get();
    let ceilings = platform
        .plans
        .iter()
        .find(|p| p.value.metadata.name.as_str() == t.plan)
        .and_then(|p| serde_json::to_value(&p.value.spec.ceilings).ok());
    let tenant_quotas = &t.manifest["spec"]["quotas"];
    let items: Vec<views::EnvironmentView> = t.manifest["spec"]["environments"]
        .as_array()
        .map(|envs| {
            envs.iter()
                .map(|e| {
                    let (quota, quota_sources) =
                        effective_quotas(&e["quotas"], tenant_quotas, ceilings.as_ref(), &t.plan);
                    views::EnvironmentView {
                        name: text(e, "name").unwrap_or_default(),
                        region: text(e, "region").unwrap_or_else(|| t.region.clone()),
                        quota,
                        quota_sources,
                        isolation: text(e, "isolation"),
                        retention_days: e.get("retentionDays").and_then(|v| v.as_u64()),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(axum::Json(views::EnvironmentList { items }).into_response())
}

/// An environment's effective quotas (seed 001, "derived configuration"): each quota from the
/// environment's own, else the tenant's, else the plan's ceiling — and where each came from.
fn effective_quotas(
    environment: &serde_json::Value,
    tenant: &serde_json::Value,
    ceilings: Option<&serde_json::Value>,
    plan: &str,
) -> (serde_json::Value, serde_json::Value) {
    let mut quota = serde_json::Map::new();
    let mut sources = serde_json::Map::new();
    for key in ["storageGiB", "concurrentJobs", "apiRateLimit"] {
        let found = [
            (environment.get(key), "environment".to_owned()),
            (tenant.get(key), "tenant".to_owned()),
            (ceilings.and_then(|c| c.get(key)), format!("plan {plan}")),
        ]
        .into_iter()
        .find_map(|(v, from)| v.filter(|v| !v.is_null()).map(|v| (v.clone(), from)));
        if let Some((value, from)) = found {
            quota.insert(key.to_owned(), value);
            sources.insert(key.to_owned(), from.into());
        }
    }
    (quota.into(), sources.into())
}

#[utoipa::path(get, path = "/api/tenancy/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id", pattern = "^[A-Za-z0-9_]{1,64}$")), responses((status = 200, description = "The job: state (Queued, Running, Completed, Failed), progress, steps, updatedAt", body = views::JobView), (status = 400, description = "Not a job id", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such job in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn get_job(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "invalid-id", "not a job id")
                .field("id", "job ids are up to 64 letters, digits or `_`"),
        );
    }
    let job = api.store.job(&id).await.map_err(internal)?;
    let Some(job) = job else {
        return Err(Problem::not_found(&format!("job `{id}`")));
    };
    // A job is visible with its tenant — as applied, or (a tenant the API just created) as
    // committed.
    let organization = match api.store.tenant(&job.tenant_id).await.map_err(internal)? {
        Some(t) => Some(t.organization_id),
        None => {
            let (target, tenant) = (api.writes.clone(), job.tenant_id.clone());
            tokio::task::spawn_blocking(move || writes::committed(&target, &tenant))
                .await
                .map_err(internal)?
                .ok()
                .flatten()
                .map(|c| c.organization)
        }
    };
    if !organization.is_some_and(|o| caller.sees_ids(&job.tenant_id, &o)) {
        return Err(Problem::not_found(&format!("job `{id}`")));
    }
    // A job a later pass took over reports the outcome of the one that converged it.
    let outcome = api.store.outcome_of(job.clone()).await.map_err(internal)?;
    // Seed 000 spells job states capitalized (Queued, Running, Completed, Failed).
    let mut state = outcome.state.clone();
    if let Some(first) = state.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    let taken_over = outcome.job_id != job.job_id;
    Ok(axum::Json(views::JobView {
        id: job.job_id.clone(),
        job_id: job.job_id.clone(),
        tenant_id: job.tenant_id,
        action: job.action,
        state,
        created_at: rfc3339(job.created_at),
        updated_at: rfc3339(outcome.updated_at.max(job.updated_at)),
        progress: outcome.progress,
        steps: if taken_over { outcome.steps } else { job.steps },
        commit_sha: job.commit_sha,
        error: outcome.error,
        converged_by: taken_over.then(|| outcome.job_id.clone()),
        links: views::SelfLink {
            self_: format!("{BASE}/jobs/{}", job.job_id),
        },
    })
    .into_response())
}

/// A strict JSON body: a syntax error is 400, a wrong field or type 422 (naming the field), a
/// wrong content type 415, an oversized body 413 — each as a problem.
fn body<T>(
    b: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, Problem> {
    use axum::extract::rejection::JsonRejection as R;
    b.map(|axum::Json(v)| v).map_err(|e| {
        let text = e.body_text();
        match &e {
            R::JsonDataError(_) => {
                // "Failed to deserialize the JSON body into the target type: amount: invalid
                // type: …" or "…: unknown field `x`, expected …"
                let detail = text
                    .split_once("target type: ")
                    .map_or(text.as_str(), |x| x.1);
                let field = match detail.split_once(": ") {
                    Some((f, _)) if !f.contains(' ') => f.to_owned(),
                    _ => detail.split('`').nth(1).unwrap_or("body").to_owned(),
                };
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "the body does not match the schema",
                )
                .field(&field, detail)
            }
            R::JsonSyntaxError(_) => Problem::new(StatusCode::BAD_REQUEST, "malformed-json", text),
            R::MissingJsonContentType(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type",
                "send the body as Content-Type: application/json",
            ),
            _ => Problem::new(e.status(), "body", text),
        }
    })
}

/// A strict JSON body: an object (serde would also take an array for a struct), each field of
/// the right type and no other; errors name the field (422). A syntax error is 400, another
/// content type 415, an oversized body 413.
pub struct Strict<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Strict<T> {
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        let value = body(axum::Json::<serde_json::Value>::from_request(req, state).await)?;
        strict_value(value).map(Strict)
    }
}

/// `value` as a `T`, if it is a JSON object whose fields all fit; the problem names the field.
fn strict_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, Problem> {
    if !value.is_object() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "the body must be a JSON object",
        )
        .field("body", format!("a JSON object, not {}", json_kind(&value))));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        // An unknown field is reported at its parent; name the field itself.
        let field = match path.as_str() {
            "." => message.split('`').nth(1).unwrap_or("body").to_owned(),
            p => p.to_owned(),
        };
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "the body does not match the schema",
        )
        .field(&field, format!("{path}: {message}"))
    })
}

/// A reason that travels in a commit message: one line of at most `max` characters.
fn one_line_reason(
    reason: Option<&str>,
    max: usize,
    status: StatusCode,
    field: &str,
) -> Result<(), Problem> {
    if reason.is_some_and(|r| r.chars().count() > max || r.chars().any(char::is_control)) {
        let slug = if status == StatusCode::BAD_REQUEST {
            "invalid-query"
        } else {
            "invalid-body"
        };
        return Err(
            Problem::new(status, slug, "reason is not one line of text").field(
                field,
                format!("one line, at most {max} characters, no control characters"),
            ),
        );
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UsageBody {
    #[schema(pattern = "^[a-z][a-z0-9_]{2,62}$")]
    tenant_id: String,
    #[schema(pattern = "^[a-z][a-z0-9-]{0,31}$")]
    env: String,
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    resource: String,
    #[schema(minimum = 0)]
    amount: f64,
    #[schema(format = DateTime)]
    timestamp: String,
}

/// `POST /billing/usage` (seed 000 §9): 202 with the record id. A retry answers the first
/// record again (`"replayed": true`): retries are recognised by the `Idempotency-Key` header
/// (scoped to the tenant and the token) or, without one, by the report's tenant, environment,
/// resource and timestamp; the same key with a different report is a 409.
#[utoipa::path(post, path = "/api/tenancy/v1/billing/usage", tag = "billing", params(("Idempotency-Key" = Option<String>, Header, description = "The client’s key for this report, scoped to the tenant and the token: a retry with the same key answers the first record. Without one, the report’s tenant, environment, resource and timestamp deduplicate it.", pattern = "^[!-~]{1,255}$")), request_body(content = UsageBody, description = "Seed 000 §9", example = json!({"tenantId": "t_5001", "env": "prod", "resource": "storageGiBHours", "amount": 100.2, "timestamp": "2025-10-08T15:20:00Z"})), responses((status = 202, description = "Stored (`accepted`, `recordId`, `replayed`)", body = views::UsageAccepted), (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role or scope does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant or environment in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The key (or the natural key) was used for a different report", body = Problem, content_type = "application/problem+json"), (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn post_usage(
    State(api): State<Arc<Api>>,
    caller: Caller,
    headers: HeaderMap,
    b: Result<Strict<UsageBody>, Problem>,
) -> Result<Response, Problem> {
    caller.may(Action::ReportUsage)?;
    // Optional: without one, the report's natural key deduplicates (seed 000 §9 sends none).
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "idempotency-key",
                        "the Idempotency-Key header is not a key",
                    )
                    .field(
                        "Idempotency-Key",
                        "1–255 printable ASCII characters, unique per report",
                    )
                })?
                .to_owned(),
        ),
    };
    let u = b?.0;
    let t = match visible(&api, &caller, &u.tenant_id).await {
        Err(p) if p.status == 400 => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "not a tenant id",
            )
            .field("/tenantId", "tenant ids match ^[a-z][a-z0-9_]{2,62}$"));
        }
        other => other?,
    };
    let invalid = |field: &str, message: String| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "the usage report is not valid",
        )
        .field(field, message)
    };
    let envs: Vec<&str> = t.manifest["spec"]["environments"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["name"].as_str()).collect())
        .unwrap_or_default();
    if !envs.contains(&u.env.as_str()) {
        return Err(invalid(
            "/env",
            format!(
                "tenant `{}` has no environment `{}` (it has {})",
                t.tenant_id,
                u.env,
                envs.join(", ")
            ),
        ));
    }
    if u.resource.is_empty()
        || u.resource.len() > 64
        || !u
            .resource
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(invalid(
            "/resource",
            "1–64 letters, digits, `_`, `.` or `-`".into(),
        ));
    }
    if !u.amount.is_finite() || u.amount < 0.0 {
        return Err(invalid("/amount", "a finite number ≥ 0".into()));
    }
    if humantime::parse_rfc3339_weak(&u.timestamp).is_err() {
        return Err(invalid(
            "/timestamp",
            "an RFC 3339 time, e.g. 2025-10-08T15:20:00Z".into(),
        ));
    }
    let request_id = request_id_of(&headers);
    let key_given = key.is_some();
    let recorded = api
        .store
        .record_usage(&crate::store::UsageReport {
            idempotency_key: key,
            tenant_id: u.tenant_id,
            env: u.env,
            resource: u.resource,
            amount: u.amount,
            occurred_at: u.timestamp,
            reported_by: caller.name,
            request_id,
        })
        .await
        .map_err(internal)?;
    use crate::store::Recorded;
    match recorded {
        Recorded::New(id) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(views::UsageAccepted {
                accepted: true,
                record_id: id,
                replayed: false,
            }),
        )
            .into_response()),
        Recorded::Replayed(id) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(views::UsageAccepted {
                accepted: true,
                record_id: id,
                replayed: true,
            }),
        )
            .into_response()),
        Recorded::Conflict(id) => Err(match key_given {
            true => Problem::new(
                StatusCode::CONFLICT,
                "idempotency-conflict",
                format!("this Idempotency-Key was used for a different report (record {id})"),
            )
            .field("Idempotency-Key", "use a new key for a new report"),
            false => Problem::new(
                StatusCode::CONFLICT,
                "idempotency-conflict",
                format!(
                    "a different report of this tenant, environment, resource and time exists (record {id})"
                ),
            )
            .field(
                "Idempotency-Key",
                "send one to report several amounts for the same time",
            ),
        }),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GovernanceQuery {
    #[param(pattern = "^[a-z][a-z0-9_]{2,62}$")]
    tenant_id: String,
    #[param(pattern = "^[a-z][a-z0-9-]{0,31}$")]
    env: Option<String>,
}

/// `GET /governance/policies?tenantId=&env=` (seed 000 §8): the tenant's governance settings
/// and whether a policy module enforces each, from the decisions on its last reconciled commit.
#[utoipa::path(get, path = "/api/tenancy/v1/governance/policies", tag = "governance", params(GovernanceQuery), responses((status = 200, description = "`policies`: name, rule, enforced", body = views::PolicyBindings), (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant or environment in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn governance(
    State(api): State<Arc<Api>>,
    caller: Caller,
    q: Result<Query<GovernanceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let t = visible(&api, &caller, &q.tenant_id).await?;
    let spec = &t.manifest["spec"];
    let env = match &q.env {
        Some(name) => Some(
            spec["environments"]
                .as_array()
                .and_then(|e| e.iter().find(|e| e["name"] == name.as_str()))
                .ok_or_else(|| {
                    Problem::not_found(&format!("environment `{name}` of tenant `{}`", t.tenant_id))
                })?,
        ),
        None => None,
    };
    let decisions = api.store.decisions(&t.tenant_id).await.map_err(internal)?;
    // The decisions of the last commit judged, by module.
    let last = decisions.iter().map(|d| d.decided_at).max();
    let enforced = |module: &str| {
        decisions
            .iter()
            .filter(|d| Some(d.decided_at) == last && d.policy == module)
            .any(|d| d.mode == "enforce")
    };
    let policies = &spec["policies"];
    let retention = env
        .and_then(|e| e.get("retentionDays"))
        .or_else(|| policies.get("retentionDays"))
        .and_then(|v| v.as_u64());
    let judged = |name: &str, rule: &serde_json::Value, module: &str| views::PolicyBinding {
        name: name.into(),
        rule: rule.clone(),
        enforced: enforced(module),
        module: Some(module.into()),
        applied_by: None,
    };
    let mut out = vec![
        judged("DataResidency", &policies["dataResidency"], "residency"),
        judged("Encryption", &policies["encryption"], "encryption"),
        judged("Quotas", &spec["quotas"], "quotas"),
        judged("Lifecycle", &spec["lifecycle"], "lifecycle"),
    ];
    if let Some(days) = retention {
        out.push(views::PolicyBinding {
            name: "Retention".into(),
            rule: format!("{days} days").into(),
            enforced: t.profile != "mt-standard",
            module: None,
            applied_by: Some("object-store lifecycle rule".into()),
        });
    }
    if let Some(isolation) = env.and_then(|e| e.get("isolation")) {
        out.push(views::PolicyBinding {
            name: "Isolation".into(),
            rule: isolation.clone(),
            enforced: true,
            module: None,
            applied_by: None,
        });
    }
    Ok(axum::Json(views::PolicyBindings {
        tenant_id: t.tenant_id.clone(),
        env: q.env,
        commit_sha: decisions
            .iter()
            .find(|d| Some(d.decided_at) == last)
            .map(|d| d.commit_sha.clone()),
        policies: out,
    })
    .into_response())
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[schema(max_length = 500, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    reason: Option<String>,
}

/// `POST /tenants/{id}:action` — axum sees `{id}:action` as one path segment; this sends it
/// to the action.
async fn tenant_action(
    State(api): State<Arc<Api>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id_action): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let Some((id, action)) = id_action.split_once(':') else {
        let mut r = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
            "POST a tenant action: /tenants/{id}:activate or /tenants/{id}:suspend",
        )
        .into_response();
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, PATCH, DELETE"),
        );
        return Ok(r);
    };
    match action {
        "activate" => activate_tenant(api, caller, headers, id, body).await,
        "suspend" => suspend_tenant(api, caller, headers, id, body).await,
        other => Err(Problem::not_found(&format!(
            "action `{other}` (activate, suspend)"
        ))),
    }
}

/// Activate a tenant (seed 000 §2): a commit setting `lifecycle: Active`, judged before the
/// branch moves; 202 with the job that will converge it (queued at once, so it can be polled).
#[utoipa::path(post, path = "/api/tenancy/v1/tenants/{id}:activate", tag = "tenants", params(("id" = String, Path, description = "Tenant id", pattern = "^[a-z][a-z0-9_]{2,62}$"), ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")), request_body(content = Option<ActionBody>, content_type = "application/json"), responses((status = 202, description = "Committed; the job (`jobId`, `state`, `links.self`)", body = views::Accepted), (status = 400, description = "Not a tenant id", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Already Active", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid body, or refused by policy (e.g. a transition seed 001 forbids)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The repository or state store is unavailable; nothing was committed", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn activate_tenant(
    api: Arc<Api>,
    caller: Caller,
    headers: HeaderMap,
    id: &str,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    change_lifecycle(api, caller, headers, id, "activate", "Active", body).await
}

/// Suspend a tenant (seed 000 §10), with an optional one-line reason that travels on the
/// commit and the TENANCY_SUSPENDED event; 202 with the job.
#[utoipa::path(post, path = "/api/tenancy/v1/tenants/{id}:suspend", tag = "tenants", params(("id" = String, Path, description = "Tenant id", pattern = "^[a-z][a-z0-9_]{2,62}$"), ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")), request_body(content = Option<ActionBody>, content_type = "application/json", description = "Seed 000 §10", example = json!({"reason": "billing"})), responses((status = 202, description = "Committed; the job (`jobId`, `state`, `links.self`)", body = views::Accepted), (status = 400, description = "Not a tenant id", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Already Suspended", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid body, or refused by policy", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The repository or state store is unavailable; nothing was committed", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn suspend_tenant(
    api: Arc<Api>,
    caller: Caller,
    headers: HeaderMap,
    id: &str,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    change_lifecycle(api, caller, headers, id, "suspend", "Suspended", body).await
}

async fn change_lifecycle(
    api: Arc<Api>,
    caller: Caller,
    headers: HeaderMap,
    id: &str,
    action: &str,
    to: &'static str,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    caller.may(Action::Lifecycle)?;
    // No body, or a JSON object (`null` is not an object: the document says so).
    let reason = if body.is_empty() {
        None
    } else {
        // A body is JSON, said so: anything else is 415, never parsed as JSON anyway.
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json")
                    || (v.len() > 17
                        && v[..12].eq_ignore_ascii_case("application/")
                        && v.to_ascii_lowercase().ends_with("+json"))
            });
        if !json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type",
                "send the body as Content-Type: application/json (or no body)",
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "malformed-json", e.to_string()))?;
        strict_value::<ActionBody>(value)?.reason
    };
    one_line_reason(
        reason.as_deref(),
        500,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/reason",
    )?;
    commit_and_queue(
        &api,
        &caller,
        &headers,
        id,
        Transition {
            action,
            to,
            from: &[],
            reason: reason.as_deref(),
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    force: Option<bool>,
    #[param(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    reason: Option<String>,
}

/// `DELETE /tenants/{id}?force=` (seed 000 §12): a commit marking the tenant Deleted with its
/// confirmation; 202 with the job. Without `force` the tenant must be Suspended or Archived
/// first; `force=true` (admin only) deletes from any state.
#[utoipa::path(delete, path = "/api/tenancy/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "Tenant id", pattern = "^[a-z][a-z0-9_]{2,62}$"), DeleteQuery, ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")), responses((status = 202, description = "Committed; the job (`jobId`, `state`: Queued)", body = views::Accepted), (status = 400, description = "Not a tenant id, or invalid query", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Not suspended or archived (use force), or already deleted", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by policy", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The repository or state store is unavailable; nothing was committed", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn delete_tenant(
    State(api): State<Arc<Api>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let force = q.force.unwrap_or(false);
    caller.may(Action::Delete)?;
    one_line_reason(q.reason.as_deref(), 200, StatusCode::BAD_REQUEST, "reason")?;
    let reason = q.reason.as_deref().unwrap_or("deleted through the API");
    // Without force, only a closed tenant — as committed, so a suspension the API just made
    // counts before the daemon has converged it.
    commit_and_queue(
        &api,
        &caller,
        &headers,
        &id,
        Transition {
            action: "delete",
            to: "Deleted",
            from: if force {
                &[]
            } else {
                &["Suspended", "Archived"]
            },
            reason: Some(reason),
        },
    )
    .await
    .map_err(|mut p| {
        if p.kind.ends_with("/not-closed") {
            p.detail.push_str(", or delete with force=true");
        }
        p
    })
}

/// `If-Match` must name the version the caller saw (its ETag), when given; a tenant with no
/// applied version yet matches only `*`.
fn check_if_match(headers: &HeaderMap, id: &str, t: Option<&TenantRecord>) -> Result<(), Problem> {
    let Some(want) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    if want.trim() == "*" {
        return Ok(());
    }
    match t {
        Some(t) if want.trim() == format!("\"{}\"", t.version) => Ok(()),
        Some(t) => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            format!(
                "tenant `{id}` is at version {} (ETag \"{}\"), not {want}",
                t.version, t.version
            ),
        )),
        None => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            format!("tenant `{id}` has no applied version yet, so no ETag matches {want}"),
        )),
    }
}

fn request_id_of(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A committed write: its commit and the job that will converge it (none when the change
/// needs no job, e.g. a quota change).
struct Committed {
    sha: String,
    job_id: Option<String>,
}

/// Commit `edit` of tenant `id` (judged first: a refusal is 422 with the findings and nothing
/// is committed), then queue the job `job_action` that will converge it, so it can be polled
/// at once. `summary` is the commit's subject.
/// One API write: the tenant, the commit's subject, why (a `Reason:` trailer), the job that
/// will converge it, and the edit.
struct Write<'a> {
    id: &'a str,
    summary: String,
    reason: Option<&'a str>,
    job_action: Option<&'a str>,
    edit: Box<writes::Edit>,
}

async fn commit_write(
    api: &Arc<Api>,
    caller: &Caller,
    headers: &HeaderMap,
    w: Write<'_>,
) -> Result<Committed, Problem> {
    let Write {
        id,
        summary,
        reason,
        job_action,
        edit,
    } = w;
    let target = api.writes.clone();
    // Trailers: who asked, the request (the correlation id of what the daemon then does),
    // the tenant, and why (it travels on the tenant's events).
    let mut message = format!(
        "{summary}\n\nRequested-By: {}\nRequest-Id: {}\nTenant: {id}\n",
        caller.name,
        request_id_of(headers)
    );
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        message += &format!("Reason: {r}\n");
    }
    let (tenant, author) = (id.to_owned(), caller.name.clone());
    // One write at a time: concurrent writers queue here instead of racing on the branch.
    let _turn = api.write_lock.lock().await;
    // Judged as the daemon will judge it: against the tenant's last applied manifest.
    let applied = crate::reconcile::applied_baseline_of(&api.store, id)
        .await
        .map_err(internal)?;
    let committed = tokio::task::spawn_blocking(move || {
        writes::commit(&target, &tenant, &author, &message, &*edit, Some(applied))
    })
    .await
    .map_err(internal)?;
    let sha = committed.map_err(|e| write_problem(id, caller, e))?;
    let job_id = match job_action {
        Some(action) => {
            let job = crate::store::NewJob {
                tenant_id: id.to_owned(),
                commit_sha: sha.clone(),
                action: action.to_owned(),
                steps: Vec::new(),
            };
            api.store
                .queue_jobs(&sha, &[], std::slice::from_ref(&job), |_| false)
                .await
                .map_err(internal)?;
            Some(job.id())
        }
        None => None,
    };
    Ok(Committed { sha, job_id })
}

/// What a write that could not be made answers. Findings about anything outside a confined
/// caller's scope are not shown as they are: another tenant's id, file or values are never
/// told to a caller that could not read them (a uniqueness conflict says only that the value
/// is taken).
fn write_problem(id: &str, caller: &Caller, e: writes::WriteError) -> Problem {
    use writes::WriteError as W;
    match e {
        W::Refused(file, findings) => {
            let mut p = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused",
                format!(
                    "the change to `{id}` was refused by validation or policy; nothing was committed"
                ),
            );
            for f in findings {
                let own = f.tenant.as_deref().map_or(f.file == file, |t| t == id);
                let (field, message) = if caller.unconfined() {
                    (
                        f.pointer.clone().unwrap_or_else(|| f.location()),
                        format!("{}: {} ({})", f.rule, f.message, f.location()),
                    )
                } else if !own {
                    (
                        "body".to_owned(),
                        format!(
                            "{}: the change conflicts with a manifest outside this token's scope",
                            f.rule
                        ),
                    )
                } else if f.rule.starts_with("unique.") {
                    let field = f.pointer.clone().unwrap_or_else(|| "body".into());
                    let message = format!(
                        "{}: `{field}` is already used by another tenant ({})",
                        f.rule,
                        f.location()
                    );
                    (field, message)
                } else {
                    (
                        f.pointer.clone().unwrap_or_else(|| f.location()),
                        format!("{}: {} ({})", f.rule, f.message, f.location()),
                    )
                };
                p = p.field(&field, message);
            }
            p
        }
        W::Invalid(field, why) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            why.clone(),
        )
        .field(&field, why),
        W::Unchanged(why) => Problem::new(StatusCode::CONFLICT, "unchanged", why),
        W::Precondition(why) => Problem::new(StatusCode::CONFLICT, "not-closed", why),
        W::Exists(why) => Problem::new(StatusCode::CONFLICT, "exists", why),
        W::NotEditable(why) => Problem::new(StatusCode::CONFLICT, "not-editable", why),
        W::NoManifest(why) => Problem::not_found(&why),
        W::Race => Problem::new(
            StatusCode::CONFLICT,
            "race",
            "the branch kept moving; retry",
        ),
        W::Diverged(why) => Problem::new(StatusCode::CONFLICT, "diverged", why),
        W::Git(e) => {
            tracing::error!(error = %e, tenant = id, "API write: repository");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "repository",
                format!(
                    "the repository could not be read or written: {e}; nothing was committed, retry later"
                ),
            )
        }
    }
}

/// A tenant the caller may write, as the branch head declares it — a write judges its
/// preconditions against what is committed, applied yet or not (the API reads its own
/// writes) — with its applied record when it has one (for `If-Match`); "not found" outside the
/// caller's scope; charged to the tenant's rate limit once known to be the caller's.
async fn writable(
    api: &Arc<Api>,
    caller: &Caller,
    id: &str,
) -> Result<(writes::CommittedTenant, Option<TenantRecord>), Problem> {
    tenant_id(id)?;
    let (target, tenant) = (api.writes.clone(), id.to_owned());
    let committed = tokio::task::spawn_blocking(move || writes::committed(&target, &tenant))
        .await
        .map_err(internal)?
        .map_err(|e| write_problem(id, caller, e))?;
    let Some(c) = committed.filter(|c| caller.sees_ids(id, &c.organization)) else {
        return Err(Problem::not_found(&format!("tenant `{id}`")));
    };
    charge_tenant(api, id)?;
    let record = api.store.tenant(id).await.map_err(internal)?;
    Ok((c, record))
}

/// Commit `t`'s move to lifecycle `to` and answer 202 with the job and the commit.
/// What a lifecycle write is: the action (its commit's subject), the state it moves to, the
/// committed states it may start from (any when empty), and why (a `Reason:` trailer).
struct Transition<'a> {
    action: &'a str,
    to: &'static str,
    from: &'static [&'static str],
    reason: Option<&'a str>,
}

async fn commit_and_queue(
    api: &Arc<Api>,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    tr: Transition<'_>,
) -> Result<Response, Problem> {
    let Transition {
        action,
        to,
        from,
        reason,
    } = tr;
    let (committed, record) = writable(api, caller, id).await?;
    check_if_match(headers, id, record.as_ref())?;
    let id = id.to_owned();
    let edit = writes::lifecycle(id.clone(), to, reason.unwrap_or_default().to_owned(), from);
    let note = reason.map(|r| format!(" ({r})")).unwrap_or_default();
    let job_action = crate::reconcile::transition_action(committed.lifecycle, to);
    let c = commit_write(
        api,
        caller,
        headers,
        Write {
            id: &id,
            summary: format!("{action} {id} via the API{note}"),
            reason,
            job_action: Some(job_action),
            edit,
        },
    )
    .await?;
    let job_id = c.job_id.unwrap_or_default();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(views::Accepted {
            links: views::JobLinks {
                self_: format!("{BASE}/jobs/{job_id}"),
                tenant: format!("{BASE}/tenants/{id}"),
            },
            job_id,
            state: "Queued".into(),
            commit_sha: c.sha,
        }),
    )
        .into_response())
}

/// The platform catalog (regions and plans) as of the daemon's last pass: where topology
/// places a tenant's environments.
#[derive(Default)]
pub struct Platform(std::sync::RwLock<Arc<crate::validate::Catalog>>);

impl Platform {
    /// Keep `catalog`'s regions and plans (the tenants stay with the daemon).
    pub fn update(&self, catalog: &crate::validate::Catalog) {
        let next = crate::validate::Catalog {
            regions: catalog.regions.clone(),
            plans: catalog.plans.clone(),
            ..Default::default()
        };
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }

    fn get(&self) -> Arc<crate::validate::Catalog> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TopologyQuery {
    #[param(pattern = "^[a-z][a-z0-9-]{0,31}$")]
    env: Option<String>,
}

/// `GET /tenants/{id}/topology?env=` (seed 000 §4): where each environment lives in every
/// plane — database and schema, bucket and prefix, topic and partition key — as the planes name
/// them for the tenant's last reconciled manifest.
#[utoipa::path(get, path = "/api/tenancy/v1/tenants/{id}/topology", tag = "tenants", params(("id" = String, Path, description = "Tenant id", pattern = "^[a-z][a-z0-9_]{2,62}$"), TopologyQuery), responses((status = 200, description = "Where each environment lives: `db`, `objectStore`, `runtime` per environment (and at the top level when `env` is given)", body = views::Topology), (status = 400, description = "Not a tenant id, or invalid query", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant or environment in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The daemon has not finished its first pass", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn topology(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<TopologyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let t = visible(&api, &caller, &id).await?;
    let manifest: crate::manifest::Tenant =
        serde_json::from_value(t.manifest.clone()).map_err(internal)?;
    let platform = api.platform.get();
    if platform.regions.is_empty() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "the daemon has not finished its first pass yet; retry shortly",
        ));
    }
    // Each plane's placement of the tenant's environments, computed once per plane.
    let placed: Vec<_> = api
        .planes
        .planes
        .iter()
        .map(|entry| {
            (
                entry,
                crate::plan::desired(&platform, [&manifest], entry.kind),
            )
        })
        .collect();
    let mut envs = Vec::new();
    for e in &manifest.spec.environments {
        if q.env.as_deref().is_some_and(|want| want != e.name.as_str()) {
            continue;
        }
        let mut view = views::Placement {
            env: e.name.to_string(),
            region: e
                .region
                .as_ref()
                .unwrap_or(&manifest.spec.regions.preferred)
                .to_string(),
            db: None,
            object_store: None,
            runtime: None,
        };
        for (entry, desired) in &placed {
            let Some(d) = desired.iter().find(|d| d.environment == e.name.as_str()) else {
                continue;
            };
            let located = entry
                .plane
                .locate(d)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
            *match entry.kind {
                crate::plan::PlaneKind::Database => &mut view.db,
                crate::plan::PlaneKind::ObjectStore => &mut view.object_store,
                crate::plan::PlaneKind::Queue => &mut view.runtime,
            } = Some(located);
        }
        envs.push(view);
    }
    if let Some(want) = q.env.as_deref()
        && envs.is_empty()
    {
        return Err(Problem::not_found(&format!(
            "environment `{want}` of tenant `{id}`"
        )));
    }
    // One environment asked for: its placement at the top level too, as seed 000 shows it.
    let only = envs.first().filter(|_| q.env.is_some()).cloned();
    Ok(axum::Json(views::Topology {
        tenant_id: t.tenant_id.clone(),
        profile: t.profile.clone(),
        state: t.state.clone(),
        environments: envs,
        env: only.as_ref().map(|p| p.env.clone()),
        region: only.as_ref().map(|p| p.region.clone()),
        db: only.as_ref().and_then(|p| p.db.clone()),
        object_store: only.as_ref().and_then(|p| p.object_store.clone()),
        runtime: only.and_then(|p| p.runtime),
    })
    .into_response())
}

/// Environments in a request, as the manifest writes them: a name alone (`"dev"`) becomes
/// `{ name: dev }`; anything else is taken as given (the manifest schema judges it).
fn environments_json(items: &[serde_json::Value]) -> serde_json::Value {
    items
        .iter()
        .map(|i| match i {
            serde_json::Value::String(name) => serde_json::json!({ "name": name }),
            other => other.clone(),
        })
        .collect()
}

/// `POST /tenants` (seed 000 §1). Fields the manifest holds are checked by the same schema
/// and policies as a pull request; `regions` and `plan` default to the organization's
/// `spec.defaults`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    #[schema(pattern = "^[a-z][a-z0-9_]{2,62}$")]
    tenant_id: String,
    #[schema(pattern = "^[a-z][a-z0-9_]{2,62}$")]
    organization_id: String,
    #[schema(pattern = "^(mt-standard|st-dedicated|hybrid)$")]
    profile: String,
    /// Names (`["dev", "prod"]`) or the manifest's form (`{ name, region, quotas, … }`).
    #[schema(value_type = Vec<Object>)]
    #[schema(min_items = 1, max_items = 16)]
    environments: Vec<serde_json::Value>,
    display_name: Option<String>,
    #[schema(value_type = Option<Object>)]
    labels: Option<serde_json::Value>,
    #[schema(pattern = "^[a-z][a-z0-9-]{1,31}$")]
    plan: Option<String>,
    #[schema(value_type = Option<Object>)]
    regions: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    quotas: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    policies: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    billing: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    contacts: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    external_ids: Option<serde_json::Value>,
}

/// The new manifest's text: the repository's usual layout, one field per line.
fn render_tenant(
    caller: &str,
    request_id: &str,
    metadata: &[(&str, serde_json::Value)],
    spec: &[(&str, serde_json::Value)],
) -> String {
    use edit::flow;
    let mut out = format!(
        "# Created through the API by {caller} (request {request_id}).\napiVersion: tenancy.dev/v1\nkind: Tenant\nmetadata:\n"
    );
    for (k, v) in metadata {
        out.push_str(&format!("  {k}: {}\n", flow(v)));
    }
    out.push_str("spec:\n");
    for (k, v) in spec {
        match (k, v.as_array()) {
            (&"environments", Some(items)) => {
                out.push_str("  environments:\n");
                for e in items {
                    out.push_str(&format!("    - {}\n", flow(e)));
                }
            }
            _ => out.push_str(&format!("  {k}: {}\n", flow(v))),
        }
    }
    out
}

#[utoipa::path(post, path = "/api/tenancy/v1/tenants", tag = "tenants", request_body(content = CreateBody, description = "Seed 000 §1", example = json!({"tenantId": "t_5001", "organizationId": "org_acme", "profile": "mt-standard", "environments": ["dev", "prod"], "quotas": {"storageGiB": 200, "concurrentJobs": 10}, "policies": {"dataResidency": "in-region-only", "encryption": "kms-per-tenant"}, "billing": {"plan": "starter"}})), responses((status = 201, description = "Committed as Draft (`id`, `state`, `createdAt`, `commitSha`, `jobId`)", body = views::Created), (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role or scope does not allow it", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The tenant or its file exists", body = Problem, content_type = "application/problem+json"), (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field, or refused by schema or policy (findings in errors[])", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The repository or state store is unavailable; nothing was committed", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn create_tenant(
    State(api): State<Arc<Api>>,
    caller: Caller,
    headers: HeaderMap,
    b: Result<Strict<CreateBody>, Problem>,
) -> Result<Response, Problem> {
    caller.may(Action::Create)?;
    let b = b?.0;
    for (field, value) in [
        ("tenantId", &b.tenant_id),
        ("organizationId", &b.organization_id),
    ] {
        if crate::manifest::ids::TenantId::parse(value).is_err() {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!("{field} is not a valid id"),
            )
            .field(field, "ids match ^[a-z][a-z0-9_]{2,62}$"));
        }
    }
    // A confined token creates only inside its scope.
    if caller.tenant.is_some()
        || caller
            .organization
            .as_ref()
            .is_some_and(|o| *o != b.organization_id)
    {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token `{}` may not create tenants in organization `{}`",
                caller.name, b.organization_id
            ),
        ));
    }
    let id = b.tenant_id.clone();
    let request_id = request_id_of(&headers);
    let author = caller.name.clone();
    let scope = caller.clone();
    let edit = Box::new(move |head: &writes::AtHead<'_>| {
        if let Some((file, _, _)) = head.current {
            // Where it lives only when the caller could read it: ids are global, their
            // owners are not the caller's business.
            let org = head
                .catalog
                .tenant(&b.tenant_id)
                .map(|t| t.value.metadata.organization.to_string())
                .unwrap_or_default();
            return Err(writes::WriteError::Exists(
                if scope.sees_ids(&b.tenant_id, &org) {
                    format!("tenant `{}` already exists ({file})", b.tenant_id)
                } else {
                    format!("the tenant id `{}` is already taken", b.tenant_id)
                },
            ));
        }
        let org = head
            .catalog
            .organizations
            .iter()
            .find(|o| o.value.metadata.id.as_str() == b.organization_id)
            .ok_or_else(|| {
                writes::WriteError::Invalid(
                    "organizationId".into(),
                    format!(
                        "the repository declares no organization `{}`",
                        b.organization_id
                    ),
                )
            })?;
        let defaults = &org.value.spec.defaults;
        let regions = match (&b.regions, &defaults.regions) {
            (Some(r), _) => r.clone(),
            (None, Some(r)) => {
                serde_json::to_value(r).map_err(|e| writes::WriteError::Git(e.to_string()))?
            }
            (None, None) => {
                return Err(writes::WriteError::Invalid(
                    "regions".into(),
                    format!(
                        "give `regions` ({{ allowed: [...], preferred: ... }}) or set `spec.defaults.regions` on organization `{}`",
                        b.organization_id
                    ),
                ));
            }
        };
        let plan = b
            .plan
            .clone()
            .map(serde_json::Value::from)
            .or_else(|| b.billing.as_ref().and_then(|x| x.get("plan")).cloned())
            .or_else(|| defaults.plan.as_ref().map(|p| p.as_str().into()))
            .ok_or_else(|| {
                writes::WriteError::Invalid(
                    "plan".into(),
                    format!(
                        "give `plan` (or `billing.plan`), or set `spec.defaults.plan` on organization `{}`",
                        b.organization_id
                    ),
                )
            })?;
        let mut metadata = vec![
            ("id", b.tenant_id.as_str().into()),
            ("organization", b.organization_id.as_str().into()),
        ];
        if let Some(d) = &b.display_name {
            metadata.push(("displayName", d.as_str().into()));
        }
        if let Some(l) = &b.labels {
            metadata.push(("labels", l.clone()));
        }
        let environments = environments_json(&b.environments);
        let mut spec = vec![
            ("profile", b.profile.as_str().into()),
            ("lifecycle", "Draft".into()),
            ("plan", plan),
            ("regions", regions),
            ("environments", environments),
        ];
        for (k, v) in [
            ("quotas", &b.quotas),
            ("policies", &b.policies),
            ("billing", &b.billing),
            ("contacts", &b.contacts),
            ("externalIds", &b.external_ids),
        ] {
            if let Some(v) = v {
                spec.push((k, v.clone()));
            }
        }
        let dir = std::path::Path::new(&org.file)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = if dir.is_empty() {
            format!("{}.yaml", b.tenant_id)
        } else {
            format!("{dir}/{}.yaml", b.tenant_id)
        };
        let text = render_tenant(&author, &request_id, &metadata, &spec);
        // The file must read back as exactly the document intended: no value can become
        // structure, whatever it holds.
        let object = |fields: &[(&str, serde_json::Value)]| {
            serde_json::Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            )
        };
        let intended = serde_json::json!({
            "apiVersion": "tenancy.dev/v1",
            "kind": "Tenant",
            "metadata": object(&metadata),
            "spec": object(&spec),
        });
        if edit::Editor::new(&text, 0)?.document() != &intended {
            return Err(writes::WriteError::NotEditable(
                "the request's values do not survive as YAML unchanged".into(),
            ));
        }
        Ok((file, text))
    });
    let c = commit_write(
        &api,
        &caller,
        &headers,
        Write {
            id: &id,
            summary: format!("create {id} via the API"),
            reason: None,
            job_action: Some("create"),
            edit,
        },
    )
    .await?;
    let job_id = c.job_id.unwrap_or_default();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut r = (
        StatusCode::CREATED,
        axum::Json(views::Created {
            id: id.clone(),
            tenant_id: id.clone(),
            state: "Draft".into(),
            created_at: now,
            commit_sha: c.sha,
            links: views::CreatedLinks {
                self_: format!("{BASE}/tenants/{id}"),
                job: format!("{BASE}/jobs/{job_id}"),
            },
            job_id,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{BASE}/tenants/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// The body of `PATCH /tenants/{id}`, as the OpenAPI document names it; its schema is the
/// manifest's (see `openapi::ManifestSchemas`). The handler reads it as a JSON object, because a
/// merge patch tells a field set to null from a field left out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct PatchBody(serde_json::Map<String, serde_json::Value>);

/// Fields `PATCH /tenants/{id}` may change: (request field, manifest section, manifest key).
const PATCHABLE: &[(&str, &str, &str)] = &[
    ("profile", "spec", "profile"),
    ("plan", "spec", "plan"),
    ("regions", "spec", "regions"),
    ("environments", "spec", "environments"),
    ("quotas", "spec", "quotas"),
    ("policies", "spec", "policies"),
    ("billing", "spec", "billing"),
    ("contacts", "spec", "contacts"),
    ("externalIds", "spec", "externalIds"),
    ("displayName", "metadata", "displayName"),
    ("labels", "metadata", "labels"),
];

/// JSON merge patch (RFC 7396): objects merge key by key, `null` removes, anything else
/// replaces.
fn merge_patch(target: &serde_json::Value, patch: &serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(p) = patch else {
        return patch.clone();
    };
    // A patch object applies to the target's object, or to an empty one.
    let mut out = target.as_object().cloned().unwrap_or_default();
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&serde_json::Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    serde_json::Value::Object(out)
}

/// `PATCH /tenants/{id}` (seed 000 §5, §13): a JSON merge patch of the manifest's fields,
/// committed like every write. A profile change is a job (an mt-standard → st-dedicated
/// migration reports its status as it converges); other changes converge with the next pass.
#[utoipa::path(patch, path = "/api/tenancy/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "Tenant id", pattern = "^[a-z][a-z0-9_]{2,62}$"), ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")), request_body(content = PatchBody, content_type = "application/json", description = "Seed 000 §5", example = json!({"profile": "st-dedicated", "quotas": {"storageGiB": 500}})), responses((status = 200, description = "Committed (`tenantId`, `profile`, `state`, `commitSha`; `jobId` and `message` when the profile changes)", body = views::Patched), (status = 400, description = "Not a tenant id, or malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Nothing changes, or the manifest cannot be edited in place", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field, or refused by schema or policy", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The repository or state store is unavailable; nothing was committed", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn patch_tenant(
    State(api): State<Arc<Api>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    b: Result<Strict<PatchBody>, Problem>,
) -> Result<Response, Problem> {
    caller.may(Action::PatchDescriptive)?;
    let patch = b?.0.0;
    if patch.is_empty() {
        // An empty merge patch is valid and changes nothing, like asking for the state a
        // tenant is already in.
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "unchanged",
            "the patch changes nothing",
        )
        .field(
            "body",
            format!(
                "give one or more of {}",
                PATCHABLE.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    for k in patch.keys() {
        if !PATCHABLE.iter().any(|p| p.0 == k) {
            let why = match k.as_str() {
                "lifecycle" | "state" => {
                    "change the lifecycle with :activate, :suspend or DELETE".to_owned()
                }
                "tenantId" | "organizationId" | "id" => {
                    "a tenant's id and organization cannot change".to_owned()
                }
                _ => format!(
                    "unknown field; expected one of {}",
                    PATCHABLE.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                ),
            };
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!("`{k}` cannot be patched"),
            )
            .field(k, why));
        }
        // Commercial and structural fields are the admin's (the role table in auth.rs).
        caller.may(auth::patch_action(k))?;
    }
    let (t, record) = writable(&api, &caller, &id).await?;
    check_if_match(&headers, &id, record.as_ref())?;
    let new_profile = patch
        .get("profile")
        .and_then(|p| p.as_str())
        .map(str::to_owned);
    let profile_changes = new_profile.as_deref().is_some_and(|p| p != t.profile);
    let migration = profile_changes
        && t.profile == "mt-standard"
        && new_profile.as_deref() == Some("st-dedicated");
    let edit = writes::modify(id.clone(), move |e| {
        for (k, v) in &patch {
            let &(_, section, key) = PATCHABLE.iter().find(|p| p.0 == k).expect("checked");
            let v = match (k.as_str(), v) {
                ("environments", serde_json::Value::Array(items)) => environments_json(items),
                (_, serde_json::Value::Object(_)) => merge_patch(&e.document()[section][key], v),
                _ => v.clone(),
            };
            e.set(section, key, (!v.is_null()).then_some(&v))?;
        }
        Ok(())
    });
    let c = commit_write(
        &api,
        &caller,
        &headers,
        Write {
            id: &id,
            summary: format!("patch {id} via the API"),
            reason: None,
            job_action: profile_changes.then_some("change-profile"),
            edit,
        },
    )
    .await?;
    let message = if migration {
        "Migration in progress: mt-standard → st-dedicated (dedicated resources are provisioned; data movement is not part of this job)"
    } else {
        "Profile change in progress"
    };
    Ok(axum::Json(views::Patched {
        tenant_id: id.clone(),
        profile: new_profile.unwrap_or_else(|| t.profile.clone()),
        state: t.lifecycle.to_owned(),
        commit_sha: c.sha,
        job_state: c.job_id.as_ref().map(|_| "Queued".into()),
        message: c.job_id.as_ref().map(|_| message.into()),
        links: c.job_id.as_ref().map(|job_id| views::PatchLinks {
            job: format!("{BASE}/jobs/{job_id}"),
            tenant: format!("{BASE}/tenants/{id}"),
        }),
        job_id: c.job_id,
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WebhookBody {
    #[schema(pattern = "^https?://[^ ]+$", max_length = 2048)]
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[schema(min_length = 8, max_length = 256)]
    secret: String,
    /// One tenant; every tenant when absent (unconfined tokens only).
    #[schema(pattern = "^[a-z][a-z0-9_]{2,62}$")]
    tenant_id: Option<String>,
}

/// May `caller` manage webhooks of `tenant` (`*` = every tenant)?
async fn may_manage(api: &Api, caller: &Caller, tenant: &str) -> bool {
    if tenant == "*" {
        return caller.unconfined();
    }
    matches!(api.store.tenant(tenant).await, Ok(Some(t)) if caller.sees(&t))
}

/// `POST /webhooks` (seed 000 §7): 201 with the webhook — never its secret.
#[utoipa::path(post, path = "/api/tenancy/v1/webhooks", tag = "webhooks", request_body(content = WebhookBody, description = "Seed 000 §7", example = json!({"url": "https://ops.example.com/hooks/tenancy", "events": ["TENANCY_ACTIVATED", "TENANCY_SUSPENDED"], "secret": "whsec_demo"})), responses((status = 201, description = "Registered (the secret is never returned)", body = crate::store::Webhook), (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role or scope does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn create_webhook(
    State(api): State<Arc<Api>>,
    caller: Caller,
    b: Result<Strict<WebhookBody>, Problem>,
) -> Result<Response, Problem> {
    caller.may(Action::ManageWebhooks)?;
    let w = b?.0;
    let invalid = |field: &str, message: String| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "the webhook is not valid",
        )
        .field(field, message)
    };
    // The target must be public (https, no credentials, no internal address or name) —
    // checked again, after DNS resolution, at every delivery.
    if let Err(why) = api.guard.check_registration(&w.url).await {
        return Err(invalid("/url", why));
    }
    if let Some((i, e)) = w
        .events
        .iter()
        .enumerate()
        .find(|(_, e)| !crate::webhooks::EVENT_TYPES.contains(&e.as_str()))
    {
        return Err(invalid(
            &format!("/events/{i}"),
            format!(
                "`{e}` is not one of {}",
                crate::webhooks::EVENT_TYPES.join(", ")
            ),
        ));
    }
    if !(8..=256).contains(&w.secret.chars().count()) {
        return Err(invalid(
            "/secret",
            "8 to 256 characters (32 or more random ones recommended)".into(),
        ));
    }
    let tenant = match (&w.tenant_id, &caller.tenant) {
        (Some(t), _) => t.clone(),
        (None, Some(mine)) => mine.clone(),
        (None, None) => "*".to_owned(),
    };
    if tenant != "*" && crate::manifest::ids::TenantId::parse(&tenant).is_err() {
        return Err(invalid(
            "/tenantId",
            "tenant ids match ^[a-z][a-z0-9_]{2,62}$".into(),
        ));
    }
    if !may_manage(&api, &caller, &tenant).await {
        return Err(if tenant == "*" {
            Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a token confined to a tenant or organization registers webhooks for one of its tenants (tenantId)",
            )
        } else {
            Problem::not_found(&format!("tenant `{tenant}`"))
        });
    }
    let hook = api
        .store
        .put_webhook(
            &tenant,
            &w.url,
            &w.events,
            &w.secret,
            &crate::store::RetryPolicy::default(),
        )
        .await
        .map_err(internal)?;
    Ok((StatusCode::CREATED, axum::Json(hook)).into_response())
}

#[utoipa::path(get, path = "/api/tenancy/v1/webhooks", tag = "webhooks", responses((status = 200, description = "`items`: the webhooks in the caller’s scope", body = views::WebhookList), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn list_webhooks(State(api): State<Arc<Api>>, caller: Caller) -> Result<Response, Problem> {
    caller.may(Action::ManageWebhooks)?;
    let mut items = Vec::new();
    for h in api.store.webhooks().await.map_err(internal)? {
        if may_manage(&api, &caller, &h.tenant_id).await {
            items.push(h);
        }
    }
    Ok(axum::Json(views::WebhookList { items }).into_response())
}

#[utoipa::path(delete, path = "/api/tenancy/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "Webhook id")), responses((status = 204, description = "Removed"), (status = 400, description = "Not a webhook id", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such webhook in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn delete_webhook(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    caller.may(Action::ManageWebhooks)?;
    let hooks = api.store.webhooks().await.map_err(internal)?;
    let Some(h) = hooks.iter().find(|h| h.webhook_id == id) else {
        return Err(Problem::not_found(&format!("webhook `{id}`")));
    };
    if !may_manage(&api, &caller, &h.tenant_id).await {
        return Err(Problem::not_found(&format!("webhook `{id}`")));
    }
    api.store.remove_webhook(&id).await.map_err(internal)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /events`: the events the caller may see as Server-Sent Events, oldest first, then live.
/// Each SSE `id` is the event's outbox position, so a reconnect with `Last-Event-ID` resumes
/// right after it; `event` is the CloudEvents type and `data` the CloudEvent.
#[utoipa::path(get, path = "/api/tenancy/v1/events", tag = "events", params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")), responses((status = 200, description = "Server-Sent Events: `id` (position), `event` (CloudEvents type), `data` (the CloudEvent)", content_type = "text/event-stream"), (status = 400, description = "Last-Event-ID is not an event position", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
async fn event_stream(
    State(api): State<Arc<Api>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let after = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        None => None,
        Some(v) => Some(parse_position(v).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-header",
                "Last-Event-ID is not an event position",
            )
            .field("Last-Event-ID", "the `id` of an event this stream sent")
        })?),
    };
    struct Cursor {
        api: Arc<Api>,
        caller: Caller,
        after: Option<(i64, String, i64)>,
        queue: std::collections::VecDeque<crate::store::EventRecord>,
        orgs: std::collections::HashMap<String, Option<String>>,
    }
    let cursor = Cursor {
        api,
        caller,
        after,
        queue: Default::default(),
        orgs: Default::default(),
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.queue.pop_front() {
                c.after = Some((e.created_at, e.tenant_id.clone(), e.sequence));
                // An organization's token: only events of its tenants.
                if let Some(org) = &c.caller.organization {
                    if !c.orgs.contains_key(&e.tenant_id) {
                        let o = c
                            .api
                            .store
                            .tenant(&e.tenant_id)
                            .await
                            .ok()
                            .flatten()
                            .map(|t| t.organization_id);
                        c.orgs.insert(e.tenant_id.clone(), o);
                    }
                    if c.orgs[&e.tenant_id].as_deref() != Some(org.as_str()) {
                        continue;
                    }
                }
                let event = Event::default()
                    .id(format!("{}.{}.{}", e.created_at, e.tenant_id, e.sequence))
                    .event(e.event_type.clone())
                    .data(e.event.to_string());
                return Some((Ok::<_, std::convert::Infallible>(event), c));
            }
            match c
                .api
                .store
                .events(c.caller.tenant.as_deref(), c.after.clone(), 200)
                .await
            {
                Ok(batch) if !batch.is_empty() => c.queue.extend(batch),
                _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

/// `<created_at>.<tenant>.<sequence>` → the outbox position.
fn parse_position(s: &str) -> Option<(i64, String, i64)> {
    let (at, rest) = s.split_once('.')?;
    let (tenant, seq) = rest.rsplit_once('.')?;
    crate::manifest::ids::TenantId::parse(tenant).ok()?;
    Some((at.parse().ok()?, tenant.to_owned(), seq.parse().ok()?))
}
