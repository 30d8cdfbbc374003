//! Reading tenants: the list with filters and cursor pagination, one tenant by id or external id, its environments and effective quotas.

use super::*;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
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

pub(super) fn query<T>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Problem> {
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

#[utoipa::path(get, path = "/api/tenancy/v1/tenants", tag = "tenants", params(ListQuery), responses((status = 200, description = "A page of tenants (`items`, `nextCursor`)", body = views::TenantPage), (status = 400, description = "Invalid filter or cursor", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn list_tenants(
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
    let states = Lifecycle::ALL.map(Lifecycle::as_str);
    let profiles = Profile::ALL.map(Profile::as_str);
    if let Some(s) = q.state.as_deref().filter(|s| !states.contains(s)) {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "unknown state").field(
                "state",
                format!("`{s}` is not one of {}", states.join(", ")),
            ),
        );
    }
    if let Some(p) = q.profile.as_deref().filter(|p| !profiles.contains(p)) {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "unknown profile").field(
                "profile",
                format!("`{p}` is not one of {}", profiles.join(", ")),
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
        .await?;
    let next = (rows.len() as i64 > limit).then(|| {
        rows.truncate(limit as usize);
        rows.last().map(|t| t.tenant_id.clone())
    });
    Ok(page(&rows, next.flatten()))
}

pub(super) fn page(rows: &[TenantSummary], next: Option<String>) -> Response {
    axum::Json(views::TenantPage {
        items: rows.to_vec(),
        next_cursor: next,
    })
    .into_response()
}

/// An RFC 3339 time (UTC, milliseconds) for epoch milliseconds.
pub(super) fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// A tenant the caller may see, or "not found" (also for one outside the caller's scope).
pub(super) async fn visible(api: &Api, caller: &Caller, id: &str) -> Result<TenantRecord, Problem> {
    tenant_id(id)?;
    let t = match api.store.tenant(id).await? {
        Some(t) if caller.sees(&t) => t,
        _ => return Err(Problem::not_found(&format!("tenant `{id}`"))),
    };
    charge_tenant(api, id)?;
    Ok(t)
}

/// 400 unless `id` is a tenant id.
pub(super) fn tenant_id(id: &str) -> Result<(), Problem> {
    match crate::manifest::ids::TenantId::parse(id) {
        Ok(_) => Ok(()),
        Err(e) => Err(
            Problem::new(StatusCode::BAD_REQUEST, "invalid-id", "not a tenant id")
                .field("id", e.explained()),
        ),
    }
}

/// Charge a request to tenant `id`'s rate limit — once the tenant is known to be the caller's:
/// asking about another tenant drains nothing of its bucket, and made-up ids add no buckets.
pub(super) fn charge_tenant(api: &Api, id: &str) -> Result<(), Problem> {
    api.limiter
        .take(
            &format!("tenant:{id}"),
            api.limits.tenant_requests_per_second,
            api.limits.tenant_burst,
        )
        .map_err(|secs| too_many(format!("tenant `{id}` is over its rate limit"), secs))
}

#[utoipa::path(get, path = "/api/tenancy/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "Tenant id")), responses((status = 200, description = "The tenant (ETag: its version)", body = views::TenantView), (status = 400, description = "Not a tenant id", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn get_tenant(
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
pub(super) async fn by_external_id(
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
    match api.store.tenant_by_external_id(&system, &value).await? {
        Some(t) if caller.sees(&t) => Ok(tenant_response(&t)),
        _ => Err(Problem::not_found(&format!(
            "tenant with {system} id `{value}`"
        ))),
    }
}

pub(super) fn tenant_response(t: &TenantRecord) -> Response {
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

#[utoipa::path(get, path = "/api/tenancy/v1/tenants/{id}/environments", tag = "tenants", params(("id" = String, Path, description = "Tenant id")), responses((status = 200, description = "`items`: name, region, quota (effective: the environment's, else the tenant's, else the plan's ceiling), quotaSources (where each came from), isolation, retentionDays", body = views::EnvironmentList), (status = 400, description = "Not a tenant id", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn environments(
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
pub(super) fn effective_quotas(
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
