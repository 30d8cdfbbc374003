//! One reconcile pass of the daemon (the same pipeline as `tenancy apply`), its git notes and
//! the relay of pending events.

use super::metrics::{PlaneLabel, StatusLabel};
use super::*;
use crate::reconcile::Evaluation;
use crate::validate::ParseCache;
use crate::validate::delta::Validated;

/// Annotate every commit with outcomes recorded since the last time (this pass's, and any a
/// crash left without their note); a failure is logged and retried after the next pass.
pub(super) async fn write_notes(store: &Store, repo: &std::path::Path) {
    match reconcile::notes::write_notes(store, repo).await {
        Ok(n) if n > 0 => tracing::debug!(notes = n, "git notes written"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not write the git notes"),
    }
}

/// Publish the outbox to Kafka whenever a pass recorded events, at start (events a crash or
/// an outage left behind), and — while Kafka is unreachable — again after a backoff (1 s
/// doubling to 30 s). Events are marked published only once acknowledged, so nothing is lost;
/// a retry after an unacknowledged send may publish an event twice, with the same id.
pub(super) async fn relay_loop(
    producer: reconcile::EventsProducer,
    store: Store,
    metrics: Arc<Metrics>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut backoff: Option<Duration> = None;
    loop {
        let r = producer.relay(&store).await;
        metrics.events_published.inc_by(r.published as u64);
        match r.error {
            Some(e) => {
                let next = backoff.map_or(Duration::from_secs(1), |b| {
                    (b * 2).min(Duration::from_secs(30))
                });
                backoff = Some(next);
                tracing::warn!(error = %e, pending = r.pending, retry_in = ?next, "events wait in the outbox");
            }
            None => {
                if backoff.take().is_some() {
                    tracing::info!("events relayed again; the outbox is drained");
                }
            }
        }
        match backoff {
            Some(wait) => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// One pass: the tenants changed since `last` (all when `full`), through the whole pipeline.
/// What every pass works with.
pub(super) struct Parts<'a> {
    pub(super) opts: &'a Options,
    pub(super) planes: &'a Planes,
    /// Where the API reads regions and plans from.
    pub(super) platform: &'a crate::api::Platform,
    /// Wakes the relay task (present when events go to Kafka).
    pub(super) relay: Option<&'a tokio::sync::Notify>,
    /// Wakes the webhook dispatcher (present when deliveries are on).
    pub(super) deliveries: Option<&'a tokio::sync::Notify>,
    pub(super) store: &'a Store,
    pub(super) metrics: &'a Metrics,
}

/// The daemon's observer of a pass: the queue-depth gauge, the unreadable-files gauge, failures
/// by plane, and a line for every tenant the revision no longer declares.
struct Watch<'a> {
    metrics: &'a Metrics,
    planes: &'a Planes,
    head: &'a str,
    /// Whether the pass looks for absent tenants and unreadable files (not on a retry).
    records_absent: bool,
    started: Instant,
    planned_ms: AtomicU64,
}

impl reconcile::pass::Observer for Watch<'_> {
    fn planned(&self, plan: &reconcile::PlanReport) -> reconcile::pass::Proceed {
        self.planned_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        // The pass's work queue: tenants still to reconcile.
        self.metrics.queue_depth.set(plan.tenants.len() as i64);
        reconcile::pass::Proceed::Apply
    }

    fn applied(&self, _: &reconcile::TenantOutcome) {
        let _ = self.metrics.queue_depth.inner().fetch_update(
            Ordering::Relaxed,
            Ordering::Relaxed,
            |n| (n > 0).then_some(n - 1),
        );
    }

    fn recorded(&self, r: &reconcile::pass::PassReport) {
        if self.records_absent {
            self.metrics.unreadable_files.set(r.unreadable as i64);
        }
        for a in &r.absent {
            let (status, why) = a.status(self.head);
            say!("tenancy run: {} is {status}: {why}", a.tenant);
        }
        // A failure's reason starts with the plane that gave it ("object-store: …").
        for t in r
            .applied
            .tenants
            .iter()
            .filter(|t| t.outcome == Outcome::Failed)
        {
            let plane = t
                .reason
                .as_deref()
                .and_then(|r| r.split(':').next())
                .filter(|p| self.planes.names().any(|n| n == *p))
                .unwrap_or("other");
            self.metrics
                .plane_errors
                .get_or_create(&PlaneLabel {
                    plane: plane.to_owned(),
                })
                .inc();
        }
    }
}

/// What the daemon keeps from one pass to the next.
#[derive(Default)]
pub(super) struct Kept {
    /// What each file parsed to, by blob id.
    parsed: ParseCache,
    /// The last revision a pass succeeded at, validated (taken while a pass runs, so a failed
    /// pass leaves nothing to judge the next commit against but the whole revision).
    validated: Option<(String, Validated)>,
}

/// A pass's evaluation, and the revision validated it was judged from by its delta (none: the
/// whole revision was validated).
struct Evaluated {
    evaluation: Evaluation,
    from: Option<Validated>,
    /// The tenants to plan (all: `None`).
    selected: Option<BTreeSet<String>>,
}

/// A one-file commit, about to be judged by its delta.
struct OneFile {
    path: String,
    text: String,
    validated: Validated,
    /// The tenants whose findings the change can alter (their last applied manifests are what
    /// it is judged against).
    involved: BTreeSet<String>,
}

pub(super) async fn reconcile_once(
    parts: &Parts<'_>,
    head: &str,
    scope: Scope,
    kept: &mut Kept,
) -> Result<Vec<(String, Outcome)>, DaemonError> {
    let Parts {
        opts,
        planes,
        platform,
        relay,
        deliveries,
        store,
        metrics,
    } = *parts;
    let pass = Instant::now();
    // An incremental pass judges only the files the commit changed (the others' decisions
    // stand); if a platform or organization file changed, everything is judged again.
    let changed: Option<BTreeSet<String>> = match &scope {
        Scope::Since(last) => crate::source::changed_paths(
            &opts.repo,
            last,
            head,
            &crate::source::ReadOptions {
                path: opts.path.clone(),
                ..Default::default()
            },
        )
        .ok()
        .map(|c| c.into_iter().map(|p| p.path).collect()),
        _ => None,
    };
    let full = matches!(scope, Scope::Full);
    // Where tenants the revision no longer declares are looked for: everywhere on a full
    // pass, in the changed files on an incremental one, nowhere on a retry.
    let absent_in: Option<BTreeSet<String>> = match &scope {
        Scope::Full => None,
        Scope::Since(_) => changed.clone(),
        Scope::Retry(_) => Some(BTreeSet::new()),
    };
    // The revision validated is the one this commit is judged from, or none at all.
    let validated = kept
        .validated
        .take()
        .and_then(|(sha, v)| matches!(&scope, Scope::Since(last) if *last == sha).then_some(v));
    let only_path = changed
        .as_ref()
        .filter(|c| c.len() == 1)
        .and_then(|c| c.first().cloned());
    // Its text at `head` and the tenants its judgement involves, read where blocking is allowed.
    let one_file = match (validated, only_path) {
        (Some(validated), Some(path)) => {
            let (repo, dir, max_file_bytes) =
                (opts.repo.clone(), opts.path.clone(), opts.max_file_bytes);
            let head = head.to_owned();
            blocking(move || one_file(&repo, &dir, max_file_bytes, &head, path, validated)).await?
        }
        _ => None,
    };
    let mut inputs = Inputs {
        path: opts.path.clone(),
        max_file_bytes: opts.max_file_bytes,
        bundle: opts.bundle.clone(),
        govern_only: changed,
        ..Inputs::new(&opts.repo, Some(head))
    };
    let mut judged = None;
    if let Some(one) = one_file {
        // Judged against what is applied of the tenants it involves.
        let involved = one.involved.iter().map(String::as_str);
        let applied = reconcile::applied_baseline_of(store, involved)
            .await
            .map_err(DaemonError::State)?;
        let inputs = Inputs {
            previous: vec![applied],
            ..inputs.clone()
        };
        judged = blocking(move || by_delta(&inputs, one)).await?;
    }
    let evaluated = match judged {
        Some(judged) => judged,
        None => {
            // Every change is judged against what is applied: a refused change stays refused
            // on every later pass (a restart, a resync, another commit) until a change that
            // passes replaces it.
            inputs.previous = vec![
                reconcile::applied_baseline(store)
                    .await
                    .map_err(DaemonError::State)?,
            ];
            let head = head.to_owned();
            let mut parsed = std::mem::take(&mut kept.parsed);
            let (parsed, result) = blocking(move || {
                let result = whole(&mut inputs, &head, scope, &mut parsed);
                Ok((parsed, result))
            })
            .await?;
            kept.parsed = parsed;
            result?
        }
    };
    let (evaluation, selected) = (&evaluated.evaluation, &evaluated.selected);
    platform.update(&evaluation.report.catalog);
    let evaluated_ms = pass.elapsed().as_millis() as u64;
    metrics
        .policy_evaluations
        .inc_by(evaluation.governance.evaluations as u64);
    metrics
        .policy_seconds
        .observe(evaluation.governance.seconds);
    let watch = Watch {
        metrics,
        planes,
        head,
        records_absent: !matches!(absent_in.as_ref(), Some(f) if f.is_empty()),
        started: pass,
        planned_ms: AtomicU64::new(0),
    };
    let Some(done) = reconcile::pass::run(
        &reconcile::pass::Pass {
            planes,
            store,
            config: &opts.config,
            repo: &opts.repo,
            selected: selected.as_ref(),
            absent_in: absent_in.as_ref(),
            publish: reconcile::pass::Publish::Wake(relay.into_iter().chain(deliveries).collect()),
        },
        evaluation,
        &watch,
    )
    .await
    .map_err(DaemonError::Apply)?
    else {
        return Ok(Vec::new()); // Watch never stops a pass after planning
    };
    if let Some(e) = &done.notes_error {
        tracing::warn!(error = %e, "could not write the git notes");
    }
    let planned_ms = watch.planned_ms.load(Ordering::Relaxed);
    let noted_ms = pass.elapsed().as_millis() as u64;
    let (plan, applied) = (done.plan, done.applied);
    tracing::debug!(
        evaluated_ms,
        planned_ms,
        noted_ms,
        "pass timings (cumulative)"
    );
    // Metrics from counting queries, whatever the number of tenants and events (the outbox
    // gauge is counted at each scrape).
    if let Ok(counts) = store.status_counts().await {
        metrics.tenants.clear();
        for (status, n) in counts {
            metrics
                .tenants
                .get_or_create(&StatusLabel { status })
                .set(n.max(0));
        }
    }
    let summary = format!(
        "{} applied, {} blocked, {} failed, {} drifted",
        applied.count(Outcome::Applied),
        applied.count(Outcome::Blocked),
        applied.count(Outcome::Failed),
        applied.count(Outcome::Drifted)
    );
    tracing::info!(commit = %head, tenants = applied.tenants.len(), full, %summary, "reconciled");
    say!(
        "tenancy run: reconciled {} ({} tenant(s){}): {summary}",
        &head[..12],
        applied.tenants.len(),
        if full { ", full resync" } else { "" }
    );
    let outcomes = applied
        .tenants
        .iter()
        .map(|t| (t.tenant.clone(), t.outcome.clone()))
        .collect();
    drop((plan, applied));
    // What the next commit is judged from.
    kept.validated = Some((
        head.to_owned(),
        match evaluated.from {
            None => Validated::new(evaluated.evaluation.report, &kept.parsed),
            Some(mut validated) => {
                evaluated.evaluation.restore(&mut validated);
                validated
            }
        },
    ));
    release_memory();
    Ok(outcomes)
}

/// Run `f` where blocking is allowed.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Io(std::io::Error::other(e)))?
}

