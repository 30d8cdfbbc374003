//! The reconcile pipeline: source → validate → govern → plan (per plane, against live state) →
//! apply (tenant by tenant) → record.
//!
//! [`evaluate`] reads a revision, validates it and runs the policies; [`plan`] turns the
//! tenants that passed into desired tenant-environments (placement decided once, in
//! [`crate::plan`]) and asks every plane for its changes, one plane target at a time so an
//! unreachable target blocks only the tenants it serves; [`apply`] makes the changes tenant by
//! tenant with bounded concurrency, a failing tenant never stopping the others, and records
//! every outcome (status, manifest, decisions) in the state store. [`notes`] renders each
//! commit's git note from what the store recorded.

use crate::config::{Config, DetectOnly};
use crate::diagnostics::{self, Severity};
use crate::manifest::model::Tenant;
use crate::plan::{PlaneKind, desired};
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

/// What to read and which policies to enforce.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub repo: PathBuf,
    /// `None` reads the work tree.
    pub rev: Option<String>,
    pub path: String,
    pub max_file_bytes: u64,
    pub bundle: Option<PathBuf>,
    /// Judge only the tenants declared in these files (an incremental pass over the files a
    /// commit changed); `None` judges every tenant.
    pub govern_only: Option<BTreeSet<String>>,
    /// What each tenant is judged against (every one of them; none: a creation).
    pub previous: Vec<Previous>,
}

/// The largest manifest file read unless configured otherwise (`--max-file-size`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 20;

impl Inputs {
    /// Read `rev` of `repo` (the work tree when `None`) at the repository root, with the
    /// default limits, no policies, every tenant judged against nothing: set the rest.
    pub fn new(repo: impl Into<PathBuf>, rev: Option<&str>) -> Inputs {
        Inputs {
            repo: repo.into(),
            rev: rev.map(str::to_owned),
            path: String::new(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            bundle: None,
            govern_only: None,
            previous: Vec::new(),
        }
    }
}

/// The last applied manifests in `store`, as the baseline apply, the daemon and API writes
/// judge changes against.
pub async fn applied_baseline(store: &Store) -> Result<Previous, StoreError> {
    let records = store.applied_manifests(None).await?;
    Ok(Previous::Applied(Arc::new(Applied::from_records(records))))
}

/// [`applied_baseline`] of one tenant (an API write judges only the tenant it writes).
pub async fn applied_baseline_of(store: &Store, tenant: &str) -> Result<Previous, StoreError> {
    let records = store.applied_manifests(Some(tenant)).await?;
    Ok(Previous::Applied(Arc::new(Applied::from_records(records))))
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub name: String,
    pub digest: String,
    pub mode: Mode,
    /// Why the module could not be loaded (it then denies every change in its scope).
    pub error: Option<String>,
}

/// A revision, validated and governed.
pub struct Evaluation {
    pub snapshot: Snapshot,
    pub report: Report,
    pub policies: Vec<PolicyStatus>,
    pub governance: Governance,
}

impl Evaluation {
    /// Why each tenant may not be applied: its validation errors and enforced policy denies.
    pub fn blocked(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in &self.report.findings {
            if f.severity != Severity::Error {
                continue;
            }
            if let Some(t) = &f.tenant {
                let by = f
                    .policy
                    .as_ref()
                    .map_or(String::new(), |p| format!(" (policy {})", p.name));
                out.entry(t.clone()).or_default().push(format!(
                    "{}: {}{by} at {}",
                    f.rule,
                    f.message,
                    f.location()
                ));
            }
        }
        out
    }

    /// Errors that belong to no tenant (a file that could not be parsed, a broken platform
    /// file): the revision as a whole is refused.
    pub fn global_errors(&self) -> usize {
        self.report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error && f.tenant.is_none())
            .count()
    }

    pub fn commit(&self) -> Option<&str> {
        self.snapshot.commit.as_ref().map(|c| c.sha.as_str())
    }
}

/// Why a revision could not be evaluated (a finding is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Bundle(#[from] crate::policy::bundle::BundleError),
    #[error("policy host: {0}")]
    PolicyHost(#[source] crate::policy::host::Failure),
}

/// Read, validate and govern one revision.
pub fn evaluate(inputs: &Inputs) -> Result<Evaluation, EvaluateError> {
    evaluate_cached(inputs, None)
}

