//! Lifecycle writes: activate, suspend, and delete with confirmation.

use super::*;

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    #[schema(max_length = 500, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    reason: Option<String>,
}

/// `POST /tenants/{id}:action` — axum sees `{id}:action` as one path segment; this sends it
/// to the action.
pub(super) async fn tenant_action(
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
#[utoipa::path(post, path = "/api/tenancy/v1/tenants/{id}:activate", tag = "tenants", params(("id" = String, Path, description = "Tenant id"), ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")), request_body(content = Option<ActionBody>, content_type = "application/json"), responses((status = 202, description = "Committed; the job (`jobId`, `state`, `links.self`)", body = views::Accepted), (status = 400, description = "Not a tenant id", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Already Active", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid body, or refused by policy (e.g. a transition seed 001 forbids)", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The repository or state store is unavailable; nothing was committed", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn activate_tenant(
    api: Arc<Api>,
    caller: Caller,
    headers: HeaderMap,
    id: &str,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    change_lifecycle(
        api,
        caller,
        headers,
        id,
        "activate",
        Lifecycle::Active,
        body,
    )
    .await
}

/// Suspend a tenant (seed 000 §10), with an optional one-line reason that travels on the
/// commit and the TENANCY_SUSPENDED event; 202 with the job.
#[utoipa::path(post, path = "/api/tenancy/v1/tenants/{id}:suspend", tag = "tenants", params(("id" = String, Path, description = "Tenant id"), ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")), request_body(content = Option<ActionBody>, content_type = "application/json", description = "Seed 000 §10", example = json!({"reason": "billing"})), responses((status = 202, description = "Committed; the job (`jobId`, `state`, `links.self`)", body = views::Accepted), (status = 400, description = "Not a tenant id", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Already Suspended", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid body, or refused by policy", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The repository or state store is unavailable; nothing was committed", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn suspend_tenant(
    api: Arc<Api>,
    caller: Caller,
    headers: HeaderMap,
    id: &str,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    change_lifecycle(
        api,
        caller,
        headers,
        id,
        "suspend",
        Lifecycle::Suspended,
        body,
    )
    .await
}

pub(super) async fn change_lifecycle(
    api: Arc<Api>,
    caller: Caller,
    headers: HeaderMap,
    id: &str,
    action: &str,
    to: Lifecycle,
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
pub(super) struct DeleteQuery {
    force: Option<bool>,
    #[param(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    reason: Option<String>,
}

/// `DELETE /tenants/{id}?force=` (seed 000 §12): a commit marking the tenant Deleted with its
/// confirmation; 202 with the job. Without `force` the tenant must be Suspended or Archived
/// first; `force=true` (admin only) deletes from any state.
#[utoipa::path(delete, path = "/api/tenancy/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "Tenant id"), DeleteQuery, ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")), responses((status = 202, description = "Committed; the job (`jobId`, `state`: Queued)", body = views::Accepted), (status = 400, description = "Not a tenant id, or invalid query", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Not suspended or archived (use force), or already deleted", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by policy", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The repository or state store is unavailable; nothing was committed", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn delete_tenant(
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
            to: Lifecycle::Deleted,
            from: if force {
                &[]
            } else {
                &[Lifecycle::Suspended, Lifecycle::Archived]
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
