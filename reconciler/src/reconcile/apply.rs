//! Stage 3, apply: a plan made so, tenant by tenant, with jobs and steps.

use super::*;

/// What happened to one tenant during apply.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every change made (or none was needed).
    Applied,
    /// Refused by validation, policy or a plane; last applied state kept.
    Blocked,
    /// A change failed; the changes before it are made, the rest wait for the next run.
    Failed,
    /// Detect-only: drift reported, not corrected.
    Drifted,
}

impl Outcome {
    /// The one spelling of the outcome (reports, the commit record, notes).
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Blocked => "blocked",
            Outcome::Failed => "failed",
            Outcome::Drifted => "drifted",
        }
    }

    /// Where the tenant stands after it (the status column).
    pub fn status(&self) -> crate::store::ReconcileStatus {
        use crate::store::ReconcileStatus as S;
        match self {
            Outcome::Applied => S::Synced,
            Outcome::Blocked => S::Blocked,
            Outcome::Failed => S::Failed,
            Outcome::Drifted => S::Drifted,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantOutcome {
    pub tenant: String,
    pub outcome: Outcome,
    pub applied: usize,
    /// Changes reported but not made (detect-only).
    pub detected: usize,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub commit: Option<String>,
    pub tenants: Vec<TenantOutcome>,
}

impl ApplyReport {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.tenants.iter().filter(|t| t.outcome == outcome).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Apply a plan tenant by tenant, `concurrency` at a time; `progress` sees each outcome.
pub async fn apply(
    planes: &Planes,
    evaluation: &Evaluation,
    report: &PlanReport,
    store: &Store,
    detect_only: &DetectOnly,
    concurrency: usize,
    progress: &(dyn Fn(&TenantOutcome) + Sync),
) -> Result<ApplyReport, ApplyError> {
    let commit = evaluation.commit().map(str::to_owned);
    let commit_info = evaluation.snapshot.commit.as_ref();
    let correlation = correlation_id(evaluation);
    let correlation = correlation.as_str();
    // This pass, as the commit's record (and note) tells passes apart.
    let pass_id = crate::store::stable_id(&[
        "pass",
        commit.as_deref().unwrap_or("worktree"),
        &now_ms().to_string(),
        &std::process::id().to_string(),
        correlation,
    ]);
    let pass_id = pass_id.as_str();
    let decisions: HashMap<&str, &crate::policy::TenantDecisions> = evaluation
        .governance
        .tenants
        .iter()
        .map(|t| (t.tenant.as_str(), t))
        .collect();
    let manifests: HashMap<&str, &Tenant> = evaluation
        .report
        .catalog
        .tenants
        .iter()
        .map(|t| (t.value.metadata.id.as_str(), &*t.value))
        .collect();
    // Lifecycle transitions and profile changes run as jobs: queued now, run in turn.
    let states = store.tenant_states().await?;
    let jobs: HashMap<&str, crate::store::NewJob> = report
        .tenants
        .iter()
        .filter_map(|t| {
            let sha = commit.as_deref()?;
            let manifest = manifests.get(t.tenant.as_str())?;
            if !t.blocked.is_empty()
                || t.refused().next().is_some()
                || t.changes
                    .iter()
                    .any(|c| detect_only.covers(&t.tenant, c.plane))
            {
                return None;
            }
            let action = job_action(states.get(&t.tenant), manifest)?;
            Some((
                t.tenant.as_str(),
                crate::store::NewJob {
                    tenant_id: t.tenant.clone(),
                    commit_sha: sha.to_owned(),
                    action: action.to_owned(),
                    steps: t.changes.iter().map(step_name).collect(),
                },
            ))
        })
        .collect();
    if let Some(sha) = commit.as_deref() {
        let tenants: Vec<&str> = report.tenants.iter().map(|t| t.tenant.as_str()).collect();
        store
            .queue_jobs(
                sha,
                &tenants,
                &jobs.values().cloned().collect::<Vec<_>>(),
                |other| commit_info.is_some_and(|c| c.includes(other)),
            )
            .await?;
    }
    let jobs = &jobs;
    let results: Vec<Result<TenantOutcome, ApplyError>> =
        futures_util::stream::iter(report.tenants.iter())
            .map(|t| {
                let decisions = decisions.get(t.tenant.as_str()).copied();
                let manifest = manifests.get(t.tenant.as_str()).copied();
                async move {
                    let mut job = match jobs.get(t.tenant.as_str()) {
                        Some(new) => Some(store.start_job(new).await?),
                        None => None,
                    };
                    let outcome = apply_tenant(planes, t, detect_only, store, job.as_mut()).await;
                    let commit = commit_info.map(|c| c.sha.as_str()).unwrap_or("worktree");
                    let mut environments: Vec<&str> = Vec::new();
                    for p in &t.placements {
                        if !environments.contains(&p.environment.as_str()) {
                            environments.push(&p.environment);
                        }
                    }
                    let environments = environments.join(",");
                    match outcome.outcome {
                        Outcome::Failed => tracing::warn!(
                            tenant = %t.tenant, environments, commit, correlation_id = correlation,
                            outcome = "failed", changes = outcome.applied,
                            reason = outcome.reason.as_deref().unwrap_or(""),
                            "tenant reconciled"
                        ),
                        _ => tracing::info!(
                            tenant = %t.tenant, environments, commit, correlation_id = correlation,
                            outcome = ?outcome.outcome, changes = outcome.applied,
                            reason = outcome.reason.as_deref().unwrap_or(""),
                            "tenant reconciled"
                        ),
                    }
                    record(
                        store,
                        t,
                        &outcome,
                        Context {
                            commit: commit_info,
                            correlation,
                            pass_id,
                            decisions,
                            manifest,
                            job,
                        },
                    )
                    .await?;
                    progress(&outcome);
                    Ok(outcome)
                }
            })
            .buffered(concurrency.max(1))
            .collect()
            .await;
    Ok(ApplyReport {
        commit,
        tenants: results.into_iter().collect::<Result<_, _>>()?,
    })
}

/// One correlation id per apply run: every audit entry and event of the run carries it. An API
/// write's commit names its request (`Request-Id:`), and that request is the run's correlation
/// id (as is, or hashed to the 32 hex digits events carry).
pub fn correlation_id(evaluation: &Evaluation) -> String {
    let commit_info = evaluation.snapshot.commit.as_ref();
    match commit_info.and_then(|c| c.trailer("Request-Id")) {
        Some(rid)
            if rid.len() == 32
                && rid
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            rid.to_owned()
        }
        Some(rid) if !rid.is_empty() => crate::store::stable_id(&["request", rid]),
        _ => crate::store::stable_id(&[
            evaluation.commit().unwrap_or("worktree"),
            &now_ms().to_string(),
            &std::process::id().to_string(),
        ]),
    }
}

/// The job a tenant's change is: its lifecycle transition, or a profile change; `None` when
/// neither changed.
pub(super) fn job_action(
    before: Option<&(String, String)>,
    manifest: &Tenant,
) -> Option<&'static str> {
    let to = manifest.spec.lifecycle;
    let profile = serde_json::to_value(manifest.spec.profile).ok();
    let profile = profile
        .as_ref()
        .and_then(|p| p.as_str())
        .unwrap_or_default();
    let Some((state, was_profile)) = before else {
        return Some("create");
    };
    let Some(from) = Lifecycle::parse(state) else {
        // A state this version does not know: the change is an update of it.
        return Some("update");
    };
    if from == to {
        return (was_profile != profile).then_some("change-profile");
    }
    Some(transition_action(from, to))
}

/// The job action of a lifecycle transition `from` → `to` (different states). The API queues
/// the job of its own commits with it, so it must agree with what `apply` starts.
pub(crate) fn transition_action(from: Lifecycle, to: Lifecycle) -> &'static str {
    use Lifecycle::*;
    match (from, to) {
        (Suspended, Active) => "resume",
        (_, Active) => "activate",
        (_, Suspended) => "suspend",
        (_, Archived) => "archive",
        (_, Deleted) => "delete",
        (_, Draft) => "update",
    }
}

