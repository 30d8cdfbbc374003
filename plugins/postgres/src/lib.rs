//! The PostgreSQL plane.
//!
//! * `mt-standard`: a schema `<tenant>_<env>` in the shared database of its target;
//! * `st-dedicated` / `hybrid`: a database `<tenant>_<env>` of its own;
//! * in both cases a role `<tenant>_<env>` that owns only that schema or database, with
//!   `PUBLIC`'s rights revoked and a connection limit. Suspended or archived tenants' roles are
//!   `NOLOGIN` and their sessions are terminated; a confirmed deletion drops both.
//!
//! Observation is three catalog queries per target (roles, schemas, databases), however many
//! tenants. Identifiers are always quoted through [`ident`], and every statement is idempotent.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use std::collections::{BTreeMap, HashMap};
use tenancy_plane::{
    Change, FieldChange, Lifecycle, Op, Plane, PlaneError, PlaneFuture, Profile, TenantEnv,
};
use tokio::sync::Mutex;

const PLANE: &str = "postgres";

/// The `[postgres]` section of `tenancy.toml`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Section {
    #[serde(default)]
    targets: BTreeMap<String, SectionTarget>,
    /// Connection limit of a tenant role whose tenant declares no `concurrentJobs`.
    #[serde(default = "default_connection_limit")]
    default_connection_limit: i32,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SectionTarget {
    /// URL of a role that may create roles, schemas and databases; its database is the
    /// target's shared database.
    url: String,
}

fn default_connection_limit() -> i32 {
    10
}

/// Registers the PostgreSQL plane (`[postgres]`, a region's `targets.postgres`).
pub struct Factory;

impl tenancy_plane::PlaneFactory for Factory {
    fn about(&self) -> tenancy_plane::About {
        tenancy_plane::About::new(PLANE, "db", "PostgreSQL", "databases").required()
    }
    fn build(&self, section: &serde_json::Value) -> Result<Box<dyn Plane>, String> {
        let s: Section = tenancy_plane::factory::section(section)?;
        Ok(Box::new(PostgresPlane::new(PostgresConfig {
            targets: s.targets.into_iter().map(|(k, v)| (k, v.url)).collect(),
            default_connection_limit: s.default_connection_limit,
        })))
    }
}

/// Targets by logical name (from platform/regions.yaml) → connection URL of a role allowed to
/// create roles, schemas and databases. The URL's database is the target's shared database.
#[derive(Debug, Clone, Default)]
pub struct PostgresConfig {
    pub targets: BTreeMap<String, String>,
    /// Connection limit of a tenant role when the tenant declares no `concurrentJobs`.
    pub default_connection_limit: i32,
}

pub struct PostgresPlane {
    config: PostgresConfig,
    pools: Mutex<HashMap<String, PgPool>>,
}

/// Quote an SQL identifier. Ids reaching a plane are already `[a-z0-9_]` (checked once at the
/// manifest boundary); quoting anyway means no name can ever become SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote a string literal (for the few statements that cannot take bind parameters).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RoleState {
    login: bool,
    connection_limit: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerState {
    owner: String,
    public_revoked: bool,
}

#[derive(Debug, Default)]
struct Observed {
    roles: HashMap<String, RoleState>,
    schemas: HashMap<String, ContainerState>,
    databases: HashMap<String, ContainerState>,
}

fn err(e: impl std::fmt::Display) -> PlaneError {
    PlaneError::Unavailable {
        plane: PLANE,
        message: e.to_string(),
    }
}

impl PostgresPlane {
    pub fn new(config: PostgresConfig) -> Self {
        PostgresPlane {
            config,
            pools: Mutex::new(HashMap::new()),
        }
    }