/// [`evaluate`], re-parsing only the files whose blobs are not in `cache` (the daemon keeps one
/// across passes).
pub fn evaluate_cached(
    inputs: &Inputs,
    cache: Option<&mut validate::ParseCache>,
) -> Result<Evaluation, EvaluateError> {
    let opts = ReadOptions {
        path: inputs.path.clone(),
        max_file_bytes: inputs.max_file_bytes,
        only: None,
    };
    let started = std::time::Instant::now();
    let ms = || started.elapsed().as_millis() as u64;
    let bundle = inputs.bundle.as_deref().map(Bundle::load).transpose()?;
    let snapshot = match &inputs.rev {
        None => source::read_worktree(&inputs.repo, &opts)?,
        Some(rev) => match cache.as_deref() {
            Some(c) => {
                source::read_revision_reusing(&inputs.repo, rev, &opts, &|p, id| c.text(p, id))?
            }
            None => source::read_revision(&inputs.repo, rev, &opts)?,
        },
    };
    tracing::info!(files = snapshot.files.len(), elapsed_ms = ms(), "read");
    // The previous versions, first: they also say who held a unique name before the change.
    let history = History::load(
        &inputs.repo,
        inputs.rev.as_deref(),
        &snapshot,
        &opts,
        &inputs.previous,
    )?;
    let mut report =
        validate::validate_cached(&snapshot, &ValidateOptions::default(), cache, &history);
    tracing::info!(elapsed_ms = ms(), "validated");
    let mut policies = Vec::new();
    let mut governance = Governance::default();
    if let Some(bundle) = &bundle {
        let host = Arc::new(PolicyHost::new().map_err(EvaluateError::PolicyHost)?);
        let set = PolicySet::load(host, bundle);
        tracing::info!(elapsed_ms = ms(), "policy modules loaded");
        for (entry, module) in &set.policies {
            policies.push(PolicyStatus {
                name: entry.name.clone(),
                digest: entry.sha256.clone(),
                mode: entry.mode,
                error: module.as_ref().err().map(|e| e.to_string()),
            });
        }
        let locator = Locator::new(&snapshot, Default::default());
        // A tenant that already failed validation is not judged: its errors come first.
        let invalid: HashSet<String> = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .filter_map(|f| f.tenant.clone())
            .collect();
        let judging = std::time::Instant::now();
        governance = govern(
            &set,
            &report.catalog,
            &history,
            snapshot.commit.as_ref(),
            &locator,
            |t| {
                !invalid.contains(t.value.metadata.id.as_str())
                    && inputs
                        .govern_only
                        .as_ref()
                        .is_none_or(|only| only.contains(&t.file))
            },
        );
        governance.seconds = judging.elapsed().as_secs_f64();
        tracing::info!(
            evaluations = governance.evaluations,
            elapsed_ms = ms(),
            "governed"
        );
        report.findings.append(&mut governance.findings);
        diagnostics::sort(&mut report.findings);
        report.summary.errors = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        report.summary.warnings = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
    }
    Ok(Evaluation {
        snapshot,
        report,
        policies,
        governance,
    })
}

/// Tenants whose manifests differ between two revisions (all of them when a platform or
/// organization file changed), and the files of tenants removed from the repository.
pub fn changed_tenants(
    inputs: &Inputs,
    base: &str,
    head: &str,
    catalog: &validate::Catalog,
) -> Result<(Option<BTreeSet<String>>, Vec<String>), crate::source::SourceError> {
    let opts = ReadOptions {
        path: inputs.path.clone(),
        max_file_bytes: inputs.max_file_bytes,
        only: None,
    };
    let changed = source::changed_paths(&inputs.repo, base, head, &opts)?;
    let by_file: HashMap<&str, &str> = catalog
        .tenants
        .iter()
        .map(|t| (t.file.as_str(), t.value.metadata.id.as_str()))
        .collect();
    let mut tenants = BTreeSet::new();
    let mut removed = Vec::new();
    for c in &changed {
        match by_file.get(c.path.as_str()) {
            Some(id) => {
                tenants.insert((*id).to_owned());
            }
            None if c.change == source::ChangeKind::Deleted => removed.push(c.path.clone()),
            // A platform, organization or unparseable file: everything may be affected.
            None => return Ok((None, removed)),
        }
    }
    Ok((Some(tenants), removed))
}