/// How a change appears as a job step.
pub(super) fn step_name(c: &Change) -> String {
    format!("{} {} {}", c.op.symbol(), c.plane, c.resource)
}

pub(super) async fn apply_tenant(
    planes: &Planes,
    t: &TenantPlan,
    detect_only: &DetectOnly,
    store: &Store,
    mut job: Option<&mut crate::store::Job>,
) -> TenantOutcome {
    let outcome = |outcome, applied, detected, reason: Option<String>| TenantOutcome {
        tenant: t.tenant.clone(),
        outcome,
        applied,
        detected,
        reason,
    };
    if !t.blocked.is_empty() {
        return outcome(Outcome::Blocked, 0, 0, Some(t.blocked.join("; ")));
    }
    if let Some(c) = t.refused().next() {
        let why = format!(
            "{} {}: {}",
            c.plane,
            c.resource,
            c.refused.as_deref().unwrap_or_default()
        );
        return outcome(Outcome::Blocked, 0, 0, Some(why));
    }
    if !t.errors.is_empty() {
        return outcome(Outcome::Failed, 0, 0, Some(t.errors.join("; ")));
    }
    let (mut applied, mut detected) = (0, 0);
    for c in &t.changes {
        if detect_only.covers(&t.tenant, c.plane) {
            detected += 1;
            continue;
        }
        let Some(plane) = planes.find(c.plane) else {
            continue;
        };
        if let Err(e) = plane.apply(c).await {
            let outcome_kind = match e {
                PlaneError::Refused { .. } => Outcome::Blocked,
                _ => Outcome::Failed,
            };
            if let Some(job) = job.as_deref_mut() {
                job.fail(Some(&step_name(c)), &e.to_string());
            }
            return outcome(outcome_kind, applied, detected, Some(e.to_string()));
        }
        applied += 1;
        if let Some(job) = job.as_deref_mut() {
            job.step_done(&step_name(c));
            // The step is made; if its record cannot be written the job stops here (a
            // resumed job finds the step done, since the plan will not list it again).
            if let Err(e) = store.save_job(job).await {
                let why = format!("state store: {e}");
                job.fail(None, &why);
                return outcome(Outcome::Failed, applied, detected, Some(why));
            }
        }
    }
    if let Some(job) = job {
        job.complete();
    }
    if detected > 0 {
        outcome(
            Outcome::Drifted,
            applied,
            detected,
            Some(format!(
                "{detected} change(s) detected, not applied (detect-only)"
            )),
        )
    } else {
        outcome(Outcome::Applied, applied, 0, None)
    }
}

