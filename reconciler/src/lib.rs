//! Tenancy: a GitOps reconciler for multi-tenant platforms.
//!
//! The crate is the pipeline, one module per stage, data flowing forward only:
//!
//! ```text
//! source ─► manifest ─► validate ─► policy ─► plan ─► reconcile (converge, record) ─► (publish)
//! ```
//!
//! * [`source`] reads exactly what a commit (or the work tree) declares, via git2.
//! * [`manifest`] parses YAML into positioned trees and typed manifests with checked ids.
//! * [`validate`] applies JSON Schema and cross-manifest checks, producing [`diagnostics`].
//! * [`policy`] runs the sandboxed WebAssembly governance policies over each tenant change.
//! * [`plan`] decides placement: the desired tenant-environments of each plane.
//! * [`reconcile`] plans every plane against live state and applies tenant by tenant,
//!   recording outcomes in the [`store`]; [`config`] maps logical targets to endpoints.
//! * [`cli`] is the `tenancy` command line on top.
//!
//! See ARCHITECTURE.md at the repository root for the whole map and its invariants.

pub(crate) mod api;
pub mod cli;
pub mod config;
pub(crate) mod daemon;
pub mod diagnostics;
pub(crate) mod lockfile;
pub mod manifest;
pub(crate) mod net;
pub(crate) mod placement;
pub(crate) mod planes;
pub mod policy;
pub mod reconcile;
pub mod source;
pub mod store;
pub mod validate;
pub mod webhooks;

/// Helpers the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// Every example manifest under `tenants/`: its path there and its text.
    pub(crate) fn example_manifests() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tenants");
        let mut dirs = vec![root.clone()];
        let mut out = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("tenants/") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml") {
                    let text = std::fs::read_to_string(&path).expect("read");
                    let name = path.strip_prefix(&root).expect("under");
                    out.push((name.display().to_string(), text));
                }
            }
        }
        out.sort();
        assert!(out.len() >= 10, "{} examples", out.len());
        out
    }

    /// Every one of `lines` is a whole line of `text`.
    pub(crate) fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                text.lines().any(|l| l == *line),
                "{line} missing from\n{text}"
            );
        }
    }
}
