//! `POST /tenants`: a new tenant, written as a manifest and committed.

use super::*;

/// `POST /tenants` (seed 000 §1). Fields the manifest holds are checked by the same schema
/// and policies as a pull request; `regions` and `plan` default to the organization's
/// `spec.defaults`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct CreateBody {
    tenant_id: String,
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
pub(super) fn render_tenant(
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
pub(super) async fn create_tenant(
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
        if let Err(e) = crate::manifest::ids::TenantId::parse(value) {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!("{field} is not a valid id"),
            )
            .field(field, e.explained()));
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
            ("lifecycle", Lifecycle::Draft.as_str().into()),
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
            if_match: false,
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
            state: Lifecycle::Draft.as_str().into(),
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
