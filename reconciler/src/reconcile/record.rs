//! Stage 4, record: a tenant's outcome, decisions, audit and events, in one transaction.

use super::*;

/// Record one tenant's outcome in one transaction: status always; the applied manifest when
/// applied; the commit's policy decisions; and the audit entries and CloudEvents for what
/// happened (lifecycle transitions, updates, failures, policy denials).
/// What one tenant's record is written with, besides its plan and outcome.
pub(super) struct Context<'a> {
    pub(super) commit: Option<&'a crate::source::CommitInfo>,
    pub(super) correlation: &'a str,
    pub(super) pass_id: &'a str,
    pub(super) decisions: Option<&'a crate::policy::TenantDecisions>,
    pub(super) manifest: Option<&'a Tenant>,
    pub(super) job: Option<crate::store::Job>,
}

pub(super) async fn record(
    store: &Store,
    t: &TenantPlan,
    o: &TenantOutcome,
    cx: Context<'_>,
) -> Result<(), ApplyError> {
    let Context {
        commit,
        correlation,
        pass_id,
        decisions,
        manifest,
        job,
    } = cx;
    let now = now_ms();
    let sha = commit.map(|c| c.sha.clone());
    let actor = commit
        .map(|c| format!("{} <{}>", c.author_name, c.author_email))
        .unwrap_or_else(|| "work tree".to_owned());
    let status = o.outcome.status();
    let mut r = crate::store::ReconcileRecord {
        status: Some(Status {
            tenant_id: t.tenant.clone(),
            status,
            last_applied_commit: (o.outcome == Outcome::Applied)
                .then(|| sha.clone())
                .flatten(),
            last_attempted_commit: sha.clone(),
            blocked_reason: (o.outcome == Outcome::Blocked)
                .then(|| o.reason.clone())
                .flatten(),
            error: (o.outcome == Outcome::Failed)
                .then(|| o.reason.clone())
                .flatten(),
            updated_at: now,
            manifest_file: Some(t.file.clone()),
        }),
        job,
        outcome: sha.as_ref().map(|sha| crate::store::CommitOutcome {
            commit_sha: sha.clone(),
            pass_id: pass_id.to_owned(),
            tenant_id: t.tenant.clone(),
            outcome: o.outcome.as_str().to_owned(),
            changes_made: o.applied as i64,
            changes_planned: t.changes.len() as i64,
            reason: o.reason.clone(),
            recorded_at: now,
        }),
        ..Default::default()
    };
    // Decisions are the compliance record of the commit, whatever the outcome.
    if let (Some(d), Some(sha)) = (decisions, &sha) {
        r.decisions = d
            .decisions
            .iter()
            .map(|dec| DecisionRecord {
                tenant_id: t.tenant.clone(),
                commit_sha: sha.clone(),
                operation: serde_json::to_value(dec.operation)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                against: dec.against.clone(),
                policy: dec.policy.clone(),
                digest: dec.digest.clone(),
                mode: dec.mode.as_str().to_owned(),
                blocks: dec.blocks(),
                verdicts: serde_json::to_value(&dec.verdicts).unwrap_or_default(),
                failure: dec.failure.clone(),
                decided_at: now,
            })
            .collect();
    }
    let previous = store.tenant(&t.tenant).await?;
    let mut types: Vec<&'static str> = Vec::new();
    let mut data = serde_json::json!({
        "lifecycle": {
            "from": previous.as_ref().map(|p| p.state.clone()),
            "to": t.lifecycle,
        },
        "commit": { "sha": sha, "author": actor },
        "changes": o.applied,
    });
    // Why, when the commit says so for this tenant (an API suspension's `Reason:`).
    let mut reason: Option<String> = commit
        .filter(|c| c.trailer("Tenant") == Some(t.tenant.as_str()))
        .and_then(|c| c.trailer("Reason"))
        .map(str::to_owned);
    match o.outcome {
        Outcome::Applied => {
            if let Some(m) = manifest {
                let record = TenantRecord::from_manifest(m);
                types = transition_events(
                    previous.as_ref().map(|p| p.state.as_str()),
                    m.spec.lifecycle,
                );
                if types.is_empty()
                    && previous
                        .as_ref()
                        .is_some_and(|p| p.manifest != record.manifest)
                {
                    types.push(events::EventType::Updated.as_str());
                }
                data["organizationId"] = record.organization_id.clone().into();
                data["profile"] = record.profile.clone().into();
                data["plan"] = record.plan.clone().into();
                r.tenant = Some((record, previous.as_ref().map(|p| p.version)));
            }
        }
        Outcome::Blocked | Outcome::Failed => {
            let denied: Vec<serde_json::Value> = decisions
                .map(|d| {
                    d.decisions
                        .iter()
                        .filter(|d| d.blocks())
                        .map(|d| serde_json::json!({ "policy": d.policy, "digest": d.digest, "violations": d.verdicts }))
                        .collect()
                })
                .unwrap_or_default();
            reason = o.reason.clone();
            if o.outcome == Outcome::Blocked && !denied.is_empty() {
                data["policies"] = denied.into();
                types.push(events::EventType::PolicyDenied.as_str());
            } else {
                types.push(events::EventType::ReconcileFailed.as_str());
            }
        }
        Outcome::Drifted => {}
    }
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    for ty in types {
        let (id, event) = events::cloud_event(
            &events::Fact {
                tenant: &t.tenant,
                ty,
                commit: sha.as_deref(),
                correlation,
                reason: reason.as_deref(),
                details: data.clone(),
            },
            &time,
        );
        r.audit.push(crate::store::AuditRecord {
            tenant_id: t.tenant.clone(),
            event_type: ty.to_owned(),
            actor: actor.clone(),
            target: format!("tenant/{}", t.tenant),
            // The audit says what happened to the change (applied, blocked, failed, drifted);
            // the status says where the tenant stands (synced, blocked, failed, drifted).
            outcome: match o.outcome {
                Outcome::Applied => "applied",
                _ => status.as_str(),
            }
            .to_owned(),
            commit_sha: sha.clone(),
            payload: event["data"].clone(),
            correlation_id: correlation.to_owned(),
        });
        r.events.push(crate::store::NewEvent {
            event_id: id,
            tenant_id: t.tenant.clone(),
            event_type: ty.to_owned(),
            event,
        });
    }
    store.record_reconcile(&r).await?;
    Ok(())
}