    async fn pool(&self, target: &str) -> Result<PgPool, PlaneError> {
        let mut pools = self.pools.lock().await;
        if let Some(p) = pools.get(target) {
            return Ok(p.clone());
        }
        let url = self
            .config
            .targets
            .get(target)
            .ok_or_else(|| PlaneError::UnknownTarget {
                plane: PLANE,
                target: target.to_owned(),
            })?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| PlaneError::Unavailable {
                plane: PLANE,
                message: format!("target `{target}`: {e}"),
            })?;
        pools.insert(target.to_owned(), pool.clone());
        Ok(pool)
    }

    async fn observe(&self, target: &str, names: &[String]) -> Result<Observed, PlaneError> {
        let pool = self.pool(target).await?;
        let mut o = Observed::default();
        for r in sqlx::query(
            "SELECT rolname, rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = ANY($1)",
        )
        .bind(names)
        .fetch_all(&pool)
        .await
        .map_err(err)?
        {
            o.roles.insert(
                r.get("rolname"),
                RoleState {
                    login: r.get("rolcanlogin"),
                    connection_limit: r.get("rolconnlimit"),
                },
            );
        }
        // PUBLIC holds no right when no ACL entry starts with "=" (the PUBLIC grantee).
        for r in sqlx::query(
            "SELECT n.nspname AS name, pg_get_userbyid(n.nspowner) AS owner, \
             NOT EXISTS (SELECT 1 FROM unnest(coalesce(n.nspacl, '{}')) a WHERE a::text LIKE '=%') AS revoked \
             FROM pg_namespace n WHERE n.nspname = ANY($1)",
        )
        .bind(names)
        .fetch_all(&pool)
        .await
        .map_err(err)?
        {
            o.schemas.insert(r.get("name"), ContainerState { owner: r.get("owner"), public_revoked: r.get("revoked") });
        }
        for r in sqlx::query(
            "SELECT d.datname AS name, pg_get_userbyid(d.datdba) AS owner, \
             (d.datacl IS NOT NULL AND NOT EXISTS (SELECT 1 FROM unnest(d.datacl) a WHERE a::text LIKE '=%')) AS revoked \
             FROM pg_database d WHERE d.datname = ANY($1)",
        )
        .bind(names)
        .fetch_all(&pool)
        .await
        .map_err(err)?
        {
            o.databases.insert(r.get("name"), ContainerState { owner: r.get("owner"), public_revoked: r.get("revoked") });
        }
        Ok(o)
    }

    fn connection_limit(&self, d: &TenantEnv) -> i32 {
        d.concurrent_jobs
            .and_then(|j| i32::try_from(j).ok())
            .map(|j| j.max(1) * 2)
            .unwrap_or(self.config.default_connection_limit)
    }

    async fn plan_async(&self, desired: &[TenantEnv]) -> Result<Vec<Change>, PlaneError> {
        let mut by_target: BTreeMap<&str, Vec<&TenantEnv>> = BTreeMap::new();
        for d in desired.iter().filter(|d| d.lifecycle != Lifecycle::Draft) {
            by_target
                .entry(d.placement.target.as_str())
                .or_default()
                .push(d);
        }
        let mut changes = Vec::new();
        for (target, envs) in by_target {
            let names: Vec<String> = envs.iter().map(|d| d.qualified_name()).collect();
            let observed = self.observe(target, &names).await?;
            for d in envs {
                self.diff(d, &observed, &mut changes);
            }
        }
        Ok(changes)
    }

    fn diff(&self, d: &TenantEnv, o: &Observed, out: &mut Vec<Change>) {
        let name = d.qualified_name();
        let dedicated = d.profile != Profile::MtStandard;
        let container_kind = if dedicated { "database" } else { "schema" };
        let container = if dedicated {
            o.databases.get(&name)
        } else {
            o.schemas.get(&name)
        };
        let change = |resource: String, op, fields| Change::new(PLANE, d, resource, op, fields);
        let f = FieldChange::new;
        if d.lifecycle == Lifecycle::Deleted {
            // Both containers: a tenant moved from mt-standard to a dedicated profile keeps
            // its shared schema (data movement is not the plane's), and it holds the role.
            if o.schemas.contains_key(&name) {
                out.push(change(format!("schema {name}"), Op::Delete, Vec::new()));
            }
            if o.databases.contains_key(&name) {
                out.push(change(format!("database {name}"), Op::Delete, Vec::new()));
            }
            if o.roles.contains_key(&name) {
                out.push(change(format!("role {name}"), Op::Delete, Vec::new()));
            }
            return;
        }
        let want = RoleState {
            login: d.lifecycle == Lifecycle::Active,
            connection_limit: self.connection_limit(d),
        };
        match o.roles.get(&name) {
            None => out.push(change(
                format!("role {name}"),
                Op::Create,
                vec![
                    f("login", None, Some(want.login.to_string())),
                    f(
                        "connectionLimit",
                        None,
                        Some(want.connection_limit.to_string()),
                    ),
                ],
            )),
            Some(have) if *have != want => {
                let mut fields = Vec::new();
                if have.login != want.login {
                    fields.push(f(
                        "login",
                        Some(have.login.to_string()),
                        Some(want.login.to_string()),
                    ));
                }
                if have.connection_limit != want.connection_limit {
                    fields.push(f(
                        "connectionLimit",
                        Some(have.connection_limit.to_string()),
                        Some(want.connection_limit.to_string()),
                    ));
                }
                out.push(change(format!("role {name}"), Op::Update, fields));
            }
            Some(_) => {}
        }
        match container {
            None => out.push(change(
                format!("{container_kind} {name}"),
                Op::Create,
                vec![
                    f("owner", None, Some(name.clone())),
                    f("publicAccess", None, Some("revoked".into())),
                ],
            )),
            Some(have) => {
                let mut fields = Vec::new();
                if have.owner != name {
                    fields.push(f("owner", Some(have.owner.clone()), Some(name.clone())));
                }
                if !have.public_revoked {
                    fields.push(f(
                        "publicAccess",
                        Some("granted".into()),
                        Some("revoked".into()),
                    ));
                }
                if !fields.is_empty() {
                    out.push(change(
                        format!("{container_kind} {name}"),
                        Op::Update,
                        fields,
                    ));
                }
            }
        }
    }

    async fn apply_async(&self, c: &Change) -> Result<(), PlaneError> {
        let d = c.desired.as_ref().ok_or_else(|| PlaneError::Failed {
            plane: PLANE,
            resource: c.resource.clone(),
            message: "change carries no desired state".into(),
        })?;
        let pool = self.pool(&d.placement.target).await?;
        let name = d.qualified_name();
        let q = ident(&name);
        let limit = self.connection_limit(d);
        let login = if d.lifecycle == Lifecycle::Active {
            "LOGIN"
        } else {
            "NOLOGIN"
        };
        let kind = c.resource.split_whitespace().next().unwrap_or_default();
        let statements: Vec<String> = match (kind, c.op) {
            ("role", Op::Create) => {
                vec![format!("CREATE ROLE {q} {login} CONNECTION LIMIT {limit}")]
            }
            ("role", Op::Update) => {
                vec![format!("ALTER ROLE {q} {login} CONNECTION LIMIT {limit}")]
            }
            ("role", Op::Delete) => vec![format!("DROP ROLE IF EXISTS {q}")],
            ("schema", Op::Create) => vec![
                format!("CREATE SCHEMA IF NOT EXISTS {q} AUTHORIZATION {q}"),
                format!("REVOKE ALL ON SCHEMA {q} FROM PUBLIC"),
            ],
            ("schema", Op::Update) => {
                vec![
                    format!("ALTER SCHEMA {q} OWNER TO {q}"),
                    format!("REVOKE ALL ON SCHEMA {q} FROM PUBLIC"),
                ]
            }
            ("schema", Op::Delete) => vec![format!("DROP SCHEMA IF EXISTS {q} CASCADE")],
            ("database", Op::Create) => vec![
                format!("CREATE DATABASE {q} OWNER {q}"),
                format!("REVOKE ALL ON DATABASE {q} FROM PUBLIC"),
            ],
            ("database", Op::Update) => {
                vec![
                    format!("ALTER DATABASE {q} OWNER TO {q}"),
                    format!("REVOKE ALL ON DATABASE {q} FROM PUBLIC"),
                ]
            }
            ("database", Op::Delete) => vec![format!("DROP DATABASE IF EXISTS {q} WITH (FORCE)")],
            _ => {
                return Err(PlaneError::Failed {
                    plane: PLANE,
                    resource: c.resource.clone(),
                    message: "unknown resource kind".into(),
                });
            }
        };
        for sql in statements {
            if let Err(e) = sqlx::query(AssertSqlSafe(sql.clone())).execute(&pool).await {
                // Idempotence across a crash between CREATE and the catalog read: already there.
                let duplicate = e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|code| code == "42710" || code == "42P04");
                if !duplicate {
                    return Err(PlaneError::Failed {
                        plane: PLANE,
                        resource: c.resource.clone(),
                        message: format!("{sql}: {e}"),
                    });
                }
            }
        }
        // A role that may no longer log in loses the sessions it has.
        if kind == "role" && login == "NOLOGIN" {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}",
                literal(&name)
            )))
            .execute(&pool)
            .await
            .map_err(|e| PlaneError::Failed {
                plane: PLANE,
                resource: c.resource.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

impl Plane for PostgresPlane {
    fn name(&self) -> &'static str {
        PLANE
    }

    fn locate(&self, d: &TenantEnv) -> Result<serde_json::Value, PlaneError> {
        let url = self
            .config
            .targets
            .get(&d.placement.target)
            .ok_or_else(|| PlaneError::unknown_target(PLANE, &d.placement.target))?;
        let name = d.qualified_name();
        // mt-standard: a schema in the target's shared database; otherwise its own database.
        Ok(if d.profile == Profile::MtStandard {
            let shared = url
                .parse::<sqlx::postgres::PgConnectOptions>()
                .ok()
                .and_then(|o| o.get_database().map(str::to_owned))
                .unwrap_or_else(|| "postgres".into());
            serde_json::json!({
                "type": "postgres", "target": d.placement.target,
                "database": shared, "schema": name, "role": name,
            })
        } else {
            serde_json::json!({
                "type": "postgres", "target": d.placement.target,
                "database": name, "schema": "public", "role": name,
            })
        })
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

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("t_5001_dev"), "\"t_5001_dev\"");
        assert_eq!(ident("a\"; DROP"), "\"a\"\"; DROP\"");
        assert_eq!(literal("o'brien"), "'o''brien'");
    }
}
