//! Stage 1, evaluate: read a revision, validate it and run the policies; what a pass starts from.

use super::*;

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
pub(crate) const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 20;

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

/// [`applied_baseline`] of some tenants (an API write, a one-file commit: the tenants its
/// judgement involves), one indexed lookup each.
pub(crate) async fn applied_baseline_of(
    store: &Store,
    tenants: impl IntoIterator<Item = &str>,
) -> Result<Previous, StoreError> {
    let mut records = Vec::new();
    // (An empty id would ask for every tenant.)
    for tenant in tenants.into_iter().filter(|t| !t.is_empty()) {
        records.extend(store.applied_manifests(Some(tenant)).await?);
    }
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

/// The process's policy host: one wasmtime engine and its compiled modules (by digest), shared
/// by every evaluation — a daemon pass, an API write — instead of a new engine each time. Each
/// evaluation still runs in a fresh store and instance: the sandbox is per call, the compiled
/// code is not. A host that cannot be created is not kept, so the next evaluation tries again.
fn shared_host() -> Result<Arc<PolicyHost>, EvaluateError> {
    static HOST: std::sync::Mutex<Option<Arc<PolicyHost>>> = std::sync::Mutex::new(None);
    let mut host = HOST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = host.as_ref() {
        return Ok(h.clone());
    }
    let created = Arc::new(PolicyHost::new().map_err(EvaluateError::PolicyHost)?);
    *host = Some(created.clone());
    Ok(created)
}

/// Read, validate and govern one revision.
pub fn evaluate(inputs: &Inputs) -> Result<Evaluation, EvaluateError> {
    evaluate_cached(inputs, None)
}

/// [`evaluate`], re-parsing only the files whose blobs are not in `cache` (the daemon keeps one
/// across passes).
pub(crate) fn evaluate_cached(
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
    let (policies, governance) = match &bundle {
        Some(bundle) => {
            let locator = Locator::new(&snapshot, Default::default());
            let judged = judge_policies(
                bundle,
                &report.catalog,
                &report.findings,
                &history,
                snapshot.commit.as_ref(),
                &locator,
                inputs.govern_only.as_ref(),
            )?;
            let (policies, mut governance) = judged;
            tracing::info!(
                evaluations = governance.evaluations,
                elapsed_ms = ms(),
                "governed"
            );
            report.add_findings(std::mem::take(&mut governance.findings));
            (policies, governance)
        }
        None => Default::default(),
    };
    Ok(Evaluation {
        snapshot,
        report,
        policies,
        governance,
    })
}

/// Run `bundle`'s policies over the tenants of `catalog` that have no validation error in
/// `findings` (and, with `only`, are declared in one of those files).
fn judge_policies(
    bundle: &Bundle,
    catalog: &validate::Catalog,
    findings: &[diagnostics::Finding],
    history: &History,
    commit: Option<&source::CommitInfo>,
    locator: &Locator<'_>,
    only: Option<&BTreeSet<String>>,
) -> Result<(Vec<PolicyStatus>, Governance), EvaluateError> {
    let set = PolicySet::load(shared_host()?, bundle);
    let policies = set
        .policies
        .iter()
        .map(|(entry, module)| PolicyStatus {
            name: entry.name.clone(),
            digest: entry.sha256.clone(),
            mode: entry.mode,
            error: module.as_ref().err().map(|e| e.to_string()),
        })
        .collect();
    // A tenant that already failed validation is not judged: its errors come first.
    let invalid: HashSet<&str> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .filter_map(|f| f.tenant.as_deref())
        .collect();
    let judging = std::time::Instant::now();
    let mut governance = govern(&set, catalog, history, commit, locator, |t| {
        !invalid.contains(t.value.metadata.id.as_str())
            && only.is_none_or(|only| only.contains(&t.file))
    });
    governance.seconds = judging.elapsed().as_secs_f64();
    Ok((policies, governance))
}

/// A one-file change, judged by its delta.
pub(crate) struct JudgedChange {
    /// What the change replaces in the revision; its findings include the policies' denies.
    pub delta: validate::delta::Delta,
    /// The candidate commit (no files: the change is in `delta`).
    pub snapshot: Snapshot,
    pub policies: Vec<PolicyStatus>,
    /// The policies' decisions over the written tenants (their findings are in `delta`).
    pub governance: Governance,
}

impl JudgedChange {
    /// The change applied to `head`, as the evaluation of its commit: `head` becomes the
    /// commit validated, and the evaluation holds its report until [`Evaluation::restore`]
    /// gives it back.
    pub(crate) fn into_evaluation(self, head: &mut validate::delta::Validated) -> Evaluation {
        let JudgedChange {
            delta,
            snapshot,
            policies,
            governance,
        } = self;
        head.apply(delta);
        Evaluation {
            snapshot,
            report: std::mem::take(&mut head.report),
            policies,
            governance,
        }
    }
}

impl Evaluation {
    /// Give the report back to the revision validated it was taken from.
    pub fn restore(self, head: &mut validate::delta::Validated) {
        head.report = self.report;
    }
}

/// Judge the candidate commit `rev`, which changes only `path` (to `text`) from the revision
/// `head` validated, without reading or validating the rest of the repository again: the
/// file's own checks, the cross-tenant checks of the tenants it shares a name with, and the
/// policies over its tenants, judged against `inputs.previous`. `None` when the change
/// cannot be judged by its delta (a platform or organization file, a file the reader would
/// not take): evaluate the whole revision.
pub(crate) fn evaluate_change(
    inputs: &Inputs,
    head: &validate::delta::Validated,
    path: &str,
    text: &str,
) -> Result<Option<JudgedChange>, EvaluateError> {
    let opts = ReadOptions {
        path: inputs.path.clone(),
        max_file_bytes: inputs.max_file_bytes,
        only: None,
    };
    let Some(rev) = inputs.rev.as_deref() else {
        return Ok(None);
    };
    if !source::reads(&opts, path, text.len() as u64) {
        return Ok(None);
    }
    let commit = source::read_commit(&inputs.repo, rev)?;
    let snapshot = Snapshot {
        commit: Some(commit),
        ..Snapshot::default()
    };
    let history = History::load(&inputs.repo, Some(rev), &snapshot, &opts, &inputs.previous)?;
    let id = git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
        .map_err(source::SourceError::from)?;
    let Some(mut delta) = head.judge(path, id, text, &ValidateOptions::default(), &history) else {
        return Ok(None);
    };
    let (policies, mut governance) = match inputs.bundle.as_deref() {
        Some(bundle) => {
            let bundle = Bundle::load(bundle)?;
            // The policies see the platform and the written tenants: nothing else is judged.
            let catalog = validate::Catalog {
                tenants: delta.written().cloned().collect(),
                regions: head.report.catalog.regions.clone(),
                plans: head.report.catalog.plans.clone(),
                organizations: Vec::new(),
            };
            let locator = Locator::over([(path, text)], Default::default());
            let only = BTreeSet::from([path.to_owned()]);
            judge_policies(
                &bundle,
                &catalog,
                &delta.findings,
                &history,
                snapshot.commit.as_ref(),
                &locator,
                Some(&only),
            )?
        }
        None => Default::default(),
    };
    // The change's findings now carry its policy decisions too.
    delta.findings.append(&mut governance.findings);
    Ok(Some(JudgedChange {
        delta,
        snapshot,
        policies,
        governance,
    }))
}

/// Tenants whose manifests differ between two revisions (all of them when a platform or
/// organization file changed), and the files of tenants removed from the repository.
pub(crate) fn changed_tenants(
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
