//! `bundle.yaml`: which policy modules run, pinned by digest, in which mode, on which changes,
//! under which limits.

use crate::diagnostics::Finding;
use crate::manifest::Lifecycle;
use crate::manifest::yaml::{self, YamlLimits};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const SCHEMA: &str = include_str!("../../../schemas/policy-bundle.schema.json");

/// How a policy's deny verdicts are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A deny refuses the change.
    #[default]
    Enforce,
    /// A deny is reported as a warning.
    Warn,
    /// Recorded only; never shown as blocking.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    Create,
    Update,
    Transition,
    Delete,
}

impl OperationKind {
    /// What a change does, from the lifecycle state before (None: the tenant is new) and after:
    /// `delete` when the tenant *became* Deleted, `transition` for any other state change.
    pub fn of(previous: Option<Lifecycle>, current: Lifecycle) -> OperationKind {
        match previous {
            None => OperationKind::Create,
            Some(p) if current == Lifecycle::Deleted && p != Lifecycle::Deleted => {
                OperationKind::Delete
            }
            Some(p) if p != current => OperationKind::Transition,
            Some(_) => OperationKind::Update,
        }
    }
}

/// Sandbox limits for one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    pub fuel: u64,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    pub timeout_ms: u64,
    pub max_output_bytes: u64,
    /// Violations one evaluation may return (more is a failure, not a flood of findings).
    pub max_violations: u64,
    /// CPU time compiling the module may take, all compiler threads together.
    pub compile_ms: u64,
    /// Memory compiling the module may take.
    #[serde(rename = "compileMiB")]
    pub compile_mib: u64,
}

/// The host's ceilings on a bundle's compile budget.
pub(crate) const MAX_COMPILE_MS: u64 = 120_000;
pub(crate) const MAX_COMPILE_MIB: u64 = 2_048;

