//! `GET /governance/policies`: the policies bound to a tenant and their last decisions.

use super::*;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct GovernanceQuery {
    tenant_id: String,
    env: Option<String>,
}

/// `GET /governance/policies?tenantId=&env=` (seed 000 §8): the tenant's governance settings
/// and whether a policy module enforces each, from the decisions on its last reconciled commit.
#[utoipa::path(get, path = "/api/tenancy/v1/governance/policies", tag = "governance", params(GovernanceQuery), responses((status = 200, description = "`policies`: name, rule, enforced", body = views::PolicyBindings), (status = 400, description = "Invalid query", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant or environment in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn governance(
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
    let decisions = api.store.decisions(&t.tenant_id).await?;
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
            enforced: t.profile != Profile::MtStandard.as_str(),
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
