//! The data-plane interface.
//!
//! A plane turns desired tenant-environments into real resources (schemas and roles, buckets
//! and prefixes, topics). The pipeline knows planes only through [`Plane`]: it hands a plane
//! the whole desired set, gets back typed [`Change`]s (the plan — a value to print, test and
//! compare), and applies them one at a time. Planes are level-triggered: `plan` observes the
//! actual state in bulk and diffs it against the desired state, never "what changed last time";
//! every `apply` is idempotent and safe to repeat after a crash. `apply(plan(desired))` followed
//! by `plan(desired)` must be empty.
//!
//! A plane never imports another plane, and never sees manifests: the pipeline has already
//! validated ids (lowercase ASCII, `<tenant>_<env>` ≤ 63 characters) and decided placement.

pub mod factory;
pub mod object;

pub use factory::{About, BuiltPlane, Embedded, PlaneFactory, manifest_key, target_names};

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// A tenant's isolation profile: the one definition, used by manifests (`spec.profile`), the
/// API and every plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    MtStandard,
    StDedicated,
    Hybrid,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::MtStandard, Profile::StDedicated, Profile::Hybrid];

    /// The name as written in manifests and answered by the API (`mt-standard`).
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::MtStandard => "mt-standard",
            Profile::StDedicated => "st-dedicated",
            Profile::Hybrid => "hybrid",
        }
    }
}

/// A tenant's lifecycle state: the one definition, used by manifests (`spec.lifecycle`), the
/// API and every plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lifecycle {
    /// Nothing is provisioned yet.
    Draft,
    Active,
    /// Access revoked (no login, writes blocked where the plane allows); data kept.
    Suspended,
    /// Retired: no access, data kept per retention.
    Archived,
    /// Removed. In a manifest, deletion requested; a plane only ever receives it for a
    /// confirmed deletion (placement keeps an unconfirmed one `Archived`).
    Deleted,
}

impl Lifecycle {
    pub const ALL: [Lifecycle; 5] = [
        Lifecycle::Draft,
        Lifecycle::Active,
        Lifecycle::Suspended,
        Lifecycle::Archived,
        Lifecycle::Deleted,
    ];

    /// The state written `name` in manifests (and in the state store), if it is one.
    pub fn parse(name: &str) -> Option<Lifecycle> {
        Lifecycle::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// The name as written in manifests (`Active`).
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Draft => "Draft",
            Lifecycle::Active => "Active",
            Lifecycle::Suspended => "Suspended",
            Lifecycle::Archived => "Archived",
            Lifecycle::Deleted => "Deleted",
        }
    }
}

/// Where a tenant-environment lives: a region and the logical target serving it there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Placement {
    pub region: String,
    /// Logical target name from platform/regions.yaml (e.g. `pg-ap-south-1-shared`).
    pub target: String,
}

/// One tenant-environment as it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantEnv {
    pub tenant: String,
    pub environment: String,
    pub organization: String,
    pub profile: Profile,
    pub lifecycle: Lifecycle,
    pub placement: Placement,
    pub retention_days: Option<u32>,
    /// Per-tenant encryption key id (kms-per-tenant), when the policy asks for one.
    pub encryption_key: Option<String>,
    pub storage_gib: Option<u64>,
    pub concurrent_jobs: Option<u64>,
    /// The tenant plan's settings for this plane (`spec.<kind>` of its Plan, e.g. Kafka's
    /// `partitionsPerJob`), `null` when the plan has none. Each plane reads its own.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub options: serde_json::Value,
}

impl TenantEnv {
    /// `<tenant>_<env>`: the name of this tenant-environment's schema, role, database and topic.
    pub fn qualified_name(&self) -> String {
        format!("{}_{}", self.tenant, self.environment)
    }

    /// Labels every resource carries, so an operator can tell whose it is.
    pub fn labels(&self) -> Vec<(String, String)> {
        vec![
            ("tenancy.dev/tenant".into(), self.tenant.clone()),
            ("tenancy.dev/environment".into(), self.environment.clone()),
            ("tenancy.dev/organization".into(), self.organization.clone()),
            ("tenancy.dev/profile".into(), self.profile.as_str().into()),
        ]
    }
}

