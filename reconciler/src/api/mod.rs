//! The REST API `/api/tenancy/v1` (seed 000), served by `tenancy run` beside `/metrics`.
//!
//! This first slice is the read side: tenants (list with filters and cursor pagination, one by
//! id with its `ETag`), a tenant's environments, and jobs. Every request needs a bearer token
//! from `[api] tokens` (stored as SHA-256, compared in constant time); a token confined to a
//! tenant or an organization sees nothing else — another tenant is "not found", never
//! "forbidden", so ids do not leak. Every error is one RFC 9457 problem+json shape, and every
//! response carries `X-Request-Id` (the caller's, or a new one).

use crate::config::ApiToken;
use crate::manifest::{Lifecycle, Profile};
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
mod commit;
mod create;
mod events;
mod extract;
mod governance;
mod hooks;
mod jobs;
mod lifecycle;
mod middleware;
mod patch;
mod tenants;
#[cfg(test)]
mod tests;
mod topology;
mod usage;
use commit::*;
use create::*;
use events::*;
use extract::*;
use governance::*;
use hooks::*;
use jobs::*;
use lifecycle::*;
pub use middleware::ApiMetrics;
use middleware::*;
use patch::*;
use tenants::*;
pub use topology::Platform;
use topology::*;
use usage::*;

use auth::{Action, Caller, Limiter, too_many};
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
    writes::warm(&writes);
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
