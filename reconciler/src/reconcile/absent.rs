//! Tenants the state store has applied that the revision no longer declares. Nothing about
//! them is silent: each is kept (its resources stay until a confirmed `lifecycle: Deleted`),
//! never reported synced, and recorded as what it is —
//!
//! * **orphaned**: no file declares it any more (its manifest was removed without a deletion
//!   confirmation) — status `orphaned`, a `TENANCY_ORPHANED` event, a warning;
//! * **blocked**: the file that declared it cannot be read now (too large, not UTF-8, a
//!   symlink, broken YAML…) — status `blocked` naming the file and why, a `RECONCILE_FAILED`
//!   event.
//!
//! An event is recorded when a tenant becomes orphaned or unreadable, not again on every pass.

use super::events::{EventType, Fact, cloud_event};
use super::{ApplyError, Evaluation};
use crate::diagnostics::Severity;
use crate::manifest::Lifecycle;
use crate::store::{AuditRecord, NewEvent, ReconcileRecord, Status, Store, now_ms};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Why a tenant is absent from the revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Absence {
    /// No file declares it; it was last declared by this file (if known).
    Removed(Option<String>),
    /// Its file could not be read: the file and why.
    Unreadable(String, String),
}

#[derive(Debug, Clone)]
pub struct AbsentTenant {
    pub tenant: String,
    pub(crate) absence: Absence,
}

impl AbsentTenant {
    /// The status it is recorded with, and the reason shown with it.
    pub fn status(&self, sha: &str) -> (crate::store::ReconcileStatus, String) {
        let at = &sha[..sha.len().min(12)];
        match &self.absence {
            Absence::Removed(file) => (
                crate::store::ReconcileStatus::Orphaned,
                format!(
                    "manifest removed at {at}{}: its resources are kept; declare `lifecycle: Deleted` with a confirmation to remove them, or restore the file",
                    file.as_ref()
                        .map(|f| format!(" (was {f})"))
                        .unwrap_or_default()
                ),
            ),
            Absence::Unreadable(file, why) => (
                crate::store::ReconcileStatus::Blocked,
                format!(
                    "manifest {file} cannot be read at {at}: {why}; the last applied state is kept"
                ),
            ),
        }
    }
}

/// The files a revision could not read (errors of no tenant), with the first reason for each.
pub(crate) fn unreadable_files(evaluation: &Evaluation) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for f in &evaluation.report.findings {
        if f.severity == Severity::Error
            && f.tenant.is_none()
            && !out.iter().any(|(file, _)| *file == f.file)
        {
            out.push((f.file.clone(), format!("{}: {}", f.rule, f.message)));
        }
    }
    out
}

/// The state-store key of what the last pass could not read (`tenancy status` shows it).
pub(crate) const REPOSITORY_FINDINGS: &str = "repository.findings";

/// Keep what `evaluation` could not read — files whose findings belong to no tenant — for
/// `tenancy status` and /metrics; log each. Returns how many files.
pub(crate) async fn record_unreadable(
    store: &Store,
    evaluation: &Evaluation,
) -> Result<usize, ApplyError> {
    let files = unreadable_files(evaluation);
    for (file, why) in &files {
        tracing::warn!(%file, commit = evaluation.commit().unwrap_or("work tree"), %why, "a file of the revision cannot be read");
    }
    let value = serde_json::json!({
        "commit": evaluation.commit(),
        "at": now_ms(),
        "files": files.iter().map(|(file, why)| serde_json::json!({ "file": file, "why": why })).collect::<Vec<_>>(),
    });
    store
        .set_state_value(REPOSITORY_FINDINGS, &value.to_string())
        .await?;
    Ok(files.len())
}

