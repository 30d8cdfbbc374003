//! The previous version of each tenant, so policies can judge transitions ("Archived → Active")
//! and regressions ("encryption weakened") rather than only the new state.
//!
//! Which previous version matters depends on who asks (DESIGN.md, "Policies"):
//!
//! * `apply`, the daemon and API writes judge a change against the tenant's **last applied**
//!   manifest in the state store ([`Previous::Applied`]). A tenant never applied is a creation,
//!   whatever older commits declared; a refused change stays refused until a change that passes
//!   replaces it — a later commit, a restart or a resync never makes the refused state the
//!   "previous" one.
//! * `plan --base B` and `validate --base B` judge against the version at **B**, the pull
//!   request's base ([`Previous::Revision`]), and also against the last applied one when a
//!   state store is configured: a change must pass against every baseline.
//! * `validate` without `--base` judges the commit's own change: its first parent (`HEAD` for
//!   the work tree) ([`Previous::Parent`]).
//!
//! Baselines are looked up by tenant id, never by file, so a tenant moved to another file, or
//! deleted and re-created, still has its previous version. For a revision baseline only the
//! files that differ from it are parsed again; a tenant in an unchanged file is its own
//! previous version there.

use crate::manifest::model::Tenant;
use crate::source::{self, ReadOptions, Snapshot, SourceError};
use crate::validate::{self, Located, ValidateOptions};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Where the previous versions come from (what the caller asks for).
#[derive(Debug, Clone)]
pub enum Previous {
    /// The revision's first parent (the work tree's: `HEAD`).
    Parent,
    /// The tenants declared at this revision (a pull request's base).
    Revision(String),
    /// The tenants' last applied manifests, as the state store holds them.
    Applied(Arc<Applied>),
}

/// Last applied manifests by tenant id (loaded from the state store by the caller).
#[derive(Debug, Default)]
pub struct Applied {
    tenants: HashMap<String, AppliedTenant>,
}

#[derive(Debug)]
struct AppliedTenant {
    /// The manifest as stored, parsed the first time it is asked for (a pass judges only the
    /// tenants it changed).
    text: String,
    /// The manifest, or why the stored one could not be read (the tenant is then refused:
    /// judging it as a creation would let any change through).
    manifest: std::sync::OnceLock<Result<Tenant, String>>,
    /// The commit it was applied at.
    commit: Option<String>,
}

impl AppliedTenant {
    fn manifest(&self) -> &Result<Tenant, String> {
        self.manifest.get_or_init(|| {
            serde_json::from_str::<Tenant>(&self.text)
                .map_err(|e| format!("the last applied manifest cannot be read: {e}"))
        })
    }
}

impl Applied {
    /// From (tenant id, stored manifest JSON, commit it was applied at).
    pub(crate) fn from_records(
        records: impl IntoIterator<Item = (String, String, Option<String>)>,
    ) -> Applied {
        let tenants = records
            .into_iter()
            .map(|(id, text, commit)| {
                let manifest = std::sync::OnceLock::new();
                (
                    id,
                    AppliedTenant {
                        text,
                        manifest,
                        commit,
                    },
                )
            })
            .collect();
        Applied { tenants }
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

/// What a change was judged against: it names the previous version in every decision record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Against {
    /// No earlier version: a creation.
    Nothing,
    /// The tenant as a commit declared it.
    Commit(String),
    /// The tenant's last applied manifest (and the commit it was applied at).
    Applied(Option<String>),
}

impl fmt::Display for Against {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Against::Nothing => f.write_str("nothing (a creation)"),
            Against::Commit(sha) => write!(f, "commit {sha}"),
            Against::Applied(Some(sha)) => write!(f, "last applied at {sha}"),
            Against::Applied(None) => f.write_str("last applied (work tree)"),
        }
    }
}

