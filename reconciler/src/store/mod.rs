//! The state store: what the reconciler has applied and decided, per tenant.
//!
//! SQLite (a file, the embedded default) or PostgreSQL (production, several replicas), chosen by
//! URL, behind one API through sqlx's `Any` driver. Each backend has its own migrations
//! (`reconciler/migrations/{sqlite,postgres}`); the few dialect differences (JSON columns) are
//! confined to [`Dialect`]. Tables follow seed 002 (`tenants`, `environments`, `tenant_audit`,
//! `tenant_jobs`, `tenant_webhooks`) plus `reconcile_status` and `policy_decisions`.
//!
//! Writes to a tenant use optimistic concurrency on its `version` column: a writer states the
//! version it read, and loses with [`StoreError::Conflict`] if someone wrote in between.

mod audit;
mod jobs;
mod outbox;
mod outcomes;
mod recording;
mod status;
mod tenants;
mod usage;
mod webhooks;

pub use jobs::{Job, JobState, JobStep, NewJob, StepState};
pub use outcomes::CommitOutcome;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Row};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
pub use usage::{Recorded, UsageReport};
pub use webhooks::{Delivery, DeliveryState, DueDelivery, RetryPolicy, Webhook};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported state store URL `{0}` (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl(String),
    #[error("state store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("state store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state store: cannot lock {} for its migrations: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "tenant `{tenant}` was changed concurrently (expected version {expected:?}, found {found:?}); re-read and retry"
    )]
    Conflict {
        tenant: String,
        expected: Option<i64>,
        found: Option<i64>,
    },
    #[error("state store holds invalid JSON in {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    /// A column holds a value this version does not know (written by a newer one?).
    #[error("state store holds an unknown {what} `{value}`")]
    Unknown { what: &'static str, value: String },
}

/// The value among `all` whose column spelling is `s`.
fn named<T: Copy>(
    all: &[T],
    spelling: fn(T) -> &'static str,
    what: &'static str,
    s: &str,
) -> Result<T, StoreError> {
    all.iter()
        .copied()
        .find(|v| spelling(*v) == s)
        .ok_or_else(|| StoreError::Unknown {
            what,
            value: s.to_owned(),
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A bound parameter that lands in a JSON column.
    fn json(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => format!("CAST(${n} AS JSONB)"),
        }
    }
}

/// SQL assembled in this module only from its own constants (column lists, the dialect's JSON
/// cast); every value is a bound parameter. That is the audit sqlx asks for.
fn safe(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// A JSON column (read as text) as `T`; invalid JSON is an error naming the column, never a
/// silent default.
fn json_column<T: serde::de::DeserializeOwned>(
    row: &sqlx::any::AnyRow,
    col: &'static str,
) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|source| StoreError::Json { what: col, source })
}

/// A stable identifier: the first 128 bits of SHA-256 over the parts, hex.
pub fn stable_id(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A tenant as the store keeps it: the columns seed 002 names, plus the whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantRecord {
    pub tenant_id: String,
    pub organization_id: String,
    pub profile: String,
    pub state: String,
    pub region: String,
    pub plan: String,
    pub quotas: serde_json::Value,
    pub policies: serde_json::Value,
    pub billing: serde_json::Value,
    pub manifest: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl TenantRecord {
    /// The record for a validated manifest (version and timestamps are set by the store).
    pub fn from_manifest(t: &crate::manifest::Tenant) -> TenantRecord {
        let value = |v: &dyn erased::Ser| v.json();
        TenantRecord {
            tenant_id: t.metadata.id.to_string(),
            organization_id: t.metadata.organization.to_string(),
            profile: value(&t.spec.profile)
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            state: value(&t.spec.lifecycle)
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            region: t.spec.regions.preferred.to_string(),
            plan: t.spec.plan.to_string(),
            quotas: value(&t.spec.quotas),
            policies: value(&t.spec.policies),
            billing: value(&t.spec.billing),
            manifest: value(t),
            created_at: 0,
            updated_at: 0,
            version: 0,
        }
    }
}

mod erased {
    /// Serialize any manifest part to a JSON value (they are plain data; this cannot fail).
    pub(crate) trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

/// A tenant in a list: who it is and where it stands, without its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSummary {
    pub tenant_id: String,
    pub organization_id: String,
    pub profile: String,
    pub state: String,
    pub region: String,
    pub plan: String,
}

/// Which tenants to list (every field optional, all must match).
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub organization: Option<String>,
    pub state: Option<String>,
    pub region: Option<String>,
    pub plan: Option<String>,
    pub profile: Option<String>,
    /// Only this tenant (a tenant-scoped caller).
    pub tenant: Option<String>,
}

/// Per-tenant reconcile status.
/// Where a tenant stands after its last reconcile (`reconcile_status.status`), spelled the
/// same in the column, the CLI, JSON and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconcileStatus {
    /// Converged at its last applied commit.
    Synced,
    /// A lifecycle job is running.
    Progressing,
    /// Kept at its last applied state (validation, policy, a refused change, an unreadable file).
    Blocked,
    /// A change failed; the daemon retries.
    Failed,
    /// Differences found and not corrected (detect-only).
    Drifted,
    /// Its manifest was removed without a confirmed deletion; resources kept.
    Orphaned,
}