/// Find and record the tenants `evaluation` no longer declares. `files`: only those last
/// declared by one of these files are looked at (an incremental pass); `None`: every applied
/// tenant (a full pass).
pub(crate) async fn record_absent(
    store: &Store,
    evaluation: &Evaluation,
    files: Option<&BTreeSet<String>>,
    correlation: &str,
) -> Result<Vec<AbsentTenant>, ApplyError> {
    let Some(sha) = evaluation.commit().map(str::to_owned) else {
        return Ok(Vec::new());
    };
    let declared: HashSet<&str> = evaluation
        .report
        .catalog
        .tenants
        .iter()
        .map(|t| t.value.metadata.id.as_str())
        .collect();
    let unreadable: HashMap<String, String> = unreadable_files(evaluation).into_iter().collect();
    let mut out = Vec::new();
    for (tenant, state, status, file) in store.applied_files(files).await? {
        // A deleted tenant is gone by design; one still declared is not absent.
        if state == Lifecycle::Deleted.as_str() || declared.contains(tenant.as_str()) {
            continue;
        }
        if let Some(files) = files
            && file.as_ref().is_none_or(|f| !files.contains(f))
        {
            continue;
        }
        let absence = match file
            .as_ref()
            .and_then(|f| unreadable.get(f).map(|why| (f, why)))
        {
            Some((f, why)) => Absence::Unreadable(f.clone(), why.clone()),
            // Not knowing the file (recorded before files were), any unreadable file may be
            // the one: not orphaned on a guess.
            None if file.is_none() && !unreadable.is_empty() => Absence::Unreadable(
                "(unknown)".into(),
                format!(
                    "{} file(s) of the revision cannot be read",
                    unreadable.len()
                ),
            ),
            None => Absence::Removed(file.clone()),
        };
        let a = AbsentTenant { tenant, absence };
        let (new_status, reason) = a.status(&sha);
        let ty = match a.absence {
            Absence::Removed(_) => EventType::Orphaned.as_str(),
            Absence::Unreadable(..) => EventType::ReconcileFailed.as_str(),
        };
        match a.absence {
            Absence::Removed(_) => {
                tracing::warn!(tenant = %a.tenant, commit = %sha, %reason, "tenant orphaned")
            }
            Absence::Unreadable(..) => {
                tracing::warn!(tenant = %a.tenant, commit = %sha, %reason, "tenant's manifest unreadable")
            }
        }
        let mut r = ReconcileRecord {
            status: Some(Status {
                tenant_id: a.tenant.clone(),
                status: new_status,
                last_applied_commit: None,
                last_attempted_commit: Some(sha.clone()),
                blocked_reason: Some(reason.clone()),
                error: None,
                updated_at: now_ms(),
                manifest_file: None,
            }),
            ..Default::default()
        };
        // Told once: when the tenant becomes orphaned (or unreadable), not on every pass.
        if status.as_deref() != Some(new_status.as_str()) {
            let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            let author = evaluation
                .snapshot
                .commit
                .as_ref()
                .map(|c| format!("{} <{}>", c.author_name, c.author_email))
                .unwrap_or_default();
            let mut details = serde_json::json!({
                "lifecycle": { "from": state, "to": state },
                "commit": { "sha": sha, "author": author },
                "changes": 0,
            });
            if let Absence::Removed(Some(f)) | Absence::Unreadable(f, _) = &a.absence {
                details["file"] = f.clone().into();
            }
            let (id, event) = cloud_event(
                &Fact {
                    tenant: &a.tenant,
                    ty,
                    commit: Some(&sha),
                    correlation,
                    reason: Some(&reason),
                    details,
                },
                &time,
            );
            r.audit.push(AuditRecord {
                tenant_id: a.tenant.clone(),
                event_type: ty.to_owned(),
                actor: "tenancy".into(),
                target: format!("tenant/{}", a.tenant),
                outcome: new_status.as_str().to_owned(),
                commit_sha: Some(sha.clone()),
                payload: event["data"].clone(),
                correlation_id: correlation.to_owned(),
            });
            r.events.push(NewEvent {
                event_id: id,
                tenant_id: a.tenant.clone(),
                event_type: ty.to_owned(),
                event,
            });
        }
        store.record_reconcile(&r).await?;
        out.push(a);
    }
    Ok(out)
}
