//! The embedded object plane: what `tenancy demo` uses when no S3 endpoint is configured.
//!
//! The same model as the S3 plane, on a local directory:
//! * `mt-standard` — a prefix `tenants/<tenant>/<env>/` in the shared bucket of its target
//!   (`<root>/<target>/`);
//! * `st-dedicated` and `hybrid` — a bucket of its own, `<root>/<bucket>/`, named after the
//!   tenant-environment with S3's rules (lowercase, no `_`, at most 63 characters).
//!
//! Each bucket or prefix holds `.tenancy.json`: the configuration S3 would keep as tags,
//! versioning, lifecycle, default encryption and (for a suspended tenant) a write block. Drift
//! in that file is detected and corrected like drift in S3. Markers are written atomically
//! (temporary file + rename), so a crash never leaves half a configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tenancy_plane::{
    Change, FieldChange, Lifecycle, Op, Plane, PlaneError, PlaneFuture, Profile, TenantEnv,
    bucket_name,
};

const PLANE: &str = "object-store";
const MARKER: &str = ".tenancy.json";

/// What the plane keeps for one bucket or prefix (shared with the S3 plane).
pub use tenancy_plane::object::ObjectConfig;

/// The object store's embedded default: directories under `<root>/objects` (registered
/// beside the S3 plane).
pub fn embedded(root: &Path) -> tenancy_plane::BuiltPlane {
    let dir = root.join("objects");
    tenancy_plane::BuiltPlane {
        backend: format!("embedded directory {}", dir.display()),
        plane: Box::new(LocalObjectPlane::new(dir)),
    }
}

pub struct LocalObjectPlane {
    root: PathBuf,
}

impl LocalObjectPlane {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalObjectPlane { root: root.into() }
    }

    /// Directory (relative to the root) that holds this tenant-environment's objects.
    fn location(&self, d: &TenantEnv) -> String {
        match d.profile {
            Profile::MtStandard => format!(
                "{}/tenants/{}/{}",
                d.placement.target, d.tenant, d.environment
            ),
            Profile::StDedicated | Profile::Hybrid => {
                bucket_name("tenancy", &d.tenant, &d.environment)
            }
        }
    }

    /// Every marker under the root, by location: a bounded walk (buckets at depth 1, prefixes at
    /// depth 4), one pass however many tenants. Unreadable markers are `Err` (= drift).
    fn observe(&self) -> Result<BTreeMap<String, Result<ObjectConfig, String>>, PlaneError> {
        let mut found = BTreeMap::new();
        let Ok(top) = std::fs::read_dir(&self.root) else {
            return Ok(found);
        };
        for bucket in top.flatten() {
            let name = bucket.file_name().to_string_lossy().into_owned();
            if !bucket.path().is_dir() {
                continue;
            }
            if bucket.path().join(MARKER).is_file() {
                found.insert(name.clone(), read_marker(&bucket.path().join(MARKER)));
            }
            let Ok(tenants) = std::fs::read_dir(bucket.path().join("tenants")) else {
                continue;
            };
            for tenant in tenants.flatten() {
                let Ok(envs) = std::fs::read_dir(tenant.path()) else {
                    continue;
                };
                for env in envs.flatten() {
                    let marker = env.path().join(MARKER);
                    if marker.is_file() {
                        let loc = format!(
                            "{name}/tenants/{}/{}",
                            tenant.file_name().to_string_lossy(),
                            env.file_name().to_string_lossy()
                        );
                        found.insert(loc, read_marker(&marker));
                    }
                }
            }
        }
        Ok(found)
    }

    fn plan_sync(&self, desired: &[TenantEnv]) -> Result<Vec<Change>, PlaneError> {
        let actual = self.observe()?;
        let mut changes = Vec::new();
        let mut seen = BTreeSet::new();
        for d in desired {
            let loc = self.location(d);
            if !seen.insert(loc.clone()) {
                continue;
            }
            let resource = match d.profile {
                Profile::MtStandard => format!("prefix {loc}/"),
                _ => format!("bucket {loc}"),
            };
            let change = |op, fields| Change::new(PLANE, d, resource.clone(), op, fields);
            match (d.lifecycle, actual.get(&loc)) {
                (Lifecycle::Draft, _) | (Lifecycle::Deleted, None) => {}
                (Lifecycle::Deleted, Some(_)) => changes.push(change(Op::Delete, Vec::new())),
                (_, None) => {
                    changes.push(change(Op::Create, ObjectConfig::desired(d).diff_from(None)))
                }
                (_, Some(current)) => {
                    let want = ObjectConfig::desired(d);
                    let fields = match current {
                        Ok(cur) => want.diff_from(Some(cur)),
                        Err(why) => vec![FieldChange {
                            field: "configuration".into(),
                            before: Some(why.clone()),
                            after: Some("rewritten".into()),
                        }],
                    };
                    if !fields.is_empty() {
                        changes.push(change(Op::Update, fields));
                    }
                }
            }
        }
        Ok(changes)
    }

    fn apply_sync(&self, change: &Change) -> Result<(), PlaneError> {
        let d = change.desired.as_ref().ok_or_else(|| PlaneError::Failed {
            plane: PLANE,
            resource: change.resource.clone(),
            message: "change carries no desired state".into(),
        })?;
        let dir = self.root.join(self.location(d));
        let failed = |e: std::io::Error| PlaneError::Failed {
            plane: PLANE,
            resource: change.resource.clone(),
            message: e.to_string(),
        };
        match change.op {
            Op::Delete => match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(e)),
                _ => Ok(()),
            },
            Op::Create | Op::Update => {
                std::fs::create_dir_all(&dir).map_err(failed)?;
                let json = serde_json::to_vec_pretty(&ObjectConfig::desired(d))
                    .map_err(|e| failed(std::io::Error::other(e)))?;
                // A name of this writer's own: two processes converging the same tenant (an
                // apply beside the daemon) must not write into, or rename, each other's file.
                static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let tmp = dir.join(format!("{MARKER}.{}-{n}.tmp", std::process::id()));
                let published = std::fs::write(&tmp, json)
                    .and_then(|()| std::fs::rename(&tmp, dir.join(MARKER)));
                if published.is_err() {
                    // Names are never reused: one left behind would stay forever.
                    let _ = std::fs::remove_file(&tmp);
                }
                published.map_err(failed)
            }
        }
    }
}