impl ReconcileStatus {
    pub const ALL: [ReconcileStatus; 6] = [
        ReconcileStatus::Synced,
        ReconcileStatus::Progressing,
        ReconcileStatus::Blocked,
        ReconcileStatus::Failed,
        ReconcileStatus::Drifted,
        ReconcileStatus::Orphaned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileStatus::Synced => "synced",
            ReconcileStatus::Progressing => "progressing",
            ReconcileStatus::Blocked => "blocked",
            ReconcileStatus::Failed => "failed",
            ReconcileStatus::Drifted => "drifted",
            ReconcileStatus::Orphaned => "orphaned",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<ReconcileStatus, StoreError> {
        named(
            &ReconcileStatus::ALL,
            ReconcileStatus::as_str,
            "reconcile status",
            s,
        )
    }
}

impl std::fmt::Display for ReconcileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub tenant_id: String,
    pub status: ReconcileStatus,
    pub last_applied_commit: Option<String>,
    pub last_attempted_commit: Option<String>,
    pub blocked_reason: Option<String>,
    pub error: Option<String>,
    pub updated_at: i64,
    /// The file that declared the tenant when it was last reconciled.
    pub manifest_file: Option<String>,
}

/// A recorded policy decision (see [`crate::policy::Decision`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    pub tenant_id: String,
    pub commit_sha: String,
    pub operation: String,
    pub policy: String,
    pub digest: String,
    pub mode: String,
    pub blocks: bool,
    pub verdicts: serde_json::Value,
    pub failure: Option<String>,
    pub decided_at: i64,
    /// The previous version judged against ("commit <sha>", "last applied at <sha>", …).
    pub against: String,
}

/// One audit entry (`tenant_audit`): who did what to which tenant, with what outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    pub tenant_id: String,
    pub event_type: String,
    /// The commit author, `Name <email>`.
    pub actor: String,
    pub target: String,
    pub outcome: String,
    pub commit_sha: Option<String>,
    pub payload: serde_json::Value,
    pub correlation_id: String,
}

/// An event to publish: a CloudEvents 1.0 document whose `id` is stable (the same fact
/// recorded twice is one event) and whose per-tenant `tenantsequence` the store assigns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewEvent {
    pub event_id: String,
    pub tenant_id: String,
    pub event_type: String,
    pub event: serde_json::Value,
}

/// An event as stored in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub event_id: String,
    pub tenant_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event: serde_json::Value,
    pub created_at: i64,
    pub(crate) published_at: Option<i64>,
    pub attempts: i64,
}

/// Everything one reconcile of one tenant records, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct ReconcileRecord {
    pub status: Option<Status>,
    /// The manifest now applied, and the version it replaces (`None`: new tenant).
    pub tenant: Option<(TenantRecord, Option<i64>)>,
    pub decisions: Vec<DecisionRecord>,
    pub audit: Vec<AuditRecord>,
    pub events: Vec<NewEvent>,
    /// The tenant's lifecycle job, in its final state for this attempt.
    pub job: Option<Job>,
    /// What this pass did at the commit (the commit's note is rendered from these).
    pub outcome: Option<CommitOutcome>,
}

/// The file of a `sqlite:` URL; `None` for an in-memory database or another scheme.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    (path != ":memory:" && !path.is_empty()).then(|| PathBuf::from(path))
}

/// An exclusive lock on `<file>.lock`, held while the caller migrates the SQLite file: every
/// process (and every pool of one process) opening the store takes it, so migrations run one
/// after the other and the later ones find them applied. Released when dropped, or when the
/// process dies, so a crash mid-migration blocks no one.
async fn lock_for_migrations(db: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    tokio::task::spawn_blocking(move || {
        crate::lockfile::exclusive(&path).map_err(|source| StoreError::Lock { path, source })
    })
    .await
    .expect("the lock task does not panic")
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl Store {
    /// Open (creating the SQLite file if needed) and migrate. URLs: `sqlite://PATH`,
    /// `sqlite::memory:`, `postgres://user@host:port/db`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let (dialect, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let url = if rest.contains("mode=") || rest == ":memory:" {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            };
            (Dialect::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_owned())
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        // An in-memory SQLite database exists per connection: keep exactly one.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let sqlite = dialect == Dialect::Sqlite && !url.contains(":memory:");
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // Per connection: enforce foreign keys; with the write-ahead log, commit
                        // without an fsync per transaction (durable against a crash of the
                        // process, which is what the reconciler must survive; a power loss can
                        // lose the last transactions, which a rerun reconciles again).
                        for pragma in [
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        match dialect {
            Dialect::Sqlite => {
                sqlx::query("PRAGMA foreign_keys = ON")
                    .execute(&pool)
                    .await?;
                // sqlx locks nothing around SQLite migrations (on PostgreSQL it holds an
                // advisory lock): two processes opening a fresh file at once, an apply and
                // `tenancy events` say, would both run migration 1 and one of them fail.
                let _held = match sqlite_path(&url) {
                    Some(path) => Some(lock_for_migrations(&path).await?),
                    None => None,
                };
                SQLITE_MIGRATIONS.run(&pool).await?
            }
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store { pool, dialect })
    }

    /// [`Store::open`], but only a store that exists: `None` for a SQLite file that is not
    /// there (nothing was ever applied with it), so read-only commands never create one.
    pub(crate) async fn open_existing(url: &str) -> Result<Option<Store>, StoreError> {
        if url.starts_with("sqlite:") && !sqlite_path(url).is_some_and(|p| p.exists()) {
            return Ok(None);
        }
        Store::open(url).await.map(Some)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A value the daemon keeps between restarts.
    pub(crate) async fn state_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM reconciler_state WHERE state_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub(crate) async fn set_state_value(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reconciler_state (state_key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (state_key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many events wait to be published (one query).
    pub async fn pending_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// How many tenants have each status (one query).
    pub(crate) async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, CAST(COUNT(*) AS BIGINT) AS n FROM reconcile_status GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// Mark events published (after the broker acknowledged them).
    pub(crate) async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for id in ids {
            sqlx::query(
                "UPDATE outbox SET published_at = $1, attempts = attempts + 1 WHERE event_id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
