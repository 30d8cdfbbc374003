//! `POST /billing/usage`: usage reports, deduplicated by idempotency key or natural key.

use super::*;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct UsageBody {
    tenant_id: String,
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
pub(super) async fn post_usage(
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
            .field(
                "/tenantId",
                crate::manifest::ids::TenantId::parse(&u.tenant_id)
                    .err()
                    .map_or_else(|| "not a tenant id".to_owned(), |e| e.explained()),
            ));
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
        .await?;
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
