//! How a plane is registered: its one name and how it is built from its configuration.
//!
//! Each plane crate exports one [`PlaneFactory`]; the reconciler lists them once, in apply
//! order (`reconciler/src/planes.rs`). The pipeline never names a plane: it reads a region's
//! target for a kind by the kind's name, hands the plane its own `[<kind>]` section of
//! `tenancy.toml` and the tenant plan's `spec.<kind>` settings, and shows what the plane
//! locates under the kind's topology key.

use crate::Plane;
use serde::de::DeserializeOwned;
use std::path::Path;

/// An embedded stand-in for a plane with no target configured.
pub struct BuiltPlane {
    pub plane: Box<dyn Plane>,
    /// What serves it, for the plan's header (`embedded SQLite under .tenancy/databases`).
    pub backend: String,
}

/// Builds an embedded stand-in under `root`.
pub type Embedded = fn(root: &Path) -> BuiltPlane;

/// A plane's names and rules, as its factory declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct About {
    /// The plane's one name: its `tenancy.toml` section, `[apply] detect-only`, the `plane` of
    /// every change it plans, and (in camelCase, see [`manifest_key`]) its key in a region's
    /// `targets` and in a plan's `spec`.
    pub kind: &'static str,
    /// Its key in `GET /tenants/{id}/topology` (seed 000 calls the first three `db`,
    /// `objectStore` and `runtime`).
    pub topology_key: &'static str,
    /// What serves it, for the plan's header (`Kafka` → `Kafka (2 target(s))`).
    pub backend: &'static str,
    /// What the plane manages, for the plan's "not managed" line (`topics`, `ACL users`).
    pub manages: &'static str,
    /// Whether every region must name a target of this plane. A plane added later says no,
    /// so platform files written before it stay valid; regions without its target are simply
    /// not served by it.
    pub required: bool,
}

impl About {
    /// A plane (regions may leave it out): its name, topology key, backend and what it manages.
    pub const fn new(
        kind: &'static str,
        topology_key: &'static str,
        backend: &'static str,
        manages: &'static str,
    ) -> About {
        About {
            kind,
            topology_key,
            backend,
            manages,
            required: false,
        }
    }

    /// The same plane, which every region must name a target of.
    pub const fn required(mut self) -> About {
        self.required = true;
        self
    }
}

/// What every plane crate exports so the reconciler can register it in one line.
pub trait PlaneFactory: Sync {
    fn about(&self) -> About;

    /// Build the plane from its `[<kind>]` section (an empty object when absent); an error
    /// names the key. Building connects to nothing (planes connect on first use), so loading
    /// the configuration builds every plane once to check its section. Every section keeps
    /// its targets under `targets` (see [`target_names`]).
    fn build(&self, section: &serde_json::Value) -> Result<Box<dyn Plane>, String>;
}

/// The targets a plane's section configures (the keys of its `targets` table).
pub fn target_names(section: &serde_json::Value) -> Vec<String> {
    section
        .get("targets")
        .and_then(|t| t.as_object())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// A plane's key in the manifests (`object-store` → `objectStore`): the same name in the
/// manifests' camelCase.
pub fn manifest_key(kind: &str) -> String {
    let mut out = String::with_capacity(kind.len());
    let mut upper = false;
    for c in kind.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Deserialize a plane's section, saying which key is wrong.
pub fn section<T: DeserializeOwned>(section: &serde_json::Value) -> Result<T, String> {
    T::deserialize(section).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifest_keys_are_the_kind_in_camel_case() {
        assert_eq!(super::manifest_key("object-store"), "objectStore");
        assert_eq!(super::manifest_key("postgres"), "postgres");
        assert_eq!(super::manifest_key("a-b-c"), "aBC");
    }
}
