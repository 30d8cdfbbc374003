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

mod jobs;
mod outcomes;
mod usage;
mod webhooks;

pub use jobs::{Job, JobStep, NewJob};
pub use outcomes::CommitOutcome;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Row};
use std::time::{SystemTime, UNIX_EPOCH};
pub use usage::{Recorded, UsageReport};
pub use webhooks::{Delivery, DueDelivery, RetryPolicy, Webhook};

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

pub fn now_ms() -> i64 {
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
    pub trait Ser {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub tenant_id: String,
    /// Synced, Progressing, Blocked, Failed, Drifted.
    pub status: String,
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
    pub published_at: Option<i64>,
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
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 10000",
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
                SQLITE_MIGRATIONS.run(&pool).await?
            }
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store { pool, dialect })
    }

    /// [`Store::open`], but only a store that exists: `None` for a SQLite file that is not
    /// there (nothing was ever applied with it), so read-only commands never create one.
    pub async fn open_existing(url: &str) -> Result<Option<Store>, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            if path == ":memory:" || !std::path::Path::new(path).exists() {
                return Ok(None);
            }
        }
        Store::open(url).await.map(Some)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Insert or update a tenant. `expected_version` is the version the caller read (None: the
    /// caller believes the tenant is new). Returns the new version.
    pub async fn put_tenant(
        &self,
        record: &TenantRecord,
        expected_version: Option<i64>,
    ) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        self.put_tenant_on(&mut conn, record, expected_version)
            .await
    }

    async fn put_tenant_on(
        &self,
        conn: &mut AnyConnection,
        record: &TenantRecord,
        expected_version: Option<i64>,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let j = |n| self.dialect.json(n);
        // Both statements take the same parameters: $1 id, $2..$10 columns, $11 now, then
        // ($12) the version the caller read, for the update.
        let sql = match expected_version {
            None => format!(
                "INSERT INTO tenants (tenant_id, organization_id, profile, state, region, plan, quotas, policies, billing, manifest, created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, {}, {}, {}, {}, $11, $11, 1) ON CONFLICT (tenant_id) DO NOTHING",
                j(7),
                j(8),
                j(9),
                j(10)
            ),
            Some(_) => format!(
                "UPDATE tenants SET organization_id = $2, profile = $3, state = $4, region = $5, plan = $6, quotas = {}, policies = {}, billing = {}, manifest = {}, \
                 updated_at = $11, version = version + 1 WHERE tenant_id = $1 AND version = $12",
                j(7),
                j(8),
                j(9),
                j(10)
            ),
        };
        let mut query = sqlx::query(safe(sql))
            .bind(&record.tenant_id)
            .bind(&record.organization_id)
            .bind(&record.profile)
            .bind(&record.state)
            .bind(&record.region)
            .bind(&record.plan)
            .bind(record.quotas.to_string())
            .bind(record.policies.to_string())
            .bind(record.billing.to_string())
            .bind(record.manifest.to_string())
            .bind(now);
        if let Some(v) = expected_version {
            query = query.bind(v);
        }
        let affected = query.execute(&mut *conn).await?.rows_affected();
        if affected == 1 {
            return Ok(expected_version.map_or(1, |v| v + 1));
        }
        let found: Option<i64> =
            sqlx::query_scalar("SELECT version FROM tenants WHERE tenant_id = $1")
                .bind(&record.tenant_id)
                .fetch_optional(&mut *conn)
                .await?;
        Err(StoreError::Conflict {
            tenant: record.tenant_id.clone(),
            expected: expected_version,
            found,
        })
    }

    const TENANT_COLUMNS: &'static str = "tenant_id, organization_id, profile, state, region, plan, CAST(quotas AS TEXT) AS quotas, \
         CAST(policies AS TEXT) AS policies, CAST(billing AS TEXT) AS billing, CAST(manifest AS TEXT) AS manifest, created_at, updated_at, version";

    /// Tenants matching `filter`, by id, after the id `after` (a cursor), at most `limit`.
    pub async fn list_tenants(
        &self,
        filter: &TenantFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<TenantSummary>, StoreError> {
        // Only constant fragments are formatted in; every value is bound, in order.
        let mut clauses: Vec<String> = Vec::new();
        let mut values: Vec<&str> = Vec::new();
        for (column, value) in [
            ("organization_id", filter.organization.as_deref()),
            ("state", filter.state.as_deref()),
            ("region", filter.region.as_deref()),
            ("plan", filter.plan.as_deref()),
            ("profile", filter.profile.as_deref()),
            ("tenant_id", filter.tenant.as_deref()),
        ] {
            if let Some(v) = value {
                values.push(v);
                clauses.push(format!("{column} = ${}", values.len()));
            }
        }
        if let Some(a) = after {
            values.push(a);
            clauses.push(format!("tenant_id > ${}", values.len()));
        }
        let filter_sql = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT tenant_id, organization_id, profile, state, region, plan FROM tenants {filter_sql} \
             ORDER BY tenant_id LIMIT ${}",
            values.len() + 1
        );
        let mut q = sqlx::query(safe(sql));
        for v in values {
            q = q.bind(v);
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(TenantSummary {
                    tenant_id: r.try_get("tenant_id")?,
                    organization_id: r.try_get("organization_id")?,
                    profile: r.try_get("profile")?,
                    state: r.try_get("state")?,
                    region: r.try_get("region")?,
                    plan: r.try_get("plan")?,
                })
            })
            .collect()
    }

    /// The tenant whose manifest declares `externalIds.<system> = value` (`system` must be
    /// letters, digits, `_` or `-`; callers check it).
    pub async fn tenant_by_external_id(
        &self,
        system: &str,
        value: &str,
    ) -> Result<Option<TenantRecord>, StoreError> {
        let lookup = match self.dialect {
            Dialect::Sqlite => "json_extract(manifest, '$.spec.externalIds.' || $1) = $2",
            Dialect::Postgres => "manifest->'spec'->'externalIds'->>$1 = $2",
        };
        let row = sqlx::query(safe(format!(
            "SELECT {} FROM tenants WHERE {lookup} ORDER BY tenant_id LIMIT 1",
            Self::TENANT_COLUMNS
        )))
        .bind(system)
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::tenant_from_row).transpose()
    }

    fn tenant_from_row(row: &sqlx::any::AnyRow) -> Result<TenantRecord, StoreError> {
        let json = |col: &'static str| json_column::<serde_json::Value>(row, col);
        Ok(TenantRecord {
            tenant_id: row.try_get("tenant_id")?,
            organization_id: row.try_get("organization_id")?,
            profile: row.try_get("profile")?,
            state: row.try_get("state")?,
            region: row.try_get("region")?,
            plan: row.try_get("plan")?,
            quotas: json("quotas")?,
            policies: json("policies")?,
            billing: json("billing")?,
            manifest: json("manifest")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            version: row.try_get("version")?,
        })
    }

    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        let row = sqlx::query(safe(format!(
            "SELECT {} FROM tenants WHERE tenant_id = $1",
            Self::TENANT_COLUMNS
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::tenant_from_row).transpose()
    }

    /// Every applied tenant's manifest (JSON text, parsed by the caller so one bad row stands
    /// for its tenant only) and the commit it was applied at (one query): the baseline changes
    /// are judged against.
    /// `only`: that tenant's alone.
    pub async fn applied_manifests(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.tenant_id, CAST(t.manifest AS TEXT) AS manifest, s.last_applied_commit \
             FROM tenants t LEFT JOIN reconcile_status s ON s.tenant_id = t.tenant_id \
             WHERE $1 = '' OR t.tenant_id = $1",
        )
        .bind(only.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant_id")?,
                    r.try_get("manifest")?,
                    r.try_get("last_applied_commit")?,
                ))
            })
            .collect()
    }

    /// Every applied tenant with its applied state, its status and the file that last
    /// declared it (one query): those a revision no longer declares are looked for in it.
    pub async fn applied_files(
        &self,
    ) -> Result<Vec<(String, String, Option<String>, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.tenant_id, t.state, s.status, s.manifest_file \
             FROM tenants t LEFT JOIN reconcile_status s ON s.tenant_id = t.tenant_id ORDER BY t.tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant_id")?,
                    r.try_get("state")?,
                    r.try_get("status")?,
                    r.try_get("manifest_file")?,
                ))
            })
            .collect()
    }

    /// Every tenant, in id order (one query).
    pub async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let rows = sqlx::query(safe(format!(
            "SELECT {} FROM tenants ORDER BY tenant_id",
            Self::TENANT_COLUMNS
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::tenant_from_row).collect()
    }

    /// Record the outcome of a reconcile attempt.
    pub async fn set_status(&self, s: &Status) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        Self::set_status_on(&mut conn, s).await
    }

    async fn set_status_on(conn: &mut AnyConnection, s: &Status) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reconcile_status (tenant_id, status, last_applied_commit, last_attempted_commit, blocked_reason, error, updated_at, manifest_file) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id) DO UPDATE SET status = excluded.status, \
               last_applied_commit = COALESCE(excluded.last_applied_commit, reconcile_status.last_applied_commit), \
               last_attempted_commit = excluded.last_attempted_commit, blocked_reason = excluded.blocked_reason, \
               error = excluded.error, updated_at = excluded.updated_at, \
               manifest_file = COALESCE(excluded.manifest_file, reconcile_status.manifest_file)",
        )
        .bind(&s.tenant_id)
        .bind(&s.status)
        .bind(&s.last_applied_commit)
        .bind(&s.last_attempted_commit)
        .bind(&s.blocked_reason)
        .bind(&s.error)
        .bind(s.updated_at)
        .bind(&s.manifest_file)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Every tenant's last reconcile outcome, by tenant id.
    pub async fn statuses(&self) -> Result<Vec<Status>, StoreError> {
        let rows = sqlx::query(safe(format!(
            "SELECT {} FROM reconcile_status ORDER BY tenant_id",
            Self::STATUS_COLUMNS
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::status_from_row).collect()
    }

    const STATUS_COLUMNS: &'static str = "tenant_id, status, last_applied_commit, last_attempted_commit, blocked_reason, error, updated_at, manifest_file";

    fn status_from_row(r: &sqlx::any::AnyRow) -> Result<Status, StoreError> {
        Ok(Status {
            tenant_id: r.try_get("tenant_id")?,
            status: r.try_get("status")?,
            last_applied_commit: r.try_get("last_applied_commit")?,
            last_attempted_commit: r.try_get("last_attempted_commit")?,
            blocked_reason: r.try_get("blocked_reason")?,
            error: r.try_get("error")?,
            updated_at: r.try_get("updated_at")?,
            manifest_file: r.try_get("manifest_file")?,
        })
    }

    pub async fn status(&self, tenant: &str) -> Result<Option<Status>, StoreError> {
        let row = sqlx::query(safe(format!(
            "SELECT {} FROM reconcile_status WHERE tenant_id = $1",
            Self::STATUS_COLUMNS
        )))
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::status_from_row).transpose()
    }

    /// Record every decision of one tenant change in one transaction.
    pub async fn record_decisions(&self, decisions: &[DecisionRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.record_decisions_on(&mut tx, decisions).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_decisions_on(
        &self,
        conn: &mut AnyConnection,
        decisions: &[DecisionRecord],
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO policy_decisions (decision_id, tenant_id, commit_sha, operation, policy, digest, mode, blocks, verdicts, failure, decided_at, against) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {}, $10, $11, $12)",
            self.dialect.json(9)
        );
        for d in decisions {
            // Stable id: the same decision recorded twice (a retried commit) collides, not
            // duplicates; the same policy judging against two baselines is two decisions.
            let id = stable_id(&[
                &d.tenant_id,
                &d.commit_sha,
                &d.policy,
                &d.digest,
                &d.against,
            ]);
            sqlx::query(safe(format!("{sql} ON CONFLICT (decision_id) DO NOTHING")))
                .bind(id)
                .bind(&d.tenant_id)
                .bind(&d.commit_sha)
                .bind(&d.operation)
                .bind(&d.policy)
                .bind(&d.digest)
                .bind(&d.mode)
                .bind(d.blocks)
                .bind(d.verdicts.to_string())
                .bind(&d.failure)
                .bind(d.decided_at)
                .bind(&d.against)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Record one reconcile of one tenant — status, applied manifest, decisions, audit and
    /// events — atomically: either all of it is stored or none (the outbox pattern: an event
    /// exists exactly when the state change it describes does). Events already recorded (same
    /// id) are not duplicated. Returns the events this call added, with their sequence numbers.
    pub async fn record_reconcile(
        &self,
        r: &ReconcileRecord,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(status) = &r.status {
            Self::set_status_on(&mut tx, status).await?;
        }
        if let Some((tenant, expected)) = &r.tenant {
            self.put_tenant_on(&mut tx, tenant, *expected).await?;
        }
        self.record_decisions_on(&mut tx, &r.decisions).await?;
        if let Some(job) = &r.job {
            self.save_job_on(&mut tx, job).await?;
        }
        if let Some(o) = &r.outcome {
            Self::record_outcome_on(&mut tx, o).await?;
        }
        let now = now_ms();
        for (order, a) in r.audit.iter().enumerate() {
            let id = stable_id(&[&a.tenant_id, &a.correlation_id, &a.event_type, &a.target]);
            sqlx::query(safe(format!(
                "INSERT INTO tenant_audit (audit_id, tenant_id, event_type, actor, target, outcome, commit_sha, payload, correlation_id, occurred_at, entry_order) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, {}, $9, $10, $11) ON CONFLICT (audit_id) DO NOTHING",
                self.dialect.json(8)
            )))
            .bind(id)
            .bind(&a.tenant_id)
            .bind(&a.event_type)
            .bind(&a.actor)
            .bind(&a.target)
            .bind(&a.outcome)
            .bind(&a.commit_sha)
            .bind(a.payload.to_string())
            .bind(&a.correlation_id)
            .bind(now)
            .bind(order as i32)
            .execute(&mut *tx)
            .await?;
        }
        let mut added = Vec::new();
        for e in &r.events {
            let tenant = e.tenant_id.clone();
            let exists: Option<String> =
                sqlx::query_scalar("SELECT event_id FROM outbox WHERE event_id = $1")
                    .bind(&e.event_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                continue;
            }
            let sequence: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(sequence), 0) + 1 AS BIGINT) FROM outbox WHERE tenant_id = $1",
            )
            .bind(&tenant)
            .fetch_one(&mut *tx)
            .await?;
            let mut event = e.event.clone();
            event["tenantsequence"] = serde_json::json!(sequence);
            sqlx::query(safe(format!(
                "INSERT INTO outbox (event_id, tenant_id, sequence, event_type, event, created_at, attempts) \
                 VALUES ($1, $2, $3, $4, {}, $6, 0)",
                self.dialect.json(5)
            )))
            .bind(&e.event_id)
            .bind(&tenant)
            .bind(sequence)
            .bind(&e.event_type)
            .bind(event.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            added.push(EventRecord {
                event_id: e.event_id.clone(),
                tenant_id: tenant,
                sequence,
                event_type: e.event_type.clone(),
                event,
                created_at: now,
                published_at: None,
                attempts: 0,
            });
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Events in the outbox, oldest first (and in sequence within a tenant): all, or one
    /// tenant's; only those after the cursor `after` = (created_at, tenant, sequence) of the
    /// last one seen, for following; at most `limit`.
    pub async fn events(
        &self,
        tenant: Option<&str>,
        after: Option<(i64, String, i64)>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.select_events(tenant, after, limit, false).await
    }

    /// Events not yet published, oldest first and in sequence within each tenant.
    pub async fn pending_events(&self, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        self.select_events(None, None, limit, true).await
    }

    async fn select_events(
        &self,
        tenant: Option<&str>,
        after: Option<(i64, String, i64)>,
        limit: i64,
        pending_only: bool,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let (after_time, after_tenant, after_seq) = after.unwrap_or((-1, String::new(), 0));
        let rows = sqlx::query(
            "SELECT event_id, tenant_id, sequence, event_type, CAST(event AS TEXT) AS event, created_at, published_at, \
             CAST(attempts AS BIGINT) AS attempts FROM outbox \
             WHERE ($1 = '' OR tenant_id = $1) \
               AND (created_at > $2 OR (created_at = $2 AND (tenant_id > $3 OR (tenant_id = $3 AND sequence > $4)))) \
               AND ($6 = 0 OR published_at IS NULL) \
             ORDER BY created_at, tenant_id, sequence LIMIT $5",
        )
        .bind(tenant.unwrap_or(""))
        .bind(after_time)
        .bind(after_tenant)
        .bind(after_seq)
        .bind(limit)
        .bind(i32::from(pending_only))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("event")?;
                Ok(EventRecord {
                    event_id: r.try_get("event_id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    sequence: r.try_get("sequence")?,
                    event_type: r.try_get("event_type")?,
                    event: serde_json::from_str(&text).map_err(|source| StoreError::Json {
                        what: "event",
                        source,
                    })?,
                    created_at: r.try_get("created_at")?,
                    published_at: r.try_get("published_at")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// A value the daemon keeps between restarts.
    pub async fn state_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM reconciler_state WHERE state_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn set_state_value(&self, key: &str, value: &str) -> Result<(), StoreError> {
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
    pub async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
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
    pub async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
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

    /// A tenant's audit trail, oldest first: (event type, actor, outcome, commit, correlation).
    pub async fn audit(&self, tenant: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, event_type, actor, target, outcome, commit_sha, CAST(payload AS TEXT) AS payload, correlation_id \
             FROM tenant_audit WHERE tenant_id = $1 ORDER BY occurred_at, entry_order",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("payload")?;
                Ok(AuditRecord {
                    tenant_id: r.try_get("tenant_id")?,
                    event_type: r.try_get("event_type")?,
                    actor: r.try_get("actor")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    commit_sha: r.try_get("commit_sha")?,
                    payload: serde_json::from_str(&text).map_err(|source| StoreError::Json {
                        what: "payload",
                        source,
                    })?,
                    correlation_id: r.try_get("correlation_id")?,
                })
            })
            .collect()
    }

    /// A tenant's decisions, oldest first.
    pub async fn decisions(&self, tenant: &str) -> Result<Vec<DecisionRecord>, StoreError> {
        self.select_decisions("tenant_id", tenant).await
    }

    /// Decisions whose `column` (a constant of this module) is `value`.
    async fn select_decisions(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows = sqlx::query(safe(format!(
            "SELECT tenant_id, commit_sha, operation, policy, digest, mode, CAST(blocks AS INTEGER) AS blocks, \
             CAST(verdicts AS TEXT) AS verdicts, failure, decided_at, against FROM policy_decisions WHERE {column} = $1 \
             ORDER BY decided_at, tenant_id, policy, against"
        )))
        .bind(value)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let verdicts: String = r.try_get("verdicts")?;
                let blocks: i64 = r
                    .try_get::<i32, _>("blocks")
                    .map(i64::from)
                    .or_else(|_| r.try_get::<i64, _>("blocks"))?;
                Ok(DecisionRecord {
                    tenant_id: r.try_get("tenant_id")?,
                    commit_sha: r.try_get("commit_sha")?,
                    operation: r.try_get("operation")?,
                    policy: r.try_get("policy")?,
                    digest: r.try_get("digest")?,
                    mode: r.try_get("mode")?,
                    blocks: blocks != 0,
                    verdicts: serde_json::from_str(&verdicts).map_err(|source| {
                        StoreError::Json {
                            what: "verdicts",
                            source,
                        }
                    })?,
                    failure: r.try_get("failure")?,
                    decided_at: r.try_get("decided_at")?,
                    against: r.try_get("against")?,
                })
            })
            .collect()
    }
}
