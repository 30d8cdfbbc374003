//! The object-store model both object planes share (S3 and the embedded directory plane): what
//! Tenancy keeps of one bucket or prefix, and the field-by-field difference a plan shows.

use crate::{FieldChange, Lifecycle, Profile, TenantEnv};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What Tenancy keeps of one bucket or prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectConfig {
    pub tags: BTreeMap<String, String>,
    pub versioning: bool,
    pub retention_days: Option<u32>,
    pub encryption_key: Option<String>,
    /// False while the tenant is suspended or archived.
    pub writable: bool,
}

impl ObjectConfig {
    /// The configuration a tenant-environment's bucket or prefix must have: its labels as
    /// tags, versioning for dedicated buckets, its retention and key, writes while Active.
    pub fn desired(d: &TenantEnv) -> ObjectConfig {
        ObjectConfig {
            tags: d.labels().into_iter().collect(),
            versioning: d.profile != Profile::MtStandard,
            retention_days: d.retention_days,
            encryption_key: d.encryption_key.clone(),
            writable: d.lifecycle == Lifecycle::Active,
        }
    }

    /// Field-by-field difference from `current` (None: nothing yet) to `self`, in a stable
    /// order, values shown as JSON.
    pub fn diff_from(&self, current: Option<&ObjectConfig>) -> Vec<FieldChange> {
        fn show<T: Serialize>(v: &T) -> Option<String> {
            serde_json::to_string(v).ok()
        }
        let mut out = Vec::new();
        let mut field = |name: &str, before: Option<String>, after: Option<String>| {
            if before != after {
                out.push(FieldChange::new(name, before, after));
            }
        };
        field(
            "tags",
            current.and_then(|c| show(&c.tags)),
            show(&self.tags),
        );
        field(
            "versioning",
            current.and_then(|c| show(&c.versioning)),
            show(&self.versioning),
        );
        field(
            "retentionDays",
            current.and_then(|c| show(&c.retention_days)),
            show(&self.retention_days),
        );
        field(
            "encryptionKey",
            current.and_then(|c| show(&c.encryption_key)),
            show(&self.encryption_key),
        );
        field(
            "writable",
            current.and_then(|c| show(&c.writable)),
            show(&self.writable),
        );
        out
    }
}
