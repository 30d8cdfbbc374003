//! Issue 12: what is applied is what was judged, no event is lost, and a tenant can never
//! reach another tenant. Each module takes one part of the issue; each test is one of its
//! numbered items (and the class around it), and fails on the commit the issue was filed at.

mod api;
mod baseline;
mod comment;
mod notes;
mod silent;
mod webhooks;

use crate::support::{Run, TestRepo, tenancy, workspace_root};
use std::path::Path;

pub fn bundle() -> String {
    workspace_root()
        .join("policies/bundle.yaml")
        .display()
        .to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `tenancy <command> --repo REPO --config CONFIG --policies BUNDLE --output json <extra…>`.
pub fn json_run(command: &str, repo: &TestRepo, config: &Path, extra: &[&str]) -> Run {
    let bundle = bundle();
    let mut args = vec![
        command,
        "--repo",
        s(repo.path()),
        "--config",
        s(config),
        "--policies",
        &bundle,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    tenancy(&args)
}

pub fn apply(repo: &TestRepo, config: &Path, extra: &[&str]) -> (Run, serde_json::Value) {
    let mut args = vec!["--yes"];
    args.extend_from_slice(extra);
    let run = json_run("apply", repo, config, &args);
    let json = run.json();
    (run, json)
}

/// One tenant's outcome in an apply report.
pub fn outcome<'a>(report: &'a serde_json::Value, tenant: &str) -> &'a serde_json::Value {
    report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == tenant)
        .unwrap_or_else(|| panic!("{tenant} not in {report:#}"))
}

/// `tenancy status TENANT --output json`: the tenant's row.
pub fn status(config: &Path, tenant: &str) -> serde_json::Value {
    let run = tenancy(&["status", tenant, "--config", s(config), "--output", "json"]);
    run.json()["tenants"]
        .as_array()
        .and_then(|t| t.first())
        .cloned()
        .unwrap_or_default()
}

/// `tenancy history TENANT --output json`: its commits, audit and decisions.
pub fn history(config: &Path, tenant: &str) -> serde_json::Value {
    tenancy(&["history", tenant, "--config", s(config), "--output", "json"]).json()
}

/// Every event type recorded for `tenant`, oldest first.
pub fn event_types(config: &Path, tenant: &str) -> Vec<String> {
    let run = tenancy(&[
        "events",
        "--config",
        s(config),
        "--tenant",
        tenant,
        "--output",
        "json",
    ]);
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}
