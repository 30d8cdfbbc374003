//! The previous version of each tenant, so policies can judge transitions ("Archived → Active")
//! and regressions ("encryption weakened") rather than only the new state.
//!
//! The base is the first parent of the revision being checked (or `HEAD` for work-tree
//! checks). Only files that differ from the base are parsed again; a tenant in an unchanged
//! file is its own previous version.

use crate::manifest::model::Tenant;
use crate::source::{self, ReadOptions, Snapshot, SourceError};
use crate::validate::{self, Located, ValidateOptions};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

#[derive(Debug, Default)]
pub struct History {
    /// None: there is no base (first commit), every tenant is new.
    changed_files: Option<BTreeSet<String>>,
    previous: HashMap<String, Tenant>,
    /// The base commit's sha, when there is one.
    pub base: Option<String>,
}

impl History {
    /// No base: every tenant is a creation.
    pub fn none() -> History {
        History::default()
    }

    /// The previous version of `t`, or None when it is new.
    pub fn previous_of<'a>(&'a self, t: &'a Located<Tenant>) -> Option<&'a Tenant> {
        let changed = self.changed_files.as_ref()?;
        if changed.contains(&t.file) {
            self.previous.get(t.value.metadata.id.as_str())
        } else {
            Some(&t.value)
        }
    }

    /// History for `snapshot`, read at `rev` (or the work tree when `rev` is None).
    pub fn load(
        repo: &Path,
        rev: Option<&str>,
        snapshot: &Snapshot,
        opts: &ReadOptions,
    ) -> Result<History, SourceError> {
        let (base, changed) = match rev {
            Some(rev) => {
                let Some(parent) = source::parent_of(repo, rev)? else {
                    return Ok(History::none());
                };
                let head = snapshot
                    .commit
                    .as_ref()
                    .map(|c| c.sha.clone())
                    .unwrap_or_else(|| rev.to_owned());
                let changed: BTreeSet<String> = source::changed_paths(repo, &parent, &head, opts)?
                    .into_iter()
                    .map(|c| c.path)
                    .collect();
                (parent, changed)
            }
            None => {
                let Ok(base) = source::read_revision(repo, "HEAD", opts) else {
                    return Ok(History::none());
                };
                let current: HashMap<&str, &str> = snapshot
                    .files
                    .iter()
                    .map(|f| (f.path.as_str(), f.text.as_str()))
                    .collect();
                let mut changed: BTreeSet<String> = base
                    .files
                    .iter()
                    .filter(|f| current.get(f.path.as_str()) != Some(&f.text.as_str()))
                    .map(|f| f.path.clone())
                    .collect();
                let in_base: BTreeSet<&str> = base.files.iter().map(|f| f.path.as_str()).collect();
                changed.extend(
                    snapshot
                        .files
                        .iter()
                        .filter(|f| !in_base.contains(f.path.as_str()))
                        .map(|f| f.path.clone()),
                );
                let sha = base.commit.map(|c| c.sha).unwrap_or_default();
                (sha, changed)
            }
        };
        let mut previous = HashMap::new();
        if !changed.is_empty() {
            let only = ReadOptions {
                only: Some(changed.clone()),
                ..opts.clone()
            };
            let old = source::read_revision(repo, &base, &only)?;
            // Findings about the old version are not this change's business; take what parsed.
            let report = validate::validate(&old, &ValidateOptions::default());
            for t in report.catalog.tenants {
                previous.insert(t.value.metadata.id.to_string(), t.value);
            }
        }
        Ok(History {
            changed_files: Some(changed),
            previous,
            base: Some(base),
        })
    }
}
