//! `GET /tenants/{id}/topology`: where each environment runs, from the platform inventory.

use super::*;

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

    pub(super) fn get(&self) -> Arc<crate::validate::Catalog> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct TopologyQuery {
    env: Option<String>,
}

/// `GET /tenants/{id}/topology?env=` (seed 000 §4): where each environment lives in every
/// plane — database and schema, bucket and prefix, topic and partition key — as the planes name
/// them for the tenant's last reconciled manifest.
#[utoipa::path(get, path = "/api/tenancy/v1/tenants/{id}/topology", tag = "tenants", params(("id" = String, Path, description = "Tenant id"), TopologyQuery), responses((status = 200, description = "Where each environment lives: `db`, `objectStore`, `runtime` per environment (and at the top level when `env` is given)", body = views::Topology), (status = 400, description = "Not a tenant id, or invalid query", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such tenant or environment in the caller’s scope", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Over a rate limit (Retry-After)", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The daemon has not finished its first pass", body = Problem, content_type = "application/problem+json")), security(("bearer" = [])))]
pub(super) async fn topology(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<TopologyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let t = visible(&api, &caller, &id).await?;
    let manifest: crate::manifest::Tenant = serde_json::from_value(t.manifest.clone())
        .map_err(|e| Problem::unexpected("a stored manifest", &e))?;
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
                crate::placement::desired(&platform, [&manifest], entry.kind),
            )
        })
        .collect();
    let mut envs = Vec::new();
    for e in &manifest.spec.environments {
        if q.env.as_deref().is_some_and(|want| want != e.name.as_str()) {
            continue;
        }
        let mut view = views::Placement::new(
            e.name.to_string(),
            e.region
                .as_ref()
                .unwrap_or(&manifest.spec.regions.preferred)
                .to_string(),
        );
        for (entry, desired) in &placed {
            let Some(d) = desired.iter().find(|d| d.environment == e.name.as_str()) else {
                continue;
            };
            let located = entry
                .plane
                .locate(d)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
            view.put(entry.topology_key, located);
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
        runtime: only.as_ref().and_then(|p| p.runtime.clone()),
        planes: only.map(|p| p.planes).unwrap_or_default(),
    })
    .into_response())
}

/// Environments in a request, as the manifest writes them: a name alone (`"dev"`) becomes
/// `{ name: dev }`; anything else is taken as given (the manifest schema judges it).
pub(super) fn environments_json(items: &[serde_json::Value]) -> serde_json::Value {
    items
        .iter()
        .map(|i| match i {
            serde_json::Value::String(name) => serde_json::json!({ "name": name }),
            other => other.clone(),
        })
        .collect()
}
