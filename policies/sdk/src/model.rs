//! The input as typed values: the tenant manifest and the platform inventory.
//!
//! Lenient on purpose: unknown fields are ignored and optional ones default, so a policy built
//! against this SDK keeps working when the manifest schema gains fields.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Tenant {
    pub metadata: TenantMetadata,
    pub spec: TenantSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TenantMetadata {
    pub id: String,
    pub organization: String,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TenantSpec {
    /// `mt-standard`, `st-dedicated` or `hybrid`.
    pub profile: String,
    /// `Draft`, `Active`, `Suspended`, `Archived` or `Deleted`.
    pub lifecycle: String,
    pub plan: String,
    pub regions: Regions,
    pub environments: Vec<Environment>,
    pub quotas: Quotas,
    pub policies: Policies,
    pub deletion: Option<Deletion>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Regions {
    pub allowed: Vec<String>,
    pub preferred: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Environment {
    pub name: String,
    pub region: Option<String>,
    pub quotas: Quotas,
    pub retention_days: Option<u64>,
    pub isolation: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Quotas {
    #[serde(rename = "storageGiB")]
    pub storage_gib: Option<u64>,
    pub concurrent_jobs: Option<u64>,
    pub api_rate_limit: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Policies {
    pub data_residency: Option<String>,
    pub encryption: Option<String>,
    pub retention_days: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Deletion {
    pub confirm: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Named {
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Region {
    pub metadata: Named,
    pub spec: RegionSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegionSpec {
    pub residency_zone: String,
    pub encryption: RegionEncryption,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegionEncryption {
    pub per_tenant_keys: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Plan {
    pub metadata: Named,
    pub spec: PlanSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PlanSpec {
    pub profiles: Vec<String>,
    pub ceilings: Ceilings,
    pub max_retention_days: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Ceilings {
    #[serde(rename = "storageGiB")]
    pub storage_gib: u64,
    pub concurrent_jobs: u64,
    pub api_rate_limit: u64,
}
