//! What the API answers: one type per response body, so the OpenAPI document states each
//! shape exactly (schemathesis checks every response against it).

use crate::store::{JobStep, TenantSummary, Webhook};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A page of tenants (seed 000 §3).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantPage {
    pub items: Vec<TenantSummary>,
    /// The cursor of the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// One tenant as last reconciled (ETag: its `version`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub tenant_id: String,
    pub organization_id: String,
    pub profile: String,
    pub state: String,
    pub region: String,
    pub plan: String,
    pub environments: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub quotas: Value,
    #[schema(value_type = Option<Object>)]
    pub policies: Value,
    #[schema(value_type = Option<Object>)]
    pub billing: Value,
    #[schema(value_type = Option<Object>)]
    pub external_ids: Value,
    pub created_at: String,
    pub updated_at: String,
    pub version: i64,
}

/// One environment of a tenant (seed 000 §6).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentView {
    pub name: String,
    pub region: String,
    /// The effective quotas: the environment's own, else the tenant's, else the plan's ceiling.
    #[schema(value_type = Object)]
    pub quota: Value,
    /// Where each quota came from: `environment`, `tenant` or `plan <name>`.
    #[schema(value_type = Object)]
    pub quota_sources: Value,
    pub isolation: Option<String>,
    pub retention_days: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentList {
    pub items: Vec<EnvironmentView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SelfLink {
    #[serde(rename = "self")]
    pub self_: String,
}

/// A job and its progress (seed 000 §14).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub job_id: String,
    pub tenant_id: String,
    /// create, activate, suspend, resume, archive, delete, change-profile.
    pub action: String,
    /// Queued, Running, Completed or Failed.
    pub state: String,
    pub created_at: String,
    pub updated_at: String,
    /// Completed steps over all steps, 0.0–1.0.
    pub progress: f64,
    pub steps: Vec<JobStep>,
    pub commit_sha: Option<String>,
    pub error: Option<String>,
    /// The job that converged this one's change (a later commit's, which included it); the
    /// state, progress and steps shown are its.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converged_by: Option<String>,
    pub links: SelfLink,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub tenant: String,
}

/// A write accepted: its commit and the job that converges it (seed 000 §2, §10, §12).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub job_id: String,
    /// The job's state when the response was made: Queued.
    pub state: String,
    pub commit_sha: String,
    pub links: JobLinks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub job: String,
}

/// A tenant created as Draft (seed 000 §1).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub id: String,
    pub tenant_id: String,
    pub state: String,
    pub created_at: String,
    pub commit_sha: String,
    pub job_id: String,
    pub links: CreatedLinks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatchLinks {
    pub job: String,
    pub tenant: String,
}

/// A patch committed (seed 000 §5); a profile change also names its job (§13).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Patched {
    pub tenant_id: String,
    pub profile: String,
    /// The tenant's lifecycle state.
    pub state: String,
    pub commit_sha: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<PatchLinks>,
}

/// Where one environment lives in each plane (seed 000 §4): `db`, `objectStore` and `runtime`,
/// and any other plane under its own key.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub env: String,
    pub region: String,
    /// The database plane's names: type, target, database, schema, role.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub db: Option<Value>,
    /// The object store's: bucket and prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub object_store: Option<Value>,
    /// The queue's: topic and partition key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub runtime: Option<Value>,
    /// Every other plane's names, under the plane's topology key (e.g. `redis`: user and key
    /// pattern); additional properties in the OpenAPI document.
    #[serde(flatten)]
    #[schema(ignore)]
    pub planes: BTreeMap<String, Value>,
}

impl Placement {
    /// An environment's placement before any plane has located it.
    pub fn new(env: String, region: String) -> Placement {
        Placement {
            env,
            region,
            db: None,
            object_store: None,
            runtime: None,
            planes: BTreeMap::new(),
        }
    }

    /// Where a plane says the environment lives, under its topology key. Seed 000 names the
    /// first three planes' keys; they are declared fields so clients generated from the
    /// OpenAPI document see them.
    pub fn put(&mut self, key: &str, located: Value) {
        match key {
            "db" => self.db = Some(located),
            "objectStore" => self.object_store = Some(located),
            "runtime" => self.runtime = Some(located),
            other => {
                self.planes.insert(other.to_owned(), located);
            }
        }
    }
}

/// A tenant's topology; with `?env=` that environment's placement is also at the top level.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    pub tenant_id: String,
    pub profile: String,
    pub state: String,
    pub environments: Vec<Placement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub db: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub object_store: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub runtime: Option<Value>,
    #[serde(flatten)]
    #[schema(ignore)]
    pub planes: BTreeMap<String, Value>,
}

/// A governance setting of the tenant and whether a policy enforces it (seed 000 §8).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBinding {
    pub name: String,
    /// The setting: a string, or an object (quotas).
    pub rule: Value,
    pub enforced: bool,
    /// The policy module that judges it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// What applies it when no module does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_by: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBindings {
    pub tenant_id: String,
    pub env: Option<String>,
    /// The commit whose decisions say what is enforced.
    pub commit_sha: Option<String>,
    pub policies: Vec<PolicyBinding>,
}

/// A usage report stored (seed 000 §9).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageAccepted {
    pub accepted: bool,
    pub record_id: String,
    /// True when the Idempotency-Key was seen before: the first record is answered again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<Webhook>,
}