/// One plane in use.
pub struct PlaneEntry {
    pub kind: PlaneKind,
    pub plane: Box<dyn Plane>,
    /// What serves it, for the plan's header (`PostgreSQL (4 target(s))`).
    pub backend: String,
    /// The configured targets (empty for embedded planes, which serve any target name).
    pub targets: Vec<String>,
}

/// The planes in use, in apply order (database, object store, queue).
pub struct Planes {
    pub planes: Vec<PlaneEntry>,
    /// Planes not in use, and why (shown in the plan).
    pub skipped: Vec<(String, String)>,
}

impl Planes {
    /// Real targets where configured, embedded defaults otherwise.
    pub fn from_config(config: &Config) -> Planes {
        let root = &config.embedded.root;
        let mut planes = Vec::new();
        let mut skipped = Vec::new();
        let entry =
            |kind, plane: Box<dyn Plane>, backend: String, targets: Vec<String>| PlaneEntry {
                kind,
                plane,
                backend,
                targets,
            };
        if config.postgres.targets.is_empty() {
            planes.push(entry(
                PlaneKind::Database,
                Box::new(tenancy_plane_sqlite::SqlitePlane::new(
                    root.join("databases"),
                )),
                format!("embedded SQLite under {}", root.join("databases").display()),
                Vec::new(),
            ));
        } else {
            let targets = config
                .postgres
                .targets
                .iter()
                .map(|(k, v)| (k.clone(), v.url.clone()))
                .collect();
            planes.push(entry(
                PlaneKind::Database,
                Box::new(tenancy_plane_postgres::PostgresPlane::new(
                    tenancy_plane_postgres::PostgresConfig {
                        targets,
                        default_connection_limit: config.postgres.default_connection_limit,
                    },
                )),
                format!("PostgreSQL ({} target(s))", config.postgres.targets.len()),
                config.postgres.targets.keys().cloned().collect(),
            ));
        }
        if config.object_store.targets.is_empty() {
            planes.push(entry(
                PlaneKind::ObjectStore,
                Box::new(tenancy_plane_local::LocalObjectPlane::new(
                    root.join("objects"),
                )),
                format!("embedded directory {}", root.join("objects").display()),
                Vec::new(),
            ));
        } else {
            planes.push(entry(
                PlaneKind::ObjectStore,
                Box::new(tenancy_plane_s3::S3Plane::new(tenancy_plane_s3::S3Config {
                    targets: config.object_store.targets.clone(),
                })),
                format!("S3 ({} target(s))", config.object_store.targets.len()),
                config.object_store.targets.keys().cloned().collect(),
            ));
        }
        if config.kafka.targets.is_empty() {
            skipped.push((
                "kafka".to_owned(),
                "no [kafka.targets] configured; topics are not managed".to_owned(),
            ));
        } else {
            planes.push(entry(
                PlaneKind::Queue,
                Box::new(tenancy_plane_kafka::KafkaPlane::new(
                    tenancy_plane_kafka::KafkaConfig {
                        targets: config.kafka.targets.clone(),
                        timeout: config
                            .kafka
                            .timeout_seconds
                            .map(std::time::Duration::from_secs),
                    },
                )),
                format!("Kafka ({} target(s))", config.kafka.targets.len()),
                config.kafka.targets.keys().cloned().collect(),
            ));
        }
        Planes { planes, skipped }
    }

    /// Start every plane's desired-state-independent observation (run it concurrently with
    /// [`evaluate`]); errors are left for `plan` to meet and report.
    pub async fn prefetch(&self) {
        futures_util::future::join_all(
            self.planes
                .iter()
                .map(|p| async move { p.plane.prefetch(&p.targets).await }),
        )
        .await;
    }

    /// The names of the planes in use (as in their changes and errors).
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.planes.iter().map(|p| p.plane.name())
    }

    fn find(&self, name: &str) -> Option<&dyn Plane> {
        self.planes
            .iter()
            .find(|p| p.plane.name() == name)
            .map(|p| p.plane.as_ref())
    }
}

/// Where one tenant-environment lives in one plane.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementView {
    pub environment: String,
    pub plane: String,
    pub region: String,
    pub target: String,
}

