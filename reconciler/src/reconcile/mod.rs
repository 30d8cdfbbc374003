//! The reconcile pipeline: source → validate → govern → plan (per plane, against live state) →
//! apply (tenant by tenant) → record.
//!
//! [`evaluate`] reads a revision, validates it and runs the policies; [`plan`] turns the
//! tenants that passed into desired tenant-environments (placement decided once, in
//! [`crate::placement`]) and asks every plane for its changes, one plane target at a time so an
//! unreachable target blocks only the tenants it serves; [`apply`] makes the changes tenant by
//! tenant with bounded concurrency, a failing tenant never stopping the others, and records
//! every outcome (status, manifest, decisions) in the state store. [`notes`] renders each
//! commit's git note from what the store recorded.
//!
//! One file per stage: `evaluate.rs`, `plan.rs` (with `planes.rs`, the planes in use),
//! `apply.rs`, `record.rs`, `relay.rs` (publish); `absent.rs` says what no file declares any
//! more, `events.rs` shapes the CloudEvents. `pass.rs` wires the stages after `evaluate` once,
//! for every caller, reporting progress to an [`pass::Observer`].

use crate::config::{Config, DetectOnly};
use crate::diagnostics::{self, Severity};
use crate::manifest::Lifecycle;
use crate::manifest::model::Tenant;
use crate::placement::desired;
use crate::policy::bundle::{Bundle, Mode};
use crate::policy::history::{Applied, History, Previous};
use crate::policy::host::PolicyHost;
use crate::policy::{Governance, PolicySet, govern};
use crate::source::{self, ReadOptions, Snapshot};
use crate::store::{DecisionRecord, Status, Store, StoreError, TenantRecord, now_ms};
use crate::validate::{self, Located, Locator, Report, ValidateOptions};
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tenancy_plane::{Change, Plane, PlaneError, TenantEnv};

pub mod absent;
pub mod events;
pub mod notes;
pub mod pass;

mod apply;
mod evaluate;
mod plan;
mod planes;
mod record;
mod relay;
pub use apply::*;
pub use evaluate::*;
pub use plan::*;
pub use planes::*;
use record::*;
pub use relay::*;