impl Limits {
    /// The compile budget, within the host's ceilings.
    pub(crate) fn compile_budget(&self) -> super::compile::Budget {
        super::compile::Budget {
            cpu_ms: self.compile_ms.min(MAX_COMPILE_MS),
            memory_mib: self.compile_mib.min(MAX_COMPILE_MIB),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        // Generous for a policy (the standard ones use < 1 % of this), small for an attacker.
        Limits {
            fuel: 50_000_000,
            memory_mib: 64,
            timeout_ms: 1_000,
            max_output_bytes: 256 * 1024,
            max_violations: 100,
            // A Rust policy compiles in ~0.2 s and ~60 MiB; the JavaScript engine needs a
            // bundle entry of its own (~25 s, ~700 MiB).
            compile_ms: 3_000,
            compile_mib: 256,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PartialLimits {
    fuel: Option<u64>,
    #[serde(rename = "memoryMiB")]
    memory_mib: Option<u64>,
    timeout_ms: Option<u64>,
    max_output_bytes: Option<u64>,
    max_violations: Option<u64>,
    compile_ms: Option<u64>,
    #[serde(rename = "compileMiB")]
    compile_mib: Option<u64>,
}

impl PartialLimits {
    fn over(&self, base: Limits) -> Limits {
        Limits {
            fuel: self.fuel.unwrap_or(base.fuel),
            memory_mib: self.memory_mib.unwrap_or(base.memory_mib),
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            max_output_bytes: self.max_output_bytes.unwrap_or(base.max_output_bytes),
            max_violations: self.max_violations.unwrap_or(base.max_violations),
            compile_ms: self.compile_ms.unwrap_or(base.compile_ms),
            compile_mib: self.compile_mib.unwrap_or(base.compile_mib),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Empty = every profile.
    #[serde(default)]
    pub profiles: Vec<crate::manifest::Profile>,
    /// Empty = every operation.
    #[serde(default)]
    pub operations: Vec<OperationKind>,
}

impl Scope {
    pub fn applies(&self, profile: crate::manifest::Profile, op: OperationKind) -> bool {
        (self.profiles.is_empty() || self.profiles.contains(&profile))
            && (self.operations.is_empty() || self.operations.contains(&op))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundle {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default, rename = "metadata")]
    _metadata: serde_json::Value,
    #[serde(default)]
    defaults: RawDefaults,
    policies: Vec<RawEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    limits: PartialLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    module: String,
    sha256: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    limits: PartialLimits,
}

/// One policy of a bundle, resolved.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// Absolute path of the module.
    pub module: PathBuf,
    /// The module path as written in the bundle.
    pub(crate) module_ref: String,
    pub sha256: String,
    pub mode: Mode,
    pub scope: Scope,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Bundle {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read policy bundle {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy bundle {}: {}", .0.first().map(|f| f.location()).unwrap_or_default(), .0.first().map(|f| f.message.clone()).unwrap_or_default())]
    Invalid(Vec<Finding>),
}

impl Bundle {
    /// Read and check a bundle file (YAML, schema, duplicate names). Modules are not read here.
    pub fn load(path: &Path) -> Result<Bundle, BundleError> {
        // A bundle is a page of YAML; a pipe or a device in its place is refused, not read.
        let text =
            crate::source::read_text_bounded(path, 1 << 20).map_err(|source| BundleError::Io {
                path: path.to_owned(),
                source,
            })?;
        let shown = path.display().to_string();
        let docs = yaml::parse_documents(&text, &YamlLimits::default()).map_err(|e| {
            BundleError::Invalid(vec![
                Finding::error(&shown, "bundle.yaml", e.message).at(e.pos),
            ])
        })?;
        let [doc] = docs.as_slice() else {
            return Err(BundleError::Invalid(vec![Finding::error(
                &shown,
                "bundle.documents",
                "a bundle file holds exactly one document",
            )]));
        };
        let json = doc.to_json();
        let schema = serde_json::from_str(SCHEMA).expect("embedded bundle schema is JSON");
        let common =
            serde_json::from_str(crate::validate::schema::COMMON).expect("embedded schema is JSON");
        let registry = jsonschema::Registry::new()
            .add(
                "https://tenancy.dev/schemas/v1/common.schema.json",
                jsonschema::Resource::from_contents(common),
            )
            .and_then(|r| r.prepare())
            .expect("embedded schemas form a registry");
        let validator = jsonschema::draft202012::options()
            .with_registry(&registry)
            .build(&schema)
            .expect("embedded bundle schema compiles");
        let errors: Vec<Finding> = validator
            .iter_errors(&json)
            .map(|e| {
                let pointer = e.instance_path().as_str().to_owned();
                Finding::error(
                    &shown,
                    "bundle.schema",
                    format!("{}: {e}", crate::validate::schema::field_path(&pointer)),
                )
                .at(doc.locate(&pointer).pos)
                .pointer(pointer)
            })
            .collect();
        if !errors.is_empty() {
            return Err(BundleError::Invalid(errors));
        }
        let raw: RawBundle = serde_json::from_value(json).map_err(|e| {
            BundleError::Invalid(vec![Finding::error(&shown, "bundle.schema", e.to_string())])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let defaults = raw.defaults.limits.over(Limits::default());
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.policies.len());
        for (i, e) in raw.policies.into_iter().enumerate() {
            if entries.iter().any(|x| x.name == e.name) {
                return Err(BundleError::Invalid(vec![
                    Finding::error(
                        &shown,
                        "bundle.duplicate",
                        format!("policy `{}` is listed twice", e.name),
                    )
                    .at(doc.locate(&format!("/policies/{i}/name")).pos),
                ]));
            }
            entries.push(Entry {
                module: base.join(&e.module),
                module_ref: e.module,
                name: e.name,
                sha256: e.sha256,
                mode: e.mode,
                scope: e.scope,
                limits: e.limits.over(defaults),
            });
        }
        Ok(Bundle {
            path: path.to_owned(),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::OperationKind::{self, *};

    #[test]
    fn operations_follow_the_lifecycle() {
        use tenancy_plane::Lifecycle::*;
        assert_eq!(OperationKind::of(None, Active), Create);
        assert_eq!(OperationKind::of(Some(Active), Active), Update);
        assert_eq!(OperationKind::of(Some(Active), Suspended), Transition);
        assert_eq!(OperationKind::of(Some(Suspended), Deleted), Delete);
        assert_eq!(
            OperationKind::of(Some(Deleted), Deleted),
            Update,
            "only becoming Deleted is a delete"
        );
    }
}