/// Everything the plan says about one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TenantPlan {
    pub tenant: String,
    pub file: String,
    pub lifecycle: String,
    pub placements: Vec<PlacementView>,
    pub changes: Vec<Change>,
    /// Validation errors and enforced policy denies: the tenant keeps its last applied state.
    pub blocked: Vec<String>,
    /// Planes that could not be observed for this tenant (unreachable, unconfigured target).
    pub errors: Vec<String>,
}

impl TenantPlan {
    pub fn refused(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.refused.is_some())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub commit: Option<String>,
    pub planes: Vec<PlaneView>,
    pub tenants: Vec<TenantPlan>,
    /// Tenant files removed from the repository (resources are kept until a confirmed
    /// `lifecycle: Deleted`).
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaneView {
    pub plane: String,
    pub backend: Option<String>,
    pub skipped: Option<String>,
}

impl PlanReport {
    pub fn changes(&self) -> usize {
        self.tenants.iter().map(|t| t.changes.len()).sum()
    }

    pub fn blocked(&self) -> usize {
        self.tenants
            .iter()
            .filter(|t| !t.blocked.is_empty() || t.refused().next().is_some())
            .count()
    }

    pub fn errors(&self) -> usize {
        self.tenants.iter().filter(|t| !t.errors.is_empty()).count()
    }
}

fn kind_name(kind: PlaneKind) -> &'static str {
    match kind {
        PlaneKind::Database => "database",
        PlaneKind::ObjectStore => "object-store",
        PlaneKind::Queue => "kafka",
    }
}

/// Plan `selected` tenants (all of the catalog when `None`) against live state.
pub async fn plan(
    planes: &Planes,
    evaluation: &Evaluation,
    selected: Option<&BTreeSet<String>>,
) -> PlanReport {
    let catalog = &evaluation.report.catalog;
    let blocked = evaluation.blocked();
    let chosen: Vec<&Located<Tenant>> = catalog
        .tenants
        .iter()
        .filter(|t| selected.is_none_or(|s| s.contains(t.value.metadata.id.as_str())))
        .collect();
    let mut tenants: Vec<TenantPlan> = chosen
        .iter()
        .map(|t| TenantPlan {
            tenant: t.value.metadata.id.to_string(),
            file: t.file.clone(),
            lifecycle: t.value.spec.lifecycle.as_str().to_owned(),
            placements: Vec::new(),
            changes: Vec::new(),
            blocked: blocked
                .get(t.value.metadata.id.as_str())
                .cloned()
                .unwrap_or_default(),
            errors: Vec::new(),
        })
        .collect();
    let index: HashMap<String, usize> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.tenant.clone(), i))
        .collect();
    let eligible: Vec<&Tenant> = chosen
        .iter()
        .filter(|t| !blocked.contains_key(t.value.metadata.id.as_str()))
        .map(|t| &t.value)
        .collect();
    // Every (plane, target) group is observed concurrently: they are independent services.
    let mut groups: Vec<(&dyn Plane, String, Vec<TenantEnv>)> = Vec::new();
    for PlaneEntry { kind, plane, .. } in &planes.planes {
        let envs = desired(catalog, eligible.iter().copied(), *kind);
        let mut by_target: BTreeMap<String, Vec<TenantEnv>> = BTreeMap::new();
        for d in envs {
            let i = index[&d.tenant];
            tenants[i].placements.push(PlacementView {
                environment: d.environment.clone(),
                plane: kind_name(*kind).to_owned(),
                region: d.placement.region.clone(),
                target: d.placement.target.clone(),
            });
            by_target
                .entry(d.placement.target.clone())
                .or_default()
                .push(d);
        }
        groups.extend(
            by_target
                .into_iter()
                .map(|(target, group)| (plane.as_ref(), target, group)),
        );
    }
    let observed = futures_util::future::join_all(
        groups
            .iter()
            .map(|(plane, _, group)| async move { plane.plan(group).await }),
    )
    .await;
    for ((plane, target, group), result) in groups.iter().zip(observed) {
        match result {
            Ok(changes) => {
                for c in changes {
                    tenants[index[&c.tenant]].changes.push(c);
                }
            }
            Err(e) => {
                let served: BTreeSet<&str> = group.iter().map(|d| d.tenant.as_str()).collect();
                tracing::warn!(plane = plane.name(), %target, error = %e, "plan failed");
                for t in served {
                    tenants[index[t]].errors.push(e.to_string());
                }
            }
        }
    }
    // Within a tenant, changes follow the planes' apply order.
    let order: HashMap<&str, usize> = planes
        .planes
        .iter()
        .enumerate()
        .map(|(i, p)| (p.plane.name(), i))
        .collect();
    for t in &mut tenants {
        t.changes
            .sort_by_key(|c| order.get(c.plane).copied().unwrap_or(usize::MAX));
    }
    let mut views: Vec<PlaneView> = planes
        .planes
        .iter()
        .map(|p| PlaneView {
            plane: kind_name(p.kind).to_owned(),
            backend: Some(p.backend.clone()),
            skipped: None,
        })
        .collect();
    views.extend(planes.skipped.iter().map(|(plane, why)| PlaneView {
        plane: plane.clone(),
        backend: None,
        skipped: Some(why.clone()),
    }));
    PlanReport {
        commit: evaluation.commit().map(str::to_owned),
        planes: views,
        tenants,
        removed: Vec::new(),
    }
}

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
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Applied => "synced",
            Outcome::Blocked => "blocked",
            Outcome::Failed => "failed",
            Outcome::Drifted => "drifted",
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
        .map(|t| (t.value.metadata.id.as_str(), &t.value))
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
fn job_action(before: Option<&(String, String)>, manifest: &Tenant) -> Option<&'static str> {
    let to = manifest.spec.lifecycle.as_str();
    let profile = serde_json::to_value(manifest.spec.profile).ok();
    let profile = profile
        .as_ref()
        .and_then(|p| p.as_str())
        .unwrap_or_default();
    let Some((state, was_profile)) = before else {
        return Some("create");
    };
    if state == to {
        return (was_profile != profile).then_some("change-profile");
    }
    Some(transition_action(state, to))
}

