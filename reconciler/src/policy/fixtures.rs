//! `tenancy policy test`: fixture cases for policy modules, the way `opa test` and `kwctl run`
//! serve policy authors.
//!
//! A fixture file (`<module dir>/fixtures/*.yaml`) names a policy of the bundle, a platform
//! directory and a base tenant manifest; each case applies a JSON merge patch (RFC 7386) to the
//! base (and optionally to form the previous version) and lists the violations it expects.

use super::bundle::{Bundle, Entry};
use super::host::{self, PolicyHost};
use crate::manifest::Lifecycle;
use crate::manifest::yaml::{self, YamlLimits};
use crate::source::ReadOptions;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FixtureFile {
    api_version: String,
    kind: String,
    /// Name of the policy in the bundle.
    policy: String,
    /// Directory with the platform's Region and Plan manifests, relative to this file.
    platform: String,
    /// The tenant manifest every case starts from, relative to this file.
    base: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    name: String,
    /// Merge patch applied to the base to form the tenant under test (omit: the base as is).
    patch: Option<Value>,
    /// Merge patch applied to the base to form the previous version (omit for a creation).
    previous: Option<Value>,
    operation: Option<super::bundle::OperationKind>,
    expect: Vec<Expected>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expected {
    pub rule: String,
    #[serde(default)]
    pub path: String,
    /// deny | warn | info; omitted = deny.
    #[serde(default = "deny")]
    pub severity: String,
}

fn deny() -> String {
    "deny".into()
}

/// The result of one case.
#[derive(Debug, Serialize)]
pub(crate) struct CaseResult {
    pub policy: String,
    pub file: String,
    pub line: u32,
    pub name: String,
    pub passed: bool,
    /// Expected but not reported.
    pub missing: Vec<Expected>,
    /// Reported but not expected.
    pub unexpected: Vec<Expected>,
    /// The module failed (trap, limit, contract): the reason.
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FixtureError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

fn invalid(file: &Path, message: impl Into<String>) -> FixtureError {
    FixtureError::Invalid {
        file: file.display().to_string(),
        message: message.into(),
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Every fixture file next to the bundle's modules (`<module dir>/fixtures/*.yaml`).
pub(crate) fn discover(bundle: &Bundle) -> Vec<PathBuf> {
    let mut out = BTreeSet::new();
    for e in &bundle.entries {
        let dir = e.module.parent().unwrap_or(Path::new(".")).join("fixtures");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let p = entry.path();
                if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    out.insert(p);
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The platform inventory of a directory of Region and Plan manifests; `file` names the caller in
/// errors. A platform with errors is refused rather than half-used.
pub(crate) fn load_platform(dir: &Path, file: &Path) -> Result<super::Platform, FixtureError> {
    let snapshot = crate::source::read_worktree(dir, &ReadOptions::default())
        .map_err(|e| invalid(file, format!("platform directory {}: {e}", dir.display())))?;
    let report = crate::validate::validate(&snapshot, &Default::default());
    if let Some(f) = report
        .findings
        .iter()
        .find(|f| f.severity == crate::diagnostics::Severity::Error)
    {
        return Err(invalid(
            file,
            format!(
                "platform {}: {}: {}",
                dir.display(),
                f.location(),
                f.message
            ),
        ));
    }
    Ok(super::platform_of(&report.catalog))
}

/// The first YAML document of `path` as JSON (and its positioned tree); `from` names the caller.
pub(crate) fn load_yaml_json(
    path: &Path,
    from: &Path,
) -> Result<(Value, yaml::Node), FixtureError> {
    let text = crate::source::read_text_bounded(path, 1 << 20)
        .map_err(|e| invalid(from, format!("{}: {e}", path.display())))?;
    let docs = yaml::parse_documents(&text, &YamlLimits::default())
        .map_err(|e| invalid(path, format!("line {}: {}", e.pos.line, e.message)))?;
    let doc = docs
        .into_iter()
        .next()
        .ok_or_else(|| invalid(path, "no YAML document"))?;
    Ok((doc.to_json(), doc))
}

/// Run every case of one fixture file.
pub(crate) fn run_file(
    host: &PolicyHost,
    bundle: &Bundle,
    file: &Path,
) -> Result<Vec<CaseResult>, FixtureError> {
    let (json, node) = load_yaml_json(file, file)?;
    let fixture: FixtureFile =
        serde_json::from_value(json).map_err(|e| invalid(file, e.to_string()))?;
    if fixture.kind != "PolicyTest" || fixture.api_version != crate::manifest::model::API_VERSION {
        return Err(invalid(
            file,
            "expected apiVersion: tenancy.dev/v1, kind: PolicyTest",
        ));
    }
    let entry: &Entry = bundle
        .entries
        .iter()
        .find(|e| e.name == fixture.policy)
        .ok_or_else(|| {
            invalid(
                file,
                format!(
                    "policy `{}` is not in the bundle {}",
                    fixture.policy,
                    bundle.path.display()
                ),
            )
        })?;
    let base_dir = file.parent().unwrap_or(Path::new("."));
    let platform = load_platform(&base_dir.join(&fixture.platform), file)?;
    let (base, _) = load_yaml_json(&base_dir.join(&fixture.base), file)?;
    let module = host.load(entry);
    let shown = file.display().to_string();
    let mut results = Vec::with_capacity(fixture.cases.len());
    for (i, case) in fixture.cases.iter().enumerate() {
        let line = node.locate(&format!("/cases/{i}")).pos.line;
        let mut tenant = base.clone();
        if let Some(patch) = &case.patch {
            merge_patch(&mut tenant, patch);
        }
        let previous = case.previous.as_ref().map(|p| {
            let mut prev = base.clone();
            merge_patch(&mut prev, p);
            prev
        });
        let lifecycle = |v: &Value| v["spec"]["lifecycle"].as_str().and_then(Lifecycle::parse);
        // A case whose tenant has no valid lifecycle is judged as an update of itself.
        let operation = case.operation.unwrap_or_else(|| {
            use super::bundle::OperationKind;
            match (previous.as_ref().map(lifecycle), lifecycle(&tenant)) {
                (None, _) => OperationKind::Create,
                (Some(Some(p)), Some(c)) => OperationKind::of(Some(p), c),
                _ => OperationKind::Update,
            }
        });
        let input = host::Input {
            operation: operation.into(),
            tenant: tenant.to_string(),
            previous: previous.map(|p| p.to_string()),
            platform: platform.clone(),
            commit: host::Commit {
                sha: "0".repeat(40),
                author: "tenancy policy test <test@tenancy.invalid>".into(),
            },
        };
        let outcome = module
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|m| host.evaluate(m, &entry.limits, &input));
        let (got, error): (BTreeSet<Expected>, Option<String>) = match outcome {
            Ok(vs) => (
                vs.into_iter()
                    .map(|v| Expected {
                        rule: v.rule,
                        path: v.path,
                        severity: v.severity.as_str().into(),
                    })
                    .collect(),
                None,
            ),
            Err(f) => (BTreeSet::new(), Some(f.to_string())),
        };
        let want: BTreeSet<Expected> = case.expect.iter().cloned().collect();
        let missing: Vec<_> = want.difference(&got).cloned().collect();
        let unexpected: Vec<_> = got.difference(&want).cloned().collect();
        results.push(CaseResult {
            policy: fixture.policy.clone(),
            file: shown.clone(),
            line,
            name: case.name.clone(),
            passed: error.is_none() && missing.is_empty() && unexpected.is_empty(),
            missing,
            unexpected,
            error,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
    }
}
