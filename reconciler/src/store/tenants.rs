//! Tenants as last applied: the records the API reads, written in the tenant's transaction.

use super::*;

impl Store {
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

    pub(super) async fn put_tenant_on(
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
    pub(crate) async fn applied_manifests(
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
    /// declared it, in id order: those a revision no longer declares are looked for in it.
    /// With `only`, just the tenants one of these files last declared.
    pub(crate) async fn applied_files(
        &self,
        only: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<Vec<(String, String, Option<String>, Option<String>)>, StoreError> {
        const SELECT: &str = "SELECT t.tenant_id, t.state, s.status, s.manifest_file \
             FROM tenants t LEFT JOIN reconcile_status s ON s.tenant_id = t.tenant_id";
        let rows = match only {
            // A commit changes a few files: one indexed lookup each, not every tenant.
            Some(files) if files.len() <= 64 => {
                let mut rows = Vec::new();
                for file in files {
                    rows.extend(
                        sqlx::query(safe(format!("{SELECT} WHERE s.manifest_file = $1")))
                            .bind(file)
                            .fetch_all(&self.pool)
                            .await?,
                    );
                }
                rows
            }
            _ => {
                sqlx::query(safe(format!("{SELECT} ORDER BY t.tenant_id")))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut out: Vec<(String, String, Option<String>, Option<String>)> = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant_id")?,
                    r.try_get("state")?,
                    r.try_get("status")?,
                    r.try_get("manifest_file")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if let Some(files) = only {
            out.retain(|(.., file)| file.as_ref().is_some_and(|f| files.contains(f)));
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(out)
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
}