/// The commit changes `path` alone, and `validated` is its parent: the file's text at `head`
/// and the tenants it involves (`None` when the reader does not take the file: the whole
/// revision says why).
fn one_file(
    repo: &std::path::Path,
    dir: &str,
    max_file_bytes: u64,
    head: &str,
    path: String,
    validated: Validated,
) -> Result<Option<OneFile>, DaemonError> {
    let only = crate::source::ReadOptions {
        path: dir.to_owned(),
        max_file_bytes,
        only: Some(BTreeSet::from([path.clone()])),
    };
    let read = crate::source::read_revision(repo, head, &only)?;
    let Ok([file]) = <[_; 1]>::try_from(read.files) else {
        return Ok(None);
    };
    let involved = validated.involved(&path, &file.text, &Default::default());
    Ok(Some(OneFile {
        path,
        text: file.text,
        validated,
        involved,
    }))
}

/// Judge a one-file commit by its delta, like an API write: the file and the tenants sharing
/// a name with it. `None` when it cannot be (a platform or organization file), or when its
/// tenants do not pass validation (such a file is planned with every tenant, as before).
fn by_delta(inputs: &Inputs, one: OneFile) -> Result<Option<Evaluated>, DaemonError> {
    let OneFile {
        path,
        text,
        mut validated,
        ..
    } = one;
    let Some(change) = reconcile::evaluate_change(inputs, &validated, &path, &text)? else {
        return Ok(None);
    };
    let written: BTreeSet<String> = change
        .delta
        .written()
        .map(|t| t.value.metadata.id.to_string())
        .collect();
    if written.is_empty() {
        return Ok(None);
    }
    tracing::debug!(file = %path, "judged by its delta");
    let evaluation = change.into_evaluation(&mut validated);
    Ok(Some(Evaluated {
        evaluation,
        from: Some(validated),
        selected: Some(written),
    }))
}

/// Evaluate the whole revision `head` for a pass over `scope` (re-parsing only the files not in
/// `parsed`), and say which tenants to plan.
fn whole(
    inputs: &mut Inputs,
    head: &str,
    scope: Scope,
    parsed: &mut ParseCache,
) -> Result<Evaluated, DaemonError> {
    let mut evaluation = reconcile::evaluate_cached(inputs, Some(parsed))?;
    let selected = match scope {
        Scope::Since(last) => {
            reconcile::changed_tenants(inputs, &last, head, &evaluation.report.catalog)?.0
        }
        Scope::Retry(tenants) => Some(tenants),
        Scope::Full => None,
    };
    if selected.is_none() && inputs.govern_only.is_some() {
        inputs.govern_only = None;
        evaluation = reconcile::evaluate_cached(inputs, Some(parsed))?;
    }
    tracing::debug!(parsed = parsed.parsed, "files parsed (others unchanged)");
    Ok(Evaluated {
        evaluation,
        from: None,
        selected,
    })
}
