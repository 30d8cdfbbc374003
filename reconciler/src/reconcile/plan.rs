//! Stage 2, plan: each tenant's desired resources against what its planes hold.

use super::*;

/// Where one tenant-environment lives in one plane.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementView {
    pub environment: String,
    pub plane: String,
    pub region: String,
    pub target: String,
}

/// Everything the plan says about one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TenantPlan {
    pub tenant: String,
    pub file: String,
    pub lifecycle: String,
    pub placements: Vec<PlacementView>,
    pub changes: Vec<Change>,
    /// Validation errors and enforced policy denies: the tenant keeps its last applied state.
    pub blocked: Vec<String>,
    /// Planes that could not be observed for this tenant (unreachable, unconfigured target).
    pub errors: Vec<String>,
}

impl TenantPlan {
    pub fn refused(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.refused.is_some())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub commit: Option<String>,
    pub planes: Vec<PlaneView>,
    pub tenants: Vec<TenantPlan>,
    /// Tenant files removed from the repository (resources are kept until a confirmed
    /// `lifecycle: Deleted`).
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaneView {
    pub plane: String,
    pub backend: Option<String>,
    pub skipped: Option<String>,
}

impl PlanReport {
    pub fn changes(&self) -> usize {
        self.tenants.iter().map(|t| t.changes.len()).sum()
    }

    pub fn blocked(&self) -> usize {
        self.tenants
            .iter()
            .filter(|t| !t.blocked.is_empty() || t.refused().next().is_some())
            .count()
    }

    pub fn errors(&self) -> usize {
        self.tenants.iter().filter(|t| !t.errors.is_empty()).count()
    }
}

/// Plan `selected` tenants (all of the catalog when `None`) against live state.
pub async fn plan(
    planes: &Planes,
    evaluation: &Evaluation,
    selected: Option<&BTreeSet<String>>,
) -> PlanReport {
    let catalog = &evaluation.report.catalog;
    let blocked = evaluation.blocked();
    let chosen: Vec<&Located<Arc<Tenant>>> = catalog
        .tenants
        .iter()
        .filter(|t| selected.is_none_or(|s| s.contains(t.value.metadata.id.as_str())))
        .collect();
    let mut tenants: Vec<TenantPlan> = chosen
        .iter()
        .map(|t| TenantPlan {
            tenant: t.value.metadata.id.to_string(),
            file: t.file.clone(),
            lifecycle: t.value.spec.lifecycle.as_str().to_owned(),
            placements: Vec::new(),
            changes: Vec::new(),
            blocked: blocked
                .get(t.value.metadata.id.as_str())
                .cloned()
                .unwrap_or_default(),
            errors: Vec::new(),
        })
        .collect();
    let index: HashMap<String, usize> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.tenant.clone(), i))
        .collect();
    let eligible: Vec<&Tenant> = chosen
        .iter()
        .filter(|t| !blocked.contains_key(t.value.metadata.id.as_str()))
        .map(|t| &*t.value)
        .collect();
    // Every (plane, target) group is observed concurrently: they are independent services.
    let mut groups: Vec<(&dyn Plane, String, Vec<TenantEnv>)> = Vec::new();
    for PlaneEntry { kind, plane, .. } in &planes.planes {
        let envs = desired(catalog, eligible.iter().copied(), kind);
        let mut by_target: BTreeMap<String, Vec<TenantEnv>> = BTreeMap::new();
        for d in envs {
            let i = index[&d.tenant];
            tenants[i].placements.push(PlacementView {
                environment: d.environment.clone(),
                plane: (*kind).to_owned(),
                region: d.placement.region.clone(),
                target: d.placement.target.clone(),
            });
            by_target
                .entry(d.placement.target.clone())
                .or_default()
                .push(d);
        }
        groups.extend(
            by_target
                .into_iter()
                .map(|(target, group)| (plane.as_ref(), target, group)),
        );
    }
    let observed = futures_util::future::join_all(
        groups
            .iter()
            .map(|(plane, _, group)| async move { plane.plan(group).await }),
    )
    .await;
    for ((plane, target, group), result) in groups.iter().zip(observed) {
        match result {
            Ok(changes) => {
                for c in changes {
                    tenants[index[&c.tenant]].changes.push(c);
                }
            }
            Err(e) => {
                let served: BTreeSet<&str> = group.iter().map(|d| d.tenant.as_str()).collect();
                tracing::warn!(plane = plane.name(), %target, error = %e, "plan failed");
                for t in served {
                    tenants[index[t]].errors.push(e.to_string());
                }
            }
        }
    }
    // Within a tenant, changes follow the planes' apply order.
    let order: HashMap<&str, usize> = planes
        .planes
        .iter()
        .enumerate()
        .map(|(i, p)| (p.plane.name(), i))
        .collect();
    for t in &mut tenants {
        t.changes
            .sort_by_key(|c| order.get(c.plane).copied().unwrap_or(usize::MAX));
    }
    let mut views: Vec<PlaneView> = planes
        .planes
        .iter()
        .map(|p| PlaneView {
            plane: p.kind.to_owned(),
            backend: Some(p.backend.clone()),
            skipped: None,
        })
        .collect();
    views.extend(planes.skipped.iter().map(|(plane, why)| PlaneView {
        plane: plane.clone(),
        backend: None,
        skipped: Some(why.clone()),
    }));
    PlanReport {
        commit: evaluation.commit().map(str::to_owned),
        planes: views,
        tenants,
        removed: Vec::new(),
    }
}
