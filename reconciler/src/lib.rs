//! Tenancy: a GitOps reconciler for multi-tenant platforms.
//!
//! The crate is the pipeline, one module per stage, data flowing forward only:
//!
//! ```text
//! source ─► manifest ─► validate ─► (policy ─► plan ─► converge ─► record ─► publish)
//! ```
//!
//! * [`source`] reads exactly what a commit (or the work tree) declares, via git2.
//! * [`manifest`] parses YAML into positioned trees and typed manifests with checked ids.
//! * [`validate`] applies JSON Schema and cross-manifest checks, producing [`diagnostics`].
//! * [`cli`] is the `tenancy` command line on top.
//!
//! See ARCHITECTURE.md at the repository root for the whole map and its invariants.

pub mod cli;
pub mod diagnostics;
pub mod manifest;
pub mod plan;
pub mod policy;
pub mod source;
pub mod store;
pub mod validate;
