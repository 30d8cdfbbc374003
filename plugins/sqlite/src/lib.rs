//! The embedded database plane: what `tenancy demo` uses when no PostgreSQL target is configured.
//!
//! Each tenant-environment gets its own SQLite file, `<root>/<target>/<tenant>_<env>.sqlite`,
//! whatever the profile: a file per tenant is the strongest isolation SQLite offers, so the
//! shared (schema) and dedicated (database) profiles map to the same thing here.
//!
//! SQLite has no roles, so the PostgreSQL semantics are mapped as faithfully as it allows:
//! * ownership: a `_tenancy` table in the file records tenant, environment, organization and
//!   profile (the "owner"); a file without it, or with other values, is drift;
//! * Suspended / Archived (no login, writes blocked): the file is made read-only (mode 0440),
//!   so a tenant process (not root, which ignores file modes) can no longer write; Active
//!   restores 0640;
//! * connection limit: not enforceable in SQLite; recorded in `_tenancy` for visibility;
//! * confirmed Deleted: the file (and its `-wal`/`-shm` companions) is removed.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tenancy_plane::{
    Change, FieldChange, Lifecycle, Op, Plane, PlaneError, PlaneFuture, TenantEnv,
};

/// The database plane's name (this is its embedded stand-in).
const PLANE: &str = "postgres";
const WRITABLE: u32 = 0o640;
const READ_ONLY: u32 = 0o440;

/// The database plane's embedded default: a SQLite file per tenant-environment under
/// `<root>/databases` (registered beside the PostgreSQL plane).
pub fn embedded(root: &Path) -> tenancy_plane::BuiltPlane {
    let dir = root.join("databases");
    tenancy_plane::BuiltPlane {
        backend: format!("embedded SQLite under {}", dir.display()),
        plane: Box::new(SqlitePlane::new(dir)),
    }
}

pub struct SqlitePlane {
    root: PathBuf,
}

/// What the plane observes of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    owner: BTreeMap<String, String>,
    writable: bool,
}

fn failed(resource: &str, e: impl std::fmt::Display) -> PlaneError {
    PlaneError::Failed {
        plane: PLANE,
        resource: resource.to_owned(),
        message: e.to_string(),
    }
}

impl SqlitePlane {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SqlitePlane { root: root.into() }
    }

    fn path(&self, d: &TenantEnv) -> PathBuf {
        self.root
            .join(&d.placement.target)
            .join(format!("{}.sqlite", d.qualified_name()))
    }

    fn owner(d: &TenantEnv) -> BTreeMap<String, String> {
        d.labels().into_iter().collect()
    }

    async fn observe(path: &Path) -> Result<Option<Observed>, String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let writable = meta.permissions().mode() & 0o200 != 0;
        let opts = SqliteConnectOptions::new().filename(path).read_only(true);
        let mut conn = opts.connect().await.map_err(|e| e.to_string())?;
        let rows = sqlx::query("SELECT key, value FROM _tenancy")
            .fetch_all(&mut conn)
            .await;
        let owner = match rows {
            Ok(rows) => rows
                .iter()
                .map(|r| (r.get::<String, _>("key"), r.get::<String, _>("value")))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        let _ = conn.close().await;
        Ok(Some(Observed { owner, writable }))
    }

    async fn plan_async(&self, desired: &[TenantEnv]) -> Result<Vec<Change>, PlaneError> {
        let mut changes = Vec::new();
        for d in desired.iter().filter(|d| d.lifecycle != Lifecycle::Draft) {
            let path = self.path(d);
            let resource = format!(
                "sqlite file {}/{}.sqlite",
                d.placement.target,
                d.qualified_name()
            );
            let observed = Self::observe(&path).await;
            let change = |op, fields| Change::new(PLANE, d, resource.clone(), op, fields);
            let want_writable = d.lifecycle == Lifecycle::Active;
            let f = FieldChange::new;
            match (d.lifecycle, observed) {
                (Lifecycle::Deleted, Ok(None)) => {}
                (Lifecycle::Deleted, _) => changes.push(change(Op::Delete, Vec::new())),
                (_, Ok(None)) => changes.push(change(
                    Op::Create,
                    vec![
                        f("owner", None, Some(d.qualified_name())),
                        f("writable", None, Some(want_writable.to_string())),
                    ],
                )),
                (_, Ok(Some(o))) => {
                    let mut fields = Vec::new();
                    if o.owner != Self::owner(d) {
                        fields.push(f(
                            "owner",
                            Some(format!("{:?}", o.owner)),
                            Some(d.qualified_name()),
                        ));
                    }
                    if o.writable != want_writable {
                        fields.push(f(
                            "writable",
                            Some(o.writable.to_string()),
                            Some(want_writable.to_string()),
                        ));
                    }
                    if !fields.is_empty() {
                        changes.push(change(Op::Update, fields));
                    }
                }
                (_, Err(why)) => changes.push(change(
                    Op::Update,
                    vec![f("file", Some(why), Some("repaired".into()))],
                )),
            }
        }
        Ok(changes)
    }

    async fn apply_async(&self, c: &Change) -> Result<(), PlaneError> {
        let d = c
            .desired
            .as_ref()
            .ok_or_else(|| failed(&c.resource, "change carries no desired state"))?;
        let path = self.path(d);
        if c.op == Op::Delete {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let p = PathBuf::from(format!("{}{suffix}", path.display()));
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(failed(&c.resource, e));
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(&c.resource, e))?;
        }
        // Writable while the owner record is (re)written, then the lifecycle's mode.
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(WRITABLE))
                .map_err(|e| failed(&c.resource, e))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Delete);
        let mut conn = opts.connect().await.map_err(|e| failed(&c.resource, e))?;
        let mut tx = conn.begin().await.map_err(|e| failed(&c.resource, e))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS _tenancy (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| failed(&c.resource, e))?;
        sqlx::query("DELETE FROM _tenancy")
            .execute(&mut *tx)
            .await
            .map_err(|e| failed(&c.resource, e))?;
        for (k, v) in Self::owner(d) {
            sqlx::query("INSERT INTO _tenancy (key, value) VALUES (?1, ?2)")
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(&c.resource, e))?;
        }
        tx.commit().await.map_err(|e| failed(&c.resource, e))?;
        conn.close().await.map_err(|e| failed(&c.resource, e))?;
        let mode = if d.lifecycle == Lifecycle::Active {
            WRITABLE
        } else {
            READ_ONLY
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| failed(&c.resource, e))
    }
}

