//! The platform inventory as policies see it, built once per pass and shared by every
//! evaluation of the pass: each region and plan serialised once, found by name.
//!
//! Contract 0.2.0 policies ask for one entry at a time (`tenancy:policy/platform`); 0.1.0
//! policies receive the whole inventory as one JSON document in every evaluation.

use crate::manifest::model::{Plan, Region};
use std::collections::HashMap;
use std::sync::Arc;

/// The platform inventory of a pass. Cloning shares it. The default is an empty inventory.
#[derive(Clone)]
pub struct Platform(Arc<Inner>);

impl Default for Platform {
    fn default() -> Platform {
        static EMPTY: std::sync::LazyLock<Platform> =
            std::sync::LazyLock::new(|| Platform::new(&[], &[]));
        EMPTY.clone()
    }
}

#[derive(Default)]
struct Inner {
    /// `{"regions": [Region…], "plans": [Plan…]}`, what a 0.1.0 policy receives.
    json: String,
    regions: Entries,
    plans: Entries,
}

/// Entries in the inventory's order, each as JSON, with an index by name.
#[derive(Default)]
struct Entries {
    names: Vec<String>,
    json: Vec<String>,
    by_name: HashMap<String, usize>,
}

impl Entries {
    fn push(&mut self, name: &str, json: String) {
        // A name declared twice is refused by validation; the first one wins here too.
        if !self.by_name.contains_key(name) {
            self.by_name.insert(name.to_owned(), self.names.len());
            self.names.push(name.to_owned());
            self.json.push(json);
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(|&i| self.json[i].as_str())
    }
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("regions", &self.0.regions.names)
            .field("plans", &self.0.plans.names)
            .finish()
    }
}

impl Platform {
    /// The inventory of validated manifests. Each entry is serialised once; the whole
    /// document 0.1.0 modules receive is made of the same texts.
    pub fn new(regions: &[&Region], plans: &[&Plan]) -> Platform {
        let mut inner = Inner::default();
        for r in regions {
            let text = serde_json::to_string(r).unwrap_or_default();
            inner.regions.push(r.metadata.name.as_str(), text);
        }
        for p in plans {
            let text = serde_json::to_string(p).unwrap_or_default();
            inner.plans.push(p.metadata.name.as_str(), text);
        }
        inner.json = format!(
            r#"{{"regions":[{}],"plans":[{}]}}"#,
            inner.regions.json.join(","),
            inner.plans.json.join(",")
        );
        Platform(Arc::new(inner))
    }

    /// The whole inventory as one JSON document (contract 0.1.0's `input.platform`).
    pub fn json(&self) -> &str {
        &self.0.json
    }

    pub fn region(&self, name: &str) -> Option<&str> {
        self.0.regions.get(name)
    }

    pub fn plan(&self, name: &str) -> Option<&str> {
        self.0.plans.get(name)
    }

    pub fn region_names(&self) -> &[String] {
        &self.0.regions.names
    }

    pub fn plan_names(&self) -> &[String] {
        &self.0.plans.names
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_are_found_by_name_in_the_inventory_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tenants");
        let snapshot = crate::source::read_worktree(&dir, &Default::default()).unwrap();
        let report = crate::validate::validate(&snapshot, &Default::default());
        let p = crate::policy::platform_of(&report.catalog);
        let whole: serde_json::Value = serde_json::from_str(p.json()).unwrap();
        let names = |key: &str| -> Vec<String> {
            whole[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert!(names("regions").len() > 1 && !names("plans").is_empty());
        assert_eq!(p.region_names(), names("regions"));
        assert_eq!(p.plan_names(), names("plans"));
        for (i, name) in names("regions").iter().enumerate() {
            let one: serde_json::Value = serde_json::from_str(p.region(name).unwrap()).unwrap();
            assert_eq!(one, whole["regions"][i], "{name}");
        }
        for (i, name) in names("plans").iter().enumerate() {
            let one: serde_json::Value = serde_json::from_str(p.plan(name).unwrap()).unwrap();
            assert_eq!(one, whole["plans"][i], "{name}");
        }
        assert_eq!(p.plan(&names("regions")[0]), None, "a region is not a plan");
        assert_eq!(p.region("no-such-region"), None);
    }
}
