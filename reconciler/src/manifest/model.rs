//! Typed manifests. Values of these types have passed the JSON Schema and the identifier
//! checks, so downstream stages (policy, plan, converge) can use them without re-validating.

use super::ids::{EnvName, OrgId, PlanName, RegionName, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(crate) const API_VERSION: &str = "tenancy.dev/v1";

/// Defined once, in the plane interface every layer shares.
pub use tenancy_plane::{Lifecycle, Profile};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    #[serde(rename = "storageGiB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_gib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent_jobs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) api_rate_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Contacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub technical: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    pub(crate) api_version: String,
    pub kind: String,
    pub metadata: TenantMetadata,
    pub spec: TenantSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantMetadata {
    pub id: TenantId,
    pub organization: OrgId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) display_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSpec {
    pub profile: Profile,
    pub lifecycle: Lifecycle,
    pub plan: PlanName,
    pub regions: Regions,
    pub environments: Vec<Environment>,
    #[serde(default)]
    pub quotas: Quotas,
    #[serde(default)]
    pub policies: Policies,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing: Option<Billing>,
    #[serde(default)]
    pub contacts: Contacts,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) external_ids: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Deletion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Regions {
    pub allowed: Vec<RegionName>,
    pub preferred: RegionName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Environment {
    pub name: EnvName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionName>,
    #[serde(default)]
    pub quotas: Quotas,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) isolation: Option<Isolation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Standard,
    Strict,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policies {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data_residency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Billing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cost_center: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deletion {
    pub confirm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Organization {
    pub(crate) api_version: String,
    pub kind: String,
    pub metadata: OrganizationMetadata,
    #[serde(default)]
    pub spec: OrganizationSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationMetadata {
    pub id: OrgId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) display_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationSpec {
    #[serde(default)]
    pub contacts: Contacts,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) external_ids: BTreeMap<String, String>,
    #[serde(default)]
    pub defaults: OrganizationDefaults,
}

/// What a tenant created through the API gets when the request leaves it out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrganizationDefaults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Regions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedMetadata<N> {
    pub name: N,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) display_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Region {
    pub(crate) api_version: String,
    pub kind: String,
    pub metadata: NamedMetadata<RegionName>,
    pub spec: RegionSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionSpec {
    pub(crate) residency_zone: String,
    #[serde(default)]
    pub encryption: RegionEncryption,
    pub targets: Targets,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionEncryption {
    #[serde(default)]
    pub(crate) per_tenant_keys: bool,
}

/// Logical target names by plane (`postgres`, `objectStore`, `kafka`, …: each registered
/// plane's name in camelCase); the reconciler's own configuration maps them to URLs and
/// secrets. Which planes must be named is the planes' rule (`validate` checks it).
pub(crate) type Targets = std::collections::BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    pub(crate) api_version: String,
    pub kind: String,
    pub metadata: NamedMetadata<PlanName>,
    pub spec: PlanSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanSpec {
    pub profiles: Vec<Profile>,
    pub(crate) ceilings: Ceilings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_retention_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<PlanKafka>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Ceilings {
    #[serde(rename = "storageGiB")]
    pub storage_gib: u64,
    pub concurrent_jobs: u64,
    pub(crate) api_rate_limit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanKafka {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retention_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) partitions_per_job: Option<u32>,
}