/// The event type for a lifecycle change from `from` (None: a new tenant) to `to`.
/// `from` is the state as stored: one this version does not know is only updated.
pub(super) fn transition_events(from: Option<&str>, to: Lifecycle) -> Vec<&'static str> {
    use Lifecycle::*;
    use events::EventType;
    let from = from.map(|f| Lifecycle::parse(f).ok_or(f));
    let types: &[EventType] = match (from, to) {
        (None, Active) => &[EventType::Created, EventType::Activated],
        (None, _) => &[EventType::Created],
        (Some(Ok(a)), b) if a == b => &[],
        (Some(Ok(Suspended)), Active) => &[EventType::Resumed],
        (Some(Ok(_)), Active) => &[EventType::Activated],
        (Some(Ok(_)), Suspended) => &[EventType::Suspended],
        (Some(Ok(_)), Archived) => &[EventType::Archived],
        (Some(Ok(_)), Deleted) => &[EventType::Deleted],
        (Some(_), _) => &[EventType::Updated],
    };
    types.iter().map(|t| t.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Lifecycle::*;

    /// Every lifecycle move names its job and its events; the API queues its own commits'
    /// jobs with `transition_action`, so the two tables must agree on what a move is.
    #[test]
    fn lifecycle_moves_name_their_job_and_events() {
        let cases = [
            (Draft, Active, "activate", vec!["TENANCY_ACTIVATED"]),
            (Active, Suspended, "suspend", vec!["TENANCY_SUSPENDED"]),
            (Suspended, Active, "resume", vec!["TENANCY_RESUMED"]),
            (Archived, Active, "activate", vec!["TENANCY_ACTIVATED"]),
            (Suspended, Archived, "archive", vec!["TENANCY_ARCHIVED"]),
            (Archived, Deleted, "delete", vec!["TENANCY_DELETED"]),
            (Active, Draft, "update", vec!["TENANCY_UPDATED"]),
        ];
        for (from, to, job, events) in cases {
            assert_eq!(transition_action(from, to), job, "{from:?} → {to:?}");
            assert_eq!(
                transition_events(Some(from.as_str()), to),
                events,
                "{from:?} → {to:?}"
            );
        }
        // A new tenant is created (and activated when it starts Active); no move, no event;
        // a stored state this version does not know is only updated.
        assert_eq!(
            transition_events(None, Active),
            ["TENANCY_CREATED", "TENANCY_ACTIVATED"]
        );
        assert_eq!(transition_events(None, Draft), ["TENANCY_CREATED"]);
        assert!(transition_events(Some("Active"), Active).is_empty());
        assert_eq!(
            transition_events(Some("Paused"), Active),
            ["TENANCY_UPDATED"]
        );
    }
}
