//! A pass, wired once: plan → apply → record → note → publish, after [`evaluate`].
//!
//! `tenancy apply`, the daemon and the demo all run [`run`]; they differ only in their
//! [`Observer`] (a progress bar and a prompt, metrics, narration) and in how the pass
//! publishes (at once through Kafka, by waking the daemon's relay and webhook tasks, or not at
//! all). What each stage does is in its own file.

use super::*;
use crate::config::EventsKafka;

/// How a pass publishes what it recorded.
pub(crate) enum Publish<'a> {
    /// Nothing is configured: events stay in the outbox (`tenancy events` reads them).
    Outbox,
    /// Relay the outbox to Kafka now (a one-shot `tenancy apply`).
    Relay(&'a EventsKafka, events::ContentMode),
    /// Wake the tasks that publish beside the loop (the daemon's relay and webhook rounds), so
    /// an unreachable receiver never holds up reconciling.
    Wake(Vec<&'a tokio::sync::Notify>),
}

/// What a pass needs besides its evaluation.
pub struct Pass<'a> {
    pub planes: &'a Planes,
    pub store: &'a Store,
    pub config: &'a Config,
    /// The repository whose commits get their git notes (`[apply] notes`).
    pub repo: &'a std::path::Path,
    /// Tenants to plan (all of the evaluation when `None`).
    pub(crate) selected: Option<&'a BTreeSet<String>>,
    /// Where tenants the revision no longer declares are looked for: `None` everywhere, else in
    /// these files only (none at all on a retry).
    pub(crate) absent_in: Option<&'a BTreeSet<String>>,
    pub(crate) publish: Publish<'a>,
}

/// What a pass did.
pub struct PassReport {
    pub plan: PlanReport,
    pub applied: ApplyReport,
    /// Files of the revision that could not be read (their tenants are blocked).
    pub unreadable: usize,
    /// Applied tenants the revision no longer declares.
    pub absent: Vec<absent::AbsentTenant>,
    /// Why the git notes could not be written, if they could not (the store has the record).
    pub(crate) notes_error: Option<notes::NotesError>,
    /// What [`Publish::Relay`] published.
    pub relayed: Option<RelayReport>,
}

/// Whether a pass goes on after planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proceed {
    Apply,
    /// Nothing is applied, recorded or published (a cancelled prompt).
    Stop,
}

/// Sees a pass's progress; every method has a default that does nothing.
pub trait Observer: Sync {
    /// The plan, before anything is applied.
    fn planned(&self, plan: &PlanReport) -> Proceed {
        let _ = plan;
        Proceed::Apply
    }

    /// One tenant's outcome, as it happens.
    fn applied(&self, outcome: &TenantOutcome) {
        let _ = outcome;
    }

    /// Everything is recorded (statuses, decisions, events, unreadable files, absent tenants).
    fn recorded(&self, report: &PassReport) {
        let _ = report;
    }
}

/// The observer that watches nothing.
pub(crate) struct Quiet;
impl Observer for Quiet {}

/// Run one pass over `evaluation`; `None` when the observer stopped it after planning.
pub async fn run(
    pass: &Pass<'_>,
    evaluation: &Evaluation,
    observer: &dyn Observer,
) -> Result<Option<PassReport>, ApplyError> {
    let plan = super::plan(pass.planes, evaluation, pass.selected).await;
    if observer.planned(&plan) == Proceed::Stop {
        return Ok(None);
    }
    run_planned(pass, evaluation, plan, observer)
        .await
        .map(Some)
}

/// The rest of a pass once `plan` is decided (a caller that shows the plan and asks first
/// plans with [`super::plan`] itself).
pub(crate) async fn run_planned(
    pass: &Pass<'_>,
    evaluation: &Evaluation,
    plan: PlanReport,
    observer: &dyn Observer,
) -> Result<PassReport, ApplyError> {
    let apply_config = &pass.config.apply;
    let started = std::time::Instant::now();
    let ms = || started.elapsed().as_millis() as u64;
    let applied = super::apply(
        pass.planes,
        evaluation,
        &plan,
        pass.store,
        &apply_config.detect_only,
        apply_config.concurrency,
        &|o| observer.applied(o),
    )
    .await?;
    let applied_ms = ms();
    // Nothing is silent: files that could not be read, tenants no file declares any more.
    let (unreadable, absent) = if pass.absent_in.is_some_and(BTreeSet::is_empty) {
        (0, Vec::new())
    } else {
        let unreadable = absent::record_unreadable(pass.store, evaluation).await?;
        let correlation = correlation_id(evaluation);
        let absent =
            absent::record_absent(pass.store, evaluation, pass.absent_in, &correlation).await?;
        (unreadable, absent)
    };
    let recorded_ms = ms();
    // The commit carries its decisions and outcome, rendered from the store — with any commit
    // an earlier, interrupted pass left unannotated.
    let notes_error = if apply_config.notes {
        notes::write_notes(pass.store, pass.repo).await.err()
    } else {
        None
    };
    tracing::debug!(
        applied_ms,
        recorded_ms,
        noted_ms = ms(),
        "pass stages (cumulative)"
    );
    let relayed = match &pass.publish {
        Publish::Outbox => None,
        Publish::Relay(kafka, mode) => Some(relay(pass.store, kafka, *mode).await),
        Publish::Wake(tasks) => {
            for t in tasks {
                t.notify_one();
            }
            None
        }
    };
    let report = PassReport {
        plan,
        applied,
        unreadable,
        absent,
        notes_error,
        relayed,
    };
    observer.recorded(&report);
    Ok(report)
}