fn read_marker(path: &Path) -> Result<ObjectConfig, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid: {e}"))
}

impl Plane for LocalObjectPlane {
    fn name(&self) -> &'static str {
        PLANE
    }

    fn locate(&self, d: &TenantEnv) -> Result<serde_json::Value, PlaneError> {
        let location = self.location(d);
        Ok(match location.split_once('/') {
            Some((bucket, prefix)) => serde_json::json!({
                "type": "directory", "target": d.placement.target,
                "bucket": bucket, "prefix": format!("{prefix}/"),
                "path": self.root.join(&location).display().to_string(),
            }),
            None => serde_json::json!({
                "type": "directory", "target": d.placement.target,
                "bucket": location, "prefix": null,
                "path": self.root.join(&location).display().to_string(),
            }),
        })
    }

    fn plan<'a>(&'a self, desired: &'a [TenantEnv]) -> PlaneFuture<'a, Vec<Change>> {
        Box::pin(async move { self.plan_sync(desired) })
    }

    fn apply<'a>(&'a self, change: &'a Change) -> PlaneFuture<'a, ()> {
        Box::pin(async move { self.apply_sync(change) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy_plane::Placement;

    fn env(tenant: &str, env: &str, profile: Profile, lifecycle: Lifecycle) -> TenantEnv {
        TenantEnv {
            tenant: tenant.into(),
            environment: env.into(),
            organization: "org_acme".into(),
            profile,
            lifecycle,
            placement: Placement {
                region: "ap-south-1".into(),
                target: "s3-ap-south-1".into(),
            },
            retention_days: Some(30),
            encryption_key: None,
            storage_gib: Some(10),
            concurrent_jobs: None,
            options: serde_json::Value::Null,
        }
    }

    async fn converge(plane: &LocalObjectPlane, desired: &[TenantEnv]) -> Vec<Change> {
        tenancy_plane::converge(plane, desired)
            .await
            .unwrap_or_else(|e| panic!("converge: {e}"))
    }

    #[tokio::test]
    async fn apply_then_plan_is_empty_and_drift_is_corrected() {
        let dir = tempfile::tempdir().expect("tmp");
        let plane = LocalObjectPlane::new(dir.path());
        let desired = vec![
            env("t_5001", "dev", Profile::MtStandard, Lifecycle::Active),
            env("t_5001", "prod", Profile::MtStandard, Lifecycle::Active),
            env("t_5002", "prod", Profile::StDedicated, Lifecycle::Active),
            env("t_5003", "dev", Profile::Hybrid, Lifecycle::Draft),
        ];
        let first = converge(&plane, &desired).await;
        assert_eq!(first.len(), 3, "Draft provisions nothing: {first:#?}");
        assert!(first.iter().all(|c| c.op == Op::Create));
        assert!(
            dir.path()
                .join("s3-ap-south-1/tenants/t_5001/prod/.tenancy.json")
                .is_file()
        );
        assert!(
            dir.path()
                .join("tenancy-t-5002-prod/.tenancy.json")
                .is_file()
        );
        assert!(
            plane.plan(&desired).await.expect("plan").is_empty(),
            "converged"
        );

        // Drift: someone edits the tags and turns versioning off.
        let marker = dir.path().join("tenancy-t-5002-prod/.tenancy.json");
        let mut cfg: ObjectConfig =
            serde_json::from_slice(&std::fs::read(&marker).expect("read")).expect("json");
        cfg.tags.remove("tenancy.dev/tenant");
        cfg.versioning = false;
        std::fs::write(&marker, serde_json::to_vec(&cfg).expect("json")).expect("write");
        let drift = plane.plan(&desired).await.expect("plan");
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].op, Op::Update);
        let fields: Vec<&str> = drift[0].fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["tags", "versioning"]);
        converge(&plane, &desired).await;
        assert!(plane.plan(&desired).await.expect("plan").is_empty());

        // A garbage marker is drift too, never a crash.
        std::fs::write(&marker, b"{not json").expect("write");
        let drift = plane.plan(&desired).await.expect("plan");
        assert_eq!(drift[0].fields[0].field, "configuration");
        converge(&plane, &desired).await;
        assert!(plane.plan(&desired).await.expect("plan").is_empty());
    }

    /// Two writers converging the same tenant at once (an apply beside the daemon) both
    /// succeed, and the marker left is whole: each writes and renames a file of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_of_one_tenant_leave_a_whole_marker() {
        let dir = tempfile::tempdir().expect("tmp");
        let desired = vec![env(
            "t_5002",
            "prod",
            Profile::StDedicated,
            Lifecycle::Active,
        )];
        let changes = LocalObjectPlane::new(dir.path())
            .plan(&desired)
            .await
            .expect("plan");
        assert_eq!(changes.len(), 1, "{changes:#?}");
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (root, changes) = (dir.path().to_owned(), changes.clone());
                tokio::spawn(async move {
                    let plane = LocalObjectPlane::new(&root);
                    for _ in 0..500 {
                        for change in &changes {
                            plane.apply(change).await.expect("apply");
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer");
        }
        let plane = LocalObjectPlane::new(dir.path());
        assert!(plane.plan(&desired).await.expect("plan").is_empty());
    }

    #[tokio::test]
    async fn lifecycle_has_effects() {
        let dir = tempfile::tempdir().expect("tmp");
        let plane = LocalObjectPlane::new(dir.path());
        let mut desired = vec![env(
            "t_6004",
            "prod",
            Profile::StDedicated,
            Lifecycle::Active,
        )];
        converge(&plane, &desired).await;
        desired[0].lifecycle = Lifecycle::Suspended;
        let suspend = converge(&plane, &desired).await;
        assert_eq!(
            suspend[0].fields,
            vec![FieldChange {
                field: "writable".into(),
                before: Some("true".into()),
                after: Some("false".into())
            }]
        );
        desired[0].lifecycle = Lifecycle::Deleted;
        let delete = converge(&plane, &desired).await;
        assert_eq!(delete[0].op, Op::Delete);
        assert!(!dir.path().join("tenancy-t-6004-prod").exists());
        assert!(
            plane.plan(&desired).await.expect("plan").is_empty(),
            "deleting twice is a no-op"
        );
    }
}
