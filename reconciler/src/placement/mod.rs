//! Placement: from validated, governed manifests to the desired state each plane must converge
//! to.
//!
//! [`desired`] decides placement once — which region serves each tenant-environment (its own
//! `region`, else the tenant's preferred region) and which logical target of that region serves
//! the plane (`targets.<kind>`) — maps lifecycle to what the planes must enforce, and hands each
//! plane its own settings from the tenant's plan (`spec.<kind>`). The planes then diff this
//! against what they observe.

use crate::manifest::Lifecycle;
use crate::manifest::model::{Plan, Region, Tenant};
use crate::validate::Catalog;
use std::collections::HashMap;
use tenancy_plane::{Placement, TenantEnv, manifest_key};

fn lifecycle(t: &Tenant) -> Lifecycle {
    match t.spec.lifecycle {
        // Resources are removed only for a confirmed deletion; otherwise they are kept, closed.
        Lifecycle::Deleted => {
            let confirmed = t
                .spec
                .deletion
                .as_ref()
                .is_some_and(|d| d.confirm == t.metadata.id.as_str());
            if confirmed {
                Lifecycle::Deleted
            } else {
                Lifecycle::Archived
            }
        }
        other => other,
    }
}

/// The desired state of every tenant-environment of `tenants` for the plane `kind`.
/// Environments whose region is not declared (validation reports them), or whose region names
/// no target of this plane (a plane not every region has), are not placed in it.
pub fn desired<'a>(
    catalog: &Catalog,
    tenants: impl IntoIterator<Item = &'a Tenant>,
    kind: &str,
) -> Vec<TenantEnv> {
    let key = manifest_key(kind);
    let regions: HashMap<&str, &Region> = catalog
        .regions
        .iter()
        .map(|r| (r.value.metadata.name.as_str(), &r.value))
        .collect();
    // Each plan's `spec.<kind>`, once per plan.
    let options: HashMap<&str, serde_json::Value> = catalog
        .plans
        .iter()
        .map(|p: &crate::validate::Located<Plan>| {
            let spec = serde_json::to_value(&p.value.spec).unwrap_or_default();
            let own = spec.get(&key).cloned().unwrap_or_default();
            (p.value.metadata.name.as_str(), own)
        })
        .collect();
    let mut out = Vec::new();
    for t in tenants {
        let spec = &t.spec;
        let profile = spec.profile;
        for e in &spec.environments {
            let region_name = e.region.as_ref().unwrap_or(&spec.regions.preferred);
            let Some(target) = regions
                .get(region_name.as_str())
                .and_then(|r| r.spec.targets.get(&key))
            else {
                continue;
            };
            out.push(TenantEnv {
                tenant: t.metadata.id.to_string(),
                environment: e.name.to_string(),
                organization: t.metadata.organization.to_string(),
                profile,
                lifecycle: lifecycle(t),
                placement: Placement {
                    region: region_name.to_string(),
                    target: target.clone(),
                },
                retention_days: e.retention_days.or(spec.policies.retention_days),
                encryption_key: (spec.policies.encryption.as_deref() == Some("kms-per-tenant"))
                    .then(|| format!("alias/tenancy/{}", t.metadata.id)),
                storage_gib: e.quotas.storage_gib.or(spec.quotas.storage_gib),
                concurrent_jobs: e.quotas.concurrent_jobs.or(spec.quotas.concurrent_jobs),
                options: options.get(spec.plan.as_str()).cloned().unwrap_or_default(),
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
        let tenants: Vec<&Tenant> = c.tenants.iter().map(|t| &*t.value).collect();
        let db = desired(&c, tenants.iter().copied(), "postgres");
        let envs: usize = tenants.iter().map(|t| t.spec.environments.len()).sum();
        assert_eq!(db.len(), envs, "every environment is placed");
        let t5001 = db
            .iter()
            .find(|d| d.tenant == "t_5001" && d.environment == "prod")
            .expect("t_5001 prod");
        assert_eq!(t5001.placement.target, "pg-ap-south-1-shared");
        // Each plane gets its own settings of the tenant's plan, and only those.
        let topics = desired(&c, tenants.iter().copied(), "kafka");
        let kafka_5001 = topics
            .iter()
            .find(|d| d.tenant == "t_5001")
            .expect("t_5001");
        assert_eq!(kafka_5001.options["retentionMs"], 604_800_000);
        let t7003 = topics
            .iter()
            .find(|d| d.tenant == "t_7003")
            .expect("t_7003");
        assert_eq!(t7003.options["partitionsPerJob"], 2);
        assert!(
            t5001.options.is_null(),
            "plans say nothing for the database plane"
        );
        assert_eq!(
            t5001.encryption_key.as_deref(),
            Some("alias/tenancy/t_5001")
        );
        assert_eq!(
            t5001.retention_days,
            Some(365),
            "tenant retention applies where the environment sets none"
        );
        let objects = desired(&c, tenants.iter().copied(), "object-store");
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
        let mut unconfirmed = (*c.tenant("t_6004").expect("t_6004").value).clone();
        unconfirmed.spec.deletion = None;
        let kept = desired(&c, [&unconfirmed], "postgres");
        assert!(
            kept.iter()
                .all(|d| d.lifecycle == tenancy_plane::Lifecycle::Archived)
        );
    }
}
