//! The plane's configuration: the `[object-store]` section of `tenancy.toml` and its targets,
//! and the factory that registers the plane.

use super::{PLANE, S3Plane};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tenancy_plane::Plane;

/// One S3 endpoint, by logical target name (platform/regions.yaml).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct S3Target {
    /// Custom endpoint (MinIO, Ceph, moto); AWS's regional endpoint when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most non-AWS servers need.
    #[serde(default)]
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub session_token: Option<String>,
    /// Start of every bucket name Tenancy creates here (bucket names are global on AWS).
    #[serde(default = "default_bucket_prefix")]
    pub bucket_prefix: String,
    /// The shared bucket of mt-standard tenants; `<bucket-prefix>-shared` when absent.
    #[serde(default)]
    pub shared_bucket: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_bucket_prefix() -> String {
    "tenancy".into()
}

impl S3Target {
    pub(crate) fn shared_bucket(&self) -> String {
        self.shared_bucket
            .clone()
            .unwrap_or_else(|| format!("{}-shared", self.bucket_prefix))
    }
}

#[derive(Debug, Clone, Default)]
pub struct S3Config {
    pub targets: BTreeMap<String, S3Target>,
}

/// The `[object-store]` section of `tenancy.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Section {
    #[serde(default)]
    targets: BTreeMap<String, S3Target>,
}

/// Registers the S3 object-store plane (`[object-store]`, a region's `targets.objectStore`).
pub struct Factory;

impl tenancy_plane::PlaneFactory for Factory {
    fn about(&self) -> tenancy_plane::About {
        tenancy_plane::About::new(PLANE, "objectStore", "S3", "buckets").required()
    }
    fn build(&self, section: &serde_json::Value) -> Result<Box<dyn Plane>, String> {
        let s: Section = tenancy_plane::factory::section(section)?;
        Ok(Box::new(S3Plane::new(S3Config { targets: s.targets })))
    }
}