/// The job action of a lifecycle transition `from` → `to` (different states). The API queues
/// the job of its own commits with it, so it must agree with what `apply` starts.
pub fn transition_action(from: &str, to: &str) -> &'static str {
    match (from, to) {
        ("Suspended", "Active") => "resume",
        (_, "Active") => "activate",
        (_, "Suspended") => "suspend",
        (_, "Archived") => "archive",
        (_, "Deleted") => "delete",
        _ => "update",
    }
}

/// How a change appears as a job step.
fn step_name(c: &Change) -> String {
    format!("{} {} {}", c.op.symbol(), c.plane, c.resource)
}

async fn apply_tenant(
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
fn transition_events(from: Option<&str>, to: &str) -> Vec<&'static str> {
    match (from, to) {
        (None, "Active") => vec!["TENANCY_CREATED", "TENANCY_ACTIVATED"],
        (None, _) => vec!["TENANCY_CREATED"],
        (Some(a), b) if a == b => Vec::new(),
        (Some("Suspended"), "Active") => vec!["TENANCY_RESUMED"],
        (Some(_), "Active") => vec!["TENANCY_ACTIVATED"],
        (Some(_), "Suspended") => vec!["TENANCY_SUSPENDED"],
        (Some(_), "Archived") => vec!["TENANCY_ARCHIVED"],
        (Some(_), "Deleted") => vec!["TENANCY_DELETED"],
        (Some(_), _) => vec!["TENANCY_UPDATED"],
    }
}

/// Record one tenant's outcome in one transaction: status always; the applied manifest when
/// applied; the commit's policy decisions; and the audit entries and CloudEvents for what
/// happened (lifecycle transitions, updates, failures, policy denials).
/// What one tenant's record is written with, besides its plan and outcome.
struct Context<'a> {
    commit: Option<&'a crate::source::CommitInfo>,
    correlation: &'a str,
    pass_id: &'a str,
    decisions: Option<&'a crate::policy::TenantDecisions>,
    manifest: Option<&'a Tenant>,
    job: Option<crate::store::Job>,
}