impl serde::Serialize for Against {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One tenant's previous version in one baseline.
pub(crate) enum Prior<'a> {
    /// None: a creation.
    Found(Option<&'a Tenant>, Against),
    /// The baseline holds the tenant but cannot say what it was.
    Unreadable(&'a str),
}

/// One baseline, loaded.
#[derive(Debug)]
enum Baseline {
    Revision {
        sha: String,
        /// Files that differ from the base (a tenant elsewhere is its own previous version).
        changed: BTreeSet<String>,
        /// Tenants of the changed files as the base declared them (and in which file), by id.
        previous: HashMap<String, (Tenant, String)>,
    },
    Applied(Arc<Applied>),
}

/// The baselines a change is judged against (none: every tenant is a creation).
#[derive(Debug, Default)]
pub struct History {
    baselines: Vec<Baseline>,
}

impl History {
    /// No baseline: every tenant is a creation.
    pub fn none() -> History {
        History::default()
    }

    /// How many baselines each change is judged against.
    pub fn len(&self) -> usize {
        self.baselines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.baselines.is_empty()
    }

    /// `t`'s previous version in each baseline, in order.
    pub(crate) fn priors<'a>(&'a self, t: &'a Located<Arc<Tenant>>) -> Vec<Prior<'a>> {
        let id = t.value.metadata.id.as_str();
        self.baselines
            .iter()
            .map(|b| match b {
                Baseline::Revision {
                    sha,
                    changed,
                    previous,
                } => {
                    let prior = if changed.contains(&t.file) {
                        previous.get(id).map(|(t, _)| t)
                    } else {
                        Some(&*t.value)
                    };
                    let against = match prior {
                        Some(_) => Against::Commit(sha.clone()),
                        None => Against::Nothing,
                    };
                    Prior::Found(prior, against)
                }
                Baseline::Applied(applied) => match applied.tenants.get(id) {
                    None => Prior::Found(None, Against::Nothing),
                    Some(a) => match a.manifest() {
                        Ok(m) => Prior::Found(Some(m), Against::Applied(a.commit.clone())),
                        Err(why) => Prior::Unreadable(why),
                    },
                },
            })
            .collect()
    }

    /// Load `previous` for `snapshot`, read at `rev` (or the work tree when `rev` is None).
    pub fn load(
        repo: &Path,
        rev: Option<&str>,
        snapshot: &Snapshot,
        opts: &ReadOptions,
        previous: &[Previous],
    ) -> Result<History, SourceError> {
        let mut baselines = Vec::new();
        for p in previous {
            match p {
                Previous::Applied(a) => baselines.push(Baseline::Applied(a.clone())),
                Previous::Revision(base) => {
                    baselines.push(revision_baseline(repo, base, rev, snapshot, opts)?);
                }
                Previous::Parent => match rev {
                    Some(rev) => {
                        if let Some(parent) = source::parent_of(repo, rev)? {
                            baselines.push(revision_baseline(
                                repo,
                                &parent,
                                Some(rev),
                                snapshot,
                                opts,
                            )?);
                        }
                    }
                    // The work tree's parent is HEAD (none in a repository without commits).
                    None => {
                        if source::parent_of(repo, "HEAD").is_ok() {
                            baselines.push(revision_baseline(repo, "HEAD", None, snapshot, opts)?);
                        }
                    }
                },
            }
        }
        Ok(History { baselines })
    }
}

/// A uniqueness conflict is the newcomer's: the tenant that held a name in a baseline keeps it.
impl validate::Incumbency for History {
    fn holds_id(&self, id: &str, file: &str) -> bool {
        self.baselines.iter().any(|b| match b {
            Baseline::Revision {
                changed, previous, ..
            } => !changed.contains(file) || previous.get(id).is_some_and(|(_, f)| f == file),
            // The state store does not say which file declared a tenant.
            Baseline::Applied(_) => false,
        })
    }

    fn holds_external_id(&self, id: &str, file: &str, key: &str, value: &str) -> bool {
        let declares = |t: &Tenant| t.spec.external_ids.get(key).map(String::as_str) == Some(value);
        self.baselines.iter().any(|b| match b {
            Baseline::Revision {
                changed, previous, ..
            } => !changed.contains(file) || previous.get(id).is_some_and(|(t, _)| declares(t)),
            Baseline::Applied(a) => a
                .tenants
                .get(id)
                .is_some_and(|a| a.manifest().as_ref().is_ok_and(declares)),
        })
    }
}

/// The tenants declared at `base`, for a snapshot read at `rev` (the work tree when None).
fn revision_baseline(
    repo: &Path,
    base: &str,
    rev: Option<&str>,
    snapshot: &Snapshot,
    opts: &ReadOptions,
) -> Result<Baseline, SourceError> {
    let sha = source::resolve(repo, base)?;
    let changed: BTreeSet<String> = match (rev, &snapshot.commit) {
        (Some(_), Some(head)) => source::changed_paths(repo, &sha, &head.sha, opts)?
            .into_iter()
            .map(|c| c.path)
            .collect(),
        // The work tree: every file whose text differs from the base, or that it lacks.
        _ => {
            let base_files = source::read_revision(repo, &sha, opts)?;
            let current: HashMap<&str, &str> = snapshot
                .files
                .iter()
                .map(|f| (f.path.as_str(), f.text.as_str()))
                .collect();
            let mut changed: BTreeSet<String> = base_files
                .files
                .iter()
                .filter(|f| current.get(f.path.as_str()) != Some(&f.text.as_str()))
                .map(|f| f.path.clone())
                .collect();
            let in_base: BTreeSet<&str> =
                base_files.files.iter().map(|f| f.path.as_str()).collect();
            changed.extend(
                snapshot
                    .files
                    .iter()
                    .filter(|f| !in_base.contains(f.path.as_str()))
                    .map(|f| f.path.clone()),
            );
            changed
        }
    };
    let mut previous = HashMap::new();
    if !changed.is_empty() {
        let only = ReadOptions {
            only: Some(changed.clone()),
            ..opts.clone()
        };
        let old = source::read_revision(repo, &sha, &only)?;
        // Findings about the old version are not this change's business; take what parsed.
        let report = validate::validate(&old, &ValidateOptions::default());
        for t in report.catalog.tenants {
            previous.insert(
                t.value.metadata.id.to_string(),
                (Arc::unwrap_or_clone(t.value), t.file),
            );
        }
    }
    Ok(Baseline::Revision {
        sha,
        changed,
        previous,
    })
}