impl Plane for SqlitePlane {
    fn name(&self) -> &'static str {
        PLANE
    }

    fn locate(&self, d: &TenantEnv) -> Result<serde_json::Value, PlaneError> {
        Ok(serde_json::json!({
            "type": "sqlite", "target": d.placement.target,
            "database": format!("{}.sqlite", d.qualified_name()),
            "path": self.path(d).display().to_string(),
        }))
    }

    fn plan<'a>(&'a self, desired: &'a [TenantEnv]) -> PlaneFuture<'a, Vec<Change>> {
        Box::pin(self.plan_async(desired))
    }

    fn apply<'a>(&'a self, change: &'a Change) -> PlaneFuture<'a, ()> {
        Box::pin(self.apply_async(change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy_plane::{Placement, Profile};

    fn env(tenant: &str, lifecycle: Lifecycle) -> TenantEnv {
        TenantEnv {
            tenant: tenant.into(),
            environment: "dev".into(),
            organization: "org_acme".into(),
            profile: Profile::MtStandard,
            lifecycle,
            placement: Placement {
                region: "ap-south-1".into(),
                target: "pg-ap-south-1-shared".into(),
            },
            retention_days: None,
            encryption_key: None,
            storage_gib: None,
            concurrent_jobs: None,
            options: serde_json::Value::Null,
        }
    }

    async fn converge(plane: &SqlitePlane, desired: &[TenantEnv]) -> Vec<Change> {
        tenancy_plane::converge(plane, desired)
            .await
            .unwrap_or_else(|e| panic!("converge: {e}"))
    }

    async fn can_write(path: &Path) -> bool {
        let Ok(mut conn) = SqliteConnectOptions::new().filename(path).connect().await else {
            return false;
        };
        sqlx::query("CREATE TABLE IF NOT EXISTS data (v TEXT); INSERT INTO data VALUES ('x')")
            .execute(&mut conn)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn files_converge_and_lifecycle_blocks_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let plane = SqlitePlane::new(dir.path());
        let mut desired = vec![
            env("t_5001", Lifecycle::Active),
            env("t_5003", Lifecycle::Draft),
        ];
        let first = converge(&plane, &desired).await;
        assert_eq!(first.len(), 1, "Draft provisions nothing");
        let file = dir.path().join("pg-ap-south-1-shared/t_5001_dev.sqlite");
        assert!(file.is_file());
        assert!(
            plane.plan(&desired).await.expect("plan").is_empty(),
            "converged"
        );
        assert!(can_write(&file).await, "an active tenant writes");

        // Drift: the owner record is tampered with.
        let mut conn = SqliteConnectOptions::new()
            .filename(&file)
            .connect()
            .await
            .expect("open");
        sqlx::query(
            "UPDATE _tenancy SET value = 'org_evil' WHERE key = 'tenancy.dev/organization'",
        )
        .execute(&mut conn)
        .await
        .expect("tamper");
        conn.close().await.expect("close");
        let drift = plane.plan(&desired).await.expect("plan");
        assert_eq!(drift[0].fields[0].field, "owner");
        converge(&plane, &desired).await;
        assert!(plane.plan(&desired).await.expect("plan").is_empty());

        // Suspension makes the file read-only; resume restores writes.
        desired[0].lifecycle = Lifecycle::Suspended;
        let suspend = converge(&plane, &desired).await;
        assert_eq!(suspend[0].fields[0].field, "writable");
        // The mode is what stops a tenant process's writes (root, as in CI, bypasses modes).
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, READ_ONLY);
        desired[0].lifecycle = Lifecycle::Active;
        converge(&plane, &desired).await;
        assert!(can_write(&file).await);

        // Confirmed deletion removes the file; again is a no-op.
        desired[0].lifecycle = Lifecycle::Deleted;
        converge(&plane, &desired).await;
        assert!(!file.exists());
        assert!(plane.plan(&desired).await.expect("plan").is_empty());
    }
}
