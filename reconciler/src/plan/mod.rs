//! Plan: from validated, governed manifests to the desired state each plane must converge to.
//!
//! [`desired`] decides placement once — which region serves each tenant-environment (its own
//! `region`, else the tenant's preferred region) and which logical target of that region serves
//! each plane — and maps lifecycle to what the planes must enforce. The planes then diff this
//! against what they observe.

use crate::manifest::model::{Plan, Region, Tenant};
use crate::manifest::{Lifecycle, Profile};
use crate::validate::Catalog;
use std::collections::HashMap;
use tenancy_plane::{Placement, TenantEnv};

/// Which plane a desired state is for (each reads a different target of the region).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneKind {
    Database,
    ObjectStore,
    Queue,
}

fn target(region: &Region, kind: PlaneKind) -> &str {
    let t = &region.spec.targets;
    match kind {
        PlaneKind::Database => &t.postgres,
        PlaneKind::ObjectStore => &t.object_store,
        PlaneKind::Queue => &t.kafka,
    }
}

fn lifecycle(t: &Tenant) -> tenancy_plane::Lifecycle {
    use tenancy_plane::Lifecycle as L;
    match t.spec.lifecycle {
        Lifecycle::Draft => L::Draft,
        Lifecycle::Active => L::Active,
        Lifecycle::Suspended => L::Suspended,
        Lifecycle::Archived => L::Archived,
        // Resources are removed only for a confirmed deletion; otherwise they are kept, closed.
        Lifecycle::Deleted => {
            let confirmed = t
                .spec
                .deletion
                .as_ref()
                .is_some_and(|d| d.confirm == t.metadata.id.as_str());
            if confirmed { L::Deleted } else { L::Archived }
        }
    }
}

/// The desired state of every tenant-environment of `tenants` for one plane. Environments
/// whose region is not declared are skipped (validation reports them).
pub fn desired<'a>(
    catalog: &Catalog,
    tenants: impl IntoIterator<Item = &'a Tenant>,
    kind: PlaneKind,
) -> Vec<TenantEnv> {
    let regions: HashMap<&str, &Region> = catalog
        .regions
        .iter()
        .map(|r| (r.value.metadata.name.as_str(), &r.value))
        .collect();
    let plans: HashMap<&str, &Plan> = catalog
        .plans
        .iter()
        .map(|p| (p.value.metadata.name.as_str(), &p.value))
        .collect();
    let mut out = Vec::new();
    for t in tenants {
        let spec = &t.spec;
        let kafka = plans
            .get(spec.plan.as_str())
            .and_then(|p| p.spec.kafka.as_ref());
        let profile = match spec.profile {
            Profile::MtStandard => tenancy_plane::Profile::MtStandard,
            Profile::StDedicated => tenancy_plane::Profile::StDedicated,
            Profile::Hybrid => tenancy_plane::Profile::Hybrid,
        };
        for e in &spec.environments {
            let region_name = e.region.as_ref().unwrap_or(&spec.regions.preferred);
            let Some(region) = regions.get(region_name.as_str()) else {
                continue;
            };
            let jobs = e.quotas.concurrent_jobs.or(spec.quotas.concurrent_jobs);
            out.push(TenantEnv {
                tenant: t.metadata.id.to_string(),
                environment: e.name.to_string(),
                organization: t.metadata.organization.to_string(),
                profile,
                lifecycle: lifecycle(t),
                placement: Placement {
                    region: region_name.to_string(),
                    target: target(region, kind).to_owned(),
                },
                retention_days: e.retention_days.or(spec.policies.retention_days),
                encryption_key: (spec.policies.encryption.as_deref() == Some("kms-per-tenant"))
                    .then(|| format!("alias/tenancy/{}", t.metadata.id)),
                storage_gib: e.quotas.storage_gib.or(spec.quotas.storage_gib),
                concurrent_jobs: jobs,
                topic_partitions: jobs.map(|j| {
                    let per_job = kafka.and_then(|k| k.partitions_per_job).unwrap_or(1);
                    u32::try_from(j)
                        .unwrap_or(u32::MAX)
                        .saturating_mul(per_job)
                        .max(1)
                }),
                topic_retention_ms: kafka.and_then(|k| k.retention_ms),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{ReadOptions, read_worktree};

    fn catalog() -> Catalog {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let snap = read_worktree(
            &root,
            &ReadOptions {
                path: "tenants".into(),
                ..Default::default()
            },
        )
        .expect("read");
        crate::validate::validate(&snap, &Default::default()).catalog
    }

    #[test]
    fn placement_follows_regions_and_lifecycle() {
        let c = catalog();
        let tenants: Vec<&Tenant> = c.tenants.iter().map(|t| &t.value).collect();
        let db = desired(&c, tenants.iter().copied(), PlaneKind::Database);
        let envs: usize = tenants.iter().map(|t| t.spec.environments.len()).sum();
        assert_eq!(db.len(), envs, "every environment is placed");
        let t5001 = db
            .iter()
            .find(|d| d.tenant == "t_5001" && d.environment == "prod")
            .expect("t_5001 prod");
        assert_eq!(t5001.placement.target, "pg-ap-south-1-shared");
        // Starter: 1 partition per job, 7 days of retention; enterprise: 2 per job.
        assert_eq!(t5001.topic_partitions, Some(10));
        assert_eq!(t5001.topic_retention_ms, Some(604_800_000));
        let t7003 = db.iter().find(|d| d.tenant == "t_7003").expect("t_7003");
        let jobs = t7003.concurrent_jobs.expect("jobs") as u32;
        assert_eq!(t7003.topic_partitions, Some(jobs * 2));
        assert_eq!(
            t5001.encryption_key.as_deref(),
            Some("alias/tenancy/t_5001")
        );
        assert_eq!(
            t5001.retention_days,
            Some(365),
            "tenant retention applies where the environment sets none"
        );
        let objects = desired(&c, tenants.iter().copied(), PlaneKind::ObjectStore);
        let t6001 = objects
            .iter()
            .find(|d| d.tenant == "t_6001")
            .expect("t_6001");
        assert_eq!(
            (
                t6001.placement.region.as_str(),
                t6001.placement.target.as_str()
            ),
            ("eu-central-1", "s3-eu-central-1")
        );
        // The example Deleted tenant is confirmed; an unconfirmed one keeps its resources.
        assert!(
            db.iter()
                .filter(|d| d.tenant == "t_6004")
                .all(|d| d.lifecycle == tenancy_plane::Lifecycle::Deleted)
        );
        let mut unconfirmed = c.tenant("t_6004").expect("t_6004").value.clone();
        unconfirmed.spec.deletion = None;
        let kept = desired(&c, [&unconfirmed], PlaneKind::Database);
        assert!(
            kept.iter()
                .all(|d| d.lifecycle == tenancy_plane::Lifecycle::Archived)
        );
    }
}
