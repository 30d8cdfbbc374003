//! `PATCH /tenants/{id}`: a JSON merge patch over the editable fields, applied to the manifest text.

use super::*;

/// The body of `PATCH /tenants/{id}`, as the OpenAPI document names it; its schema is the
/// manifest's (see `openapi::ManifestSchemas`). The handler reads it as a JSON object, because a
/// merge patch tells a field set to null from a field left out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct PatchBody(serde_json::Map<String, serde_json::Value>);

/// Fields `PATCH /tenants/{id}` may change: (request field, manifest section, manifest key).
pub(super) const PATCHABLE: &[(&str, &str, &str)] = &[
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
pub(super) fn merge_patch(
    target: &serde_json::Value,
    patch: &serde_json::Value,
) -> serde_json::Value {
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
#[utoipa::path(patch, path = "/api/tenancy/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "Tenant id"), ("If-Match" = Option<String>, Header, description = "The ETag the change is based on")), request_body(content = PatchBody, content_type = "application/json", description = "Seed 000 §5", example = json!({"profile": "st-dedicated", "quotas": {"storageGiB": 500}})), responses((status = 200, description = "Committed (`tenantId`, `profile`, `state`, `commitSha`; `jobId` and `message` when the profile changes)", body = views::Patched), (status = 400, description = "Not a tenant id, or malformed JSON", body = Problem, content_type = "application/problem+json"), (status = 403, description = "Role does not allow it", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 409, description = "Nothing changes, or the manifest cannot be edited in place", body = Problem, content_type = "application/problem+json"), (status = 412, description = "If-Match names another version", body = Problem, content_type = "application/problem+json"), (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field, or refused by schema or policy", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The repository or state store is unavailable; nothing was committed", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn patch_tenant(
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
    let (t, _) = writable(&api, &caller, &id).await?;
    let new_profile = patch
        .get("profile")
        .and_then(|p| p.as_str())
        .map(str::to_owned);
    let profile_changes = new_profile.as_deref().is_some_and(|p| p != t.profile);
    let migration = profile_changes
        && t.profile == Profile::MtStandard.as_str()
        && new_profile.as_deref() == Some(Profile::StDedicated.as_str());
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
            if_match: true,
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
        state: t.lifecycle.as_str().to_owned(),
        commit_sha: c.sha,
        job_state: c
            .job_id
            .as_ref()
            .map(|_| crate::store::JobState::Queued.api_name().into()),
        message: c.job_id.as_ref().map(|_| message.into()),
        links: c.job_id.as_ref().map(|job_id| views::PatchLinks {
            job: format!("{BASE}/jobs/{job_id}"),
            tenant: format!("{BASE}/tenants/{id}"),
        }),
        job_id: c.job_id,
    })
    .into_response())
}