/// An S3-valid bucket name (`<prefix>-<tenant>-<env>`) for a dedicated tenant-environment.
/// Ids are `[a-z0-9_]`, so mapping `_` to `-` cannot make two names collide; names over 63
/// characters keep a hash suffix. `prefix` must itself be a valid bucket-name start (bucket
/// names are global in AWS, so operators choose one of their own).
pub fn bucket_name(prefix: &str, tenant: &str, env: &str) -> String {
    let full = format!("{prefix}-{}-{env}", tenant.replace('_', "-"));
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a: stable across builds and platforms, enough to keep truncated names apart.
    let hash = full.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("{}-{hash:016x}", full[..46].trim_end_matches('-'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `+`: the resource does not exist.
    Create,
    /// `~`: the resource exists but differs (drift, or a changed manifest).
    Update,
    /// `-`: the resource exists but must not.
    Delete,
}

impl Op {
    pub fn symbol(self) -> char {
        match self {
            Op::Create => '+',
            Op::Update => '~',
            Op::Delete => '-',
        }
    }
}

/// One field of a resource, before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub plane: &'static str,
    pub tenant: String,
    pub environment: String,
    /// What the change acts on, in the plane's words (`bucket tenancy-t-5001-prod`).
    pub resource: String,
    pub op: Op,
    pub fields: Vec<FieldChange>,
    /// Set when the plane will not make this change (e.g. fewer Kafka partitions, or an
    /// operation the target does not support): shown in the plan, blocks the tenant, and
    /// `apply` refuses it with this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Everything `apply` needs, so a plan can be applied exactly as it was shown.
    #[serde(skip)]
    pub desired: Option<TenantEnv>,
}

impl FieldChange {
    pub fn new(field: &str, before: Option<String>, after: Option<String>) -> FieldChange {
        FieldChange {
            field: field.to_owned(),
            before,
            after,
        }
    }
}

impl Change {
    /// A change of `plane` to `resource`, carrying the desired state `apply` will need.
    pub fn new(
        plane: &'static str,
        desired: &TenantEnv,
        resource: impl Into<String>,
        op: Op,
        fields: Vec<FieldChange>,
    ) -> Change {
        Change {
            plane,
            tenant: desired.tenant.clone(),
            environment: desired.environment.clone(),
            resource: resource.into(),
            op,
            fields,
            refused: None,
            desired: Some(desired.clone()),
        }
    }

    /// The same change, marked as one the plane will not make, and why.
    pub fn refuse(mut self, reason: impl Into<String>) -> Change {
        self.refused = Some(reason.into());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    #[error("{plane}: target `{target}` is not configured")]
    UnknownTarget { plane: &'static str, target: String },
    #[error("{plane}: {message}")]
    Unavailable {
        plane: &'static str,
        message: String,
    },
    #[error("{plane}: {resource}: {message}")]
    Failed {
        plane: &'static str,
        resource: String,
        message: String,
    },
    /// The change cannot be made safely (e.g. reducing Kafka partitions).
    #[error("{plane}: {resource}: {message}")]
    Refused {
        plane: &'static str,
        resource: String,
        message: String,
    },
}

impl PlaneError {
    pub fn unknown_target(plane: &'static str, target: &str) -> PlaneError {
        PlaneError::UnknownTarget {
            plane,
            target: target.to_owned(),
        }
    }
}

pub type PlaneFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PlaneError>> + Send + 'a>>;

/// What every data plane implements.
pub trait Plane: Send + Sync {
    /// `postgres`, `object-store`, `kafka`, …
    fn name(&self) -> &'static str;

    /// Observe the actual state of everything `desired` concerns (in bulk, a few round trips
    /// however many tenants) and return the changes that would make it match, in a stable order.
    fn plan<'a>(&'a self, desired: &'a [TenantEnv]) -> PlaneFuture<'a, Vec<Change>>;

    /// Make one change. Idempotent: applying it again, or after a crash part-way, converges.
    fn apply<'a>(&'a self, change: &'a Change) -> PlaneFuture<'a, ()>;

    /// Where `d` lives in this plane, in the plane's words — database and schema, bucket and
    /// prefix, topic and partition key: what a console shows and a client connects to. Pure
    /// naming, no I/O; an unconfigured target is an error.
    fn locate(&self, d: &TenantEnv) -> Result<serde_json::Value, PlaneError>;

    /// Optionally start the part of observation that does not depend on the desired state
    /// (listing a target's buckets, say), so that it overlaps with validation. The next `plan`
    /// of those targets uses it (once; later plans observe afresh). Errors are not reported
    /// here: `plan` meets them again and reports them.
    fn prefetch<'a>(&'a self, targets: &'a [String]) -> PlaneFuture<'a, ()> {
        let _ = targets;
        Box::pin(async { Ok(()) })
    }
}

/// Plan, then apply every change in order; returns the plan that was applied. The first
/// failing change stops the run (the changes before it stay applied, and a new plan resumes).
pub async fn converge(plane: &dyn Plane, desired: &[TenantEnv]) -> Result<Vec<Change>, PlaneError> {
    let plan = plane.plan(desired).await?;
    for change in &plan {
        if let Some(reason) = &change.refused {
            return Err(PlaneError::Refused {
                plane: change.plane,
                resource: change.resource.clone(),
                message: reason.clone(),
            });
        }
        plane.apply(change).await?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_of_a_tenant_environment() {
        let d = TenantEnv {
            tenant: "t_5001".into(),
            environment: "prod".into(),
            organization: "org_acme".into(),
            profile: Profile::StDedicated,
            lifecycle: Lifecycle::Active,
            placement: Placement {
                region: "ap-south-1".into(),
                target: "pg-ap-south-1-shared".into(),
            },
            retention_days: None,
            encryption_key: None,
            storage_gib: None,
            concurrent_jobs: None,
            options: serde_json::Value::Null,
        };
        assert_eq!(d.qualified_name(), "t_5001_prod");
        assert!(
            d.labels()
                .contains(&("tenancy.dev/profile".into(), "st-dedicated".into()))
        );
        assert_eq!(
            [Op::Create, Op::Update, Op::Delete].map(Op::symbol),
            ['+', '~', '-']
        );
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert_eq!(
            bucket_name("tenancy", "t_5001", "prod"),
            "tenancy-t-5001-prod"
        );
        let long = bucket_name("tenancy", &"a".repeat(60), "staging");
        assert!(long.len() <= 63, "{long}");
        assert_ne!(
            long,
            bucket_name("tenancy", &format!("{}b", "a".repeat(59)), "staging")
        );
        for name in [bucket_name("tenancy", "t_5001", "prod"), long] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-'));
        }
    }
}