async fn record(
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
            status: status.to_owned(),
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
                types =
                    transition_events(previous.as_ref().map(|p| p.state.as_str()), &record.state);
                if types.is_empty()
                    && previous
                        .as_ref()
                        .is_some_and(|p| p.manifest != record.manifest)
                {
                    types.push("TENANCY_UPDATED");
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
                types.push("POLICY_DENIED");
            } else {
                types.push("RECONCILE_FAILED");
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
                _ => status,
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

/// What one relay pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayReport {
    pub published: usize,
    pub pending: usize,
    /// Why publishing stopped early (the events wait in the outbox for the next pass).
    pub error: Option<String>,
}

/// Publish the outbox's pending events to Kafka, in order (key = tenant id, so one tenant's
/// events land in one partition in sequence), with an idempotent producer; an event is marked
/// published only after the broker acknowledged it. At-least-once: an event sent twice (a
/// crash between the ack and the mark) carries the same `id`.
pub async fn relay(
    store: &Store,
    cfg: &crate::config::EventsKafka,
    mode: events::ContentMode,
) -> RelayReport {
    match EventsProducer::new(cfg, mode) {
        Ok(p) => p.relay(store).await,
        Err(e) => RelayReport {
            error: Some(e),
            ..Default::default()
        },
    }
}

/// Delivery reports of the events producer, by event id: `true` when the broker acknowledged
/// the event, `false` when it did not. Reports that arrive after a batch stopped waiting (a
/// slow or down broker) are kept for the next batch, never dropped: an event is marked
/// published only on its own successful report.
#[derive(Default)]
struct Deliveries(std::sync::Mutex<HashMap<String, bool>>);

impl Deliveries {
    fn take(&self) -> HashMap<String, bool> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl tenancy_plane_kafka::rdkafka::ClientContext for Deliveries {}

impl tenancy_plane_kafka::rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = Box<String>;

    fn delivery(
        &self,
        result: &tenancy_plane_kafka::rdkafka::producer::DeliveryResult<'_>,
        event_id: Box<String>,
    ) {
        if let Ok(mut reports) = self.0.lock() {
            // A later success (a re-send) wins over an earlier failure of the same event.
            let ok = result.is_ok();
            let entry = reports.entry(*event_id).or_insert(ok);
            *entry |= ok;
        }
    }
}

/// How long the producer may take to report on a message: librdkafka reports every message
/// within `message.timeout.ms` (delivered, or failed once it expires), so waiting that long
/// (plus a margin for the report itself) hears about every message of a batch.
fn report_deadline(cfg: &crate::config::EventsKafka) -> std::time::Duration {
    let timeout_ms = cfg
        .properties
        .get("message.timeout.ms")
        .or_else(|| cfg.properties.get("delivery.timeout.ms"))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(MESSAGE_TIMEOUT_MS);
    std::time::Duration::from_millis(timeout_ms.saturating_add(5_000))
}

/// `message.timeout.ms` unless the configuration says otherwise.
const MESSAGE_TIMEOUT_MS: u64 = 10_000;

/// A Kafka producer for the outbox, kept for a daemon's lifetime (an idempotent producer's
/// setup costs a round trip or two; the daemon relays after every commit). It has no polling
/// thread of its own: it is served only while relaying, so an idle daemon stays idle.
pub struct EventsProducer {
    producer: Arc<tenancy_plane_kafka::rdkafka::producer::BaseProducer<Deliveries>>,
    topic: String,
    servers: String,
    /// How long a batch waits for its delivery reports.
    deadline: std::time::Duration,
    mode: events::ContentMode,
}

impl EventsProducer {
    pub fn new(
        cfg: &crate::config::EventsKafka,
        mode: events::ContentMode,
    ) -> Result<EventsProducer, String> {
        let mut client = tenancy_plane_kafka::rdkafka::ClientConfig::new();
        client
            .set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
            .set("linger.ms", "0")
            .set("log_level", "3");
        for (k, v) in &cfg.properties {
            client.set(k, v);
        }
        Ok(EventsProducer {
            producer: Arc::new(
                client
                    .create_with_context(Deliveries::default())
                    .map_err(|e| format!("events producer: {e}"))?,
            ),
            topic: cfg.topic.clone(),
            servers: cfg.bootstrap_servers.clone(),
            deadline: report_deadline(cfg),
            mode,
        })
    }

    /// Publish every pending event, in order; see [`relay`].
    pub async fn relay(&self, store: &Store) -> RelayReport {
        let mut report = RelayReport::default();
        loop {
            let batch = match store.pending_events(500).await {
                Ok(b) => b,
                Err(e) => {
                    report.error = Some(e.to_string());
                    return report;
                }
            };
            if batch.is_empty() {
                return report;
            }
            let started = std::time::Instant::now();
            let producer = self.producer.clone();
            let topic = self.topic.clone();
            let servers = self.servers.clone();
            let (deadline, mode) = (self.deadline, self.mode);
            // Sending and waiting for the acknowledgements block: off the async threads.
            let sent = tokio::task::spawn_blocking(move || {
                send_batch(&producer, &topic, &servers, &batch, deadline, mode)
            })
            .await
            .unwrap_or_else(|e| Err((Vec::new(), e.to_string())));
            let (published, error) = match sent {
                Ok(ids) => (ids, None),
                Err((ids, e)) => (ids, Some(e)),
            };
            report.published += published.len();
            tracing::debug!(
                events = published.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "batch acknowledged"
            );
            if let Err(e) = store.mark_published(&published).await {
                report.error = Some(e.to_string());
            }
            if error.is_some() || report.error.is_some() {
                report.error = report.error.or(error);
                report.pending = store.pending_count().await.unwrap_or(0).max(0) as usize;
                return report;
            }
        }
    }
}

/// Send a batch and wait (up to `deadline`) for the broker's acknowledgements; returns the
/// ids of events acknowledged — this batch's, and any earlier batch's whose reports came late
/// — and why it stopped, if not every event of the batch was acknowledged. An event with a
/// failed report, or none yet, is not returned: it stays pending and is sent again.
fn send_batch(
    producer: &tenancy_plane_kafka::rdkafka::producer::BaseProducer<Deliveries>,
    topic: &str,
    servers: &str,
    batch: &[crate::store::EventRecord],
    deadline: std::time::Duration,
    mode: events::ContentMode,
) -> Result<Vec<String>, (Vec<String>, String)> {
    use tenancy_plane_kafka::rdkafka::message::{Header, OwnedHeaders};
    use tenancy_plane_kafka::rdkafka::producer::{BaseRecord, Producer};
    let mut queued = Vec::new();
    let mut stopped = None;
    for e in batch {
        // The CloudEvents Kafka binding: binary (ce_* headers, the body is the data) or
        // structured (the whole event).
        let (attrs, payload) = events::encode(&e.event, mode, "ce_");
        let mut headers = OwnedHeaders::new_with_capacity(attrs.len());
        for (k, v) in &attrs {
            headers = headers.insert(Header {
                key: k.as_str(),
                value: Some(v.as_str()),
            });
        }
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(e.event_id.clone()))
            .key(&e.tenant_id)
            .payload(&payload)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => {
                    queued.push(e.event_id.clone());
                    break;
                }
                Err((err, back)) => {
                    if err.rdkafka_error_code()
                        == Some(tenancy_plane_kafka::rdkafka::types::RDKafkaErrorCode::QueueFull)
                    {
                        producer.poll(std::time::Duration::from_millis(100));
                        record = back;
                    } else {
                        stopped = Some(format!("Kafka `{servers}`: {err}"));
                        break;
                    }
                }
            }
        }
        if stopped.is_some() {
            break;
        }
    }
    // Wait for the acknowledgements by polling (each poll returns as soon as a delivery
    // report is served); rdkafka's `flush` sleeps in 100 ms steps, which would be most of the
    // daemon's commit-to-event latency.
    let until = std::time::Instant::now() + deadline;
    while producer.in_flight_count() > 0 && std::time::Instant::now() < until {
        producer.poll(std::time::Duration::from_millis(5));
    }
    let reports = producer.context().take();
    let delivered: Vec<String> = reports
        .iter()
        .filter(|(_, ok)| **ok)
        .map(|(id, _)| id.clone())
        .collect();
    let failed = queued
        .iter()
        .filter(|id| reports.get(*id) == Some(&false))
        .count();
    let unreported = queued
        .iter()
        .filter(|id| !reports.contains_key(*id))
        .count();
    if failed > 0 {
        stopped.get_or_insert(format!(
            "Kafka `{servers}`: {failed} event(s) not acknowledged"
        ));
    }
    if unreported > 0 {
        stopped.get_or_insert(format!(
            "Kafka `{servers}`: {unreported} event(s) not acknowledged within {}s",
            deadline.as_secs()
        ));
    }
    match stopped {
        None => Ok(delivered),
        Some(why) => Err((delivered, why)),
    }
}
