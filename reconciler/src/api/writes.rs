//! Writes through Git: an API write edits the tenant's manifest in the repository the daemon
//! watches and commits it, authored by the caller — so API changes sit in the same history as
//! pull requests. The candidate commit is validated and policy-checked *before* the branch moves
//! (a refusal is a 422 with the findings `tenancy validate` prints, and no commit); the branch
//! is moved with compare-and-swap, retried on a race, so no commit is ever lost.

use super::edit::{EditError, Editor};
use crate::policy::history::Previous;
use crate::reconcile::{self, Inputs};
use crate::validate::Catalog;
use crate::validate::delta::Validated;
use std::path::{Path, PathBuf};

/// Where writes go.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub repo: PathBuf,
    pub path: String,
    pub bundle: Option<PathBuf>,
    /// Largest manifest file read, as the daemon reads them.
    pub max_file_bytes: u64,
    /// Push each commit here first (a remote name or URL, and its branch): the local branch
    /// moves only once the remote has taken the commit.
    pub push: Option<Push>,
    /// What the last writes read: a write re-parses only the files that changed since.
    pub cache: std::sync::Arc<std::sync::Mutex<WriteCache>>,
}

#[derive(Debug, Default)]
pub struct WriteCache {
    /// What each manifest parsed to, by blob.
    parsed: crate::validate::ParseCache,
    /// The head last judged (the last commit written, or the head a refused write read): the
    /// next write starts from it when the branch is still there, instead of validating the
    /// head again. Kept whatever the write's outcome.
    last: Option<(String, Head)>,
}

/// The catalog and errors of `head`: the one judged last when it is still the head.
fn head_of<'c>(
    last: &'c mut Option<(String, Head)>,
    parsed: &mut crate::validate::ParseCache,
    target: &WriteTarget,
    head: &str,
) -> Result<&'c mut Head, WriteError> {
    if last.as_ref().is_none_or(|(sha, _)| sha != head) {
        *last = Some((head.to_owned(), evaluate_head(target, parsed, head)?));
    }
    Ok(&mut last.as_mut().expect("set above").1)
}

/// What a write starts from: the branch head, validated, and the errors it already has.
#[derive(Debug)]
struct Head {
    validated: Validated,
    errors: std::collections::HashSet<FindingKey>,
}

impl Head {
    fn catalog(&self) -> &Catalog {
        &self.validated.report.catalog
    }
}

/// A finding as a write compares it with its parent's: its rule, file, tenant and field —
/// not its position or wording, which an edit elsewhere in the file may shift.
type FindingKey = (String, String, Option<String>, Option<String>);

fn finding_key(f: &crate::diagnostics::Finding) -> FindingKey {
    (
        f.rule.to_string(),
        f.file.clone(),
        f.tenant.clone(),
        f.pointer.clone(),
    )
}

fn error_keys(findings: &[crate::diagnostics::Finding]) -> std::collections::HashSet<FindingKey> {
    findings
        .iter()
        .filter(|f| f.severity == crate::diagnostics::Severity::Error)
        .map(finding_key)
        .collect()
}

#[derive(Debug, Clone)]
pub struct Push {
    pub remote: String,
    pub branch: String,
}

/// The remote `push` names: a URL or path as is, else a remote of `repo`.
fn remote_of<'r>(repo: &'r git2::Repository, push: &Push) -> Result<git2::Remote<'r>, WriteError> {
    let looks_like_url = push.remote.contains("://") || push.remote.starts_with(['/', '.']);
    Ok(if looks_like_url {
        repo.remote_anonymous(&push.remote)?
    } else {
        repo.find_remote(&push.remote)?
    })
}

/// Push `commit` to `push` as a fast-forward of its branch. `Ok(false)` when the remote's
/// branch has moved (the commit does not descend from it): fetch and try again.
fn push_commit(
    repo: &git2::Repository,
    push: &Push,
    commit: git2::Oid,
) -> Result<bool, WriteError> {
    let mut remote = remote_of(repo, push)?;
    // libgit2 pushes references, not bare ids: a scratch ref names the candidate.
    let scratch = "refs/tenancy/api-push";
    repo.reference(scratch, commit, true, "API write to push")?;
    let refspec = format!("{scratch}:refs/heads/{}", push.branch);
    let rejected = std::cell::RefCell::new(None::<String>);
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.push_update_reference(|_, status| {
        if let Some(why) = status {
            *rejected.borrow_mut() = Some(why.to_owned());
        }
        Ok(())
    });
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks);
    let pushed = remote.push(&[refspec.as_str()], Some(&mut options));
    drop(options);
    let _ = repo.find_reference(scratch).and_then(|mut r| r.delete());
    // Only "the remote moved" is retried; any other refusal (a protected branch, a hook) is
    // the answer.
    let moved = |why: &str| {
        let why = why.to_ascii_lowercase();
        why.contains("fast-forward") || why.contains("fastforward") || why.contains("fetch first")
    };
    match (pushed, rejected.into_inner()) {
        (Ok(()), None) => Ok(true),
        (Ok(()), Some(why)) if moved(&why) => Ok(false),
        (Ok(()), Some(why)) => Err(WriteError::Git(format!(
            "{} refused the push: {why}",
            crate::source::redact(&push.remote)
        ))),
        (Err(e), _) if e.code() == git2::ErrorCode::NotFastForward => Ok(false),
        (Err(e), _) if moved(e.message()) => Ok(false),
        (Err(e), _) => Err(WriteError::Git(format!(
            "push to {} failed: {}",
            crate::source::redact(&push.remote),
            e.message()
        ))),
    }
}

/// Bring the local branch up to the remote's (after a rejected push).
fn fetch_branch(repo: &git2::Repository, push: &Push, ref_name: &str) -> Result<(), WriteError> {
    let mut remote = remote_of(repo, push)?;
    let scratch = "refs/tenancy/api-fetch";
    remote.fetch(
        &[format!("+refs/heads/{}:{scratch}", push.branch).as_str()],
        None,
        None,
    )?;
    let theirs = repo.find_reference(scratch)?.peel_to_commit()?.id();
    let _ = repo.find_reference(scratch).and_then(|mut r| r.delete());
    // Only forward: local commits the remote does not have are never dropped.
    let ours = repo.refname_to_id(ref_name)?;
    if ours != theirs && !repo.graph_descendant_of(theirs, ours)? {
        return Err(WriteError::Diverged(format!(
            "{ref_name} and {} have diverged; bring them together by hand (nothing was written)",
            crate::source::redact(&push.remote)
        )));
    }
    if !repo.is_bare() {
        // Unmodified files follow; local modifications are left alone (and stop the move).
        let target = repo.find_commit(theirs)?;
        repo.checkout_tree(
            target.as_object(),
            Some(git2::build::CheckoutBuilder::new().safe()),
        )?;
    }
    repo.reference_matching(ref_name, theirs, true, ours, "API write: the remote moved")?;
    Ok(())
}

#[derive(Debug)]
pub enum WriteError {
    /// The tenant's manifest was not found in the repository.
    NoManifest(String),
    /// The tenant (or its file) already exists.
    Exists(String),
    /// The request cannot be made (an unknown organization, no region to place it in); the
    /// field and why.
    Invalid(String, String),
    /// Nothing to change (already in the requested state).
    Unchanged(String),
    /// The manifest cannot be edited in place (flow style, say): change it by hand.
    NotEditable(String),
    /// Validation or policy refused the change: the file written and the findings.
    Refused(String, Vec<crate::diagnostics::Finding>),
    /// The tenant is not in a state the request may start from (deleting an open tenant
    /// without force): why.
    Precondition(String),
    /// `If-Match` names another version than the tenant's (judged after the change itself,
    /// so an invalid change is refused as invalid whatever the precondition): why.
    IfMatch(String),
    /// The branch kept moving under us.
    Race,
    /// The local branch and the remote have diverged: a person must bring them together.
    Diverged(String),
    Git(String),
}

impl From<git2::Error> for WriteError {
    fn from(e: git2::Error) -> Self {
        WriteError::Git(e.message().to_owned())
    }
}

impl From<EditError> for WriteError {
    fn from(e: EditError) -> Self {
        WriteError::NotEditable(e.0)
    }
}

/// The commit `head`, validated (and its parse results kept in `parsed`).
fn evaluate_head(
    target: &WriteTarget,
    parsed: &mut crate::validate::ParseCache,
    head: &str,
) -> Result<Head, WriteError> {
    let report = reconcile::evaluate_cached(
        &Inputs {
            path: target.path.clone(),
            max_file_bytes: target.max_file_bytes,
            ..Inputs::new(&target.repo, Some(head))
        },
        Some(parsed),
    )
    .map_err(|e| WriteError::Git(e.to_string()))?
    .report;
    Ok(Head {
        errors: error_keys(&report.findings),
        validated: Validated::new(report, parsed),
    })
}

/// How a candidate was judged: by its delta from the head, or whole.
enum Judged {
    Delta(crate::validate::delta::Delta),
    Whole(crate::validate::Report),
}

impl Judged {
    /// The candidate's findings that can differ from its parent's (all of them, judged whole).
    fn findings(&self) -> &[crate::diagnostics::Finding] {
        match self {
            Judged::Delta(delta) => &delta.findings,
            Judged::Whole(report) => &report.findings,
        }
    }

    /// Did the validator take `file` as tenant `tenant`'s manifest?
    fn reads_as(&self, tenant: &str, file: &str) -> bool {
        match self {
            Judged::Delta(delta) => delta
                .written()
                .any(|t| t.value.metadata.id.as_str() == tenant),
            Judged::Whole(report) => report
                .catalog
                .tenant(tenant)
                .is_some_and(|t| t.file == file),
        }
    }
}

/// Validate the branch head in the background, so the first write starts from it instead of
/// validating the whole repository while the caller waits. A failure is left for that write
/// to report.
pub fn warm(target: &WriteTarget) {
    let target = target.clone();
    let warmed = std::thread::Builder::new()
        .name("tenancy-api-warm".into())
        .spawn(move || {
            let head = git2::Repository::open(&target.repo)
                .and_then(|r| r.head()?.peel_to_commit().map(|c| c.id().to_string()));
            let Ok(head) = head else { return };
            let mut cache = target.cache.lock().unwrap_or_else(|p| p.into_inner());
            let WriteCache { parsed, last } = &mut *cache;
            if let Err(e) = head_of(last, parsed, &target, &head) {
                tracing::debug!(error = ?e, "the API could not validate the branch head ahead of writes");
            }
        });
    if let Err(e) = warmed {
        tracing::debug!(error = %e, "no thread to validate the branch head ahead of writes");
    }
}

/// A tenant as the branch head declares it: what API writes judge their preconditions against
/// (the API reads its own writes, whether or not the daemon has applied them yet).
#[derive(Debug, Clone)]
pub struct CommittedTenant {
    pub organization: String,
    pub lifecycle: crate::manifest::Lifecycle,
    pub profile: String,
}

/// `tenant` at the branch head, if the repository declares it.
pub fn committed(
    target: &WriteTarget,
    tenant: &str,
) -> Result<Option<CommittedTenant>, WriteError> {
    let repo = git2::Repository::open(&target.repo)?;
    let head = repo.head()?.peel_to_commit()?.id().to_string();
    let mut cache = target.cache.lock().unwrap_or_else(|p| p.into_inner());
    let WriteCache { parsed, last } = &mut *cache;
    let at = head_of(last, parsed, target, &head)?;
    let found = at.catalog().tenant(tenant).map(|t| CommittedTenant {
        organization: t.value.metadata.organization.to_string(),
        lifecycle: t.value.spec.lifecycle,
        profile: serde_json::to_value(t.value.spec.profile)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    });
    Ok(found)
}

/// What a write sees at the branch head.
pub struct AtHead<'a> {
    pub catalog: &'a Catalog,
    /// The tenant's manifest: its file, document index and the file's text; `None` when the
    /// repository declares no such tenant.
    pub current: Option<(&'a str, usize, &'a str)>,
}

/// An edit: from what is at the head, the file to write and its new text.
pub type Edit = dyn Fn(&AtHead<'_>) -> Result<(String, String), WriteError> + Send + Sync;

/// An edit of an existing tenant's manifest document.
pub fn modify(
    tenant: String,
    change: impl Fn(&mut Editor) -> Result<(), WriteError> + Send + Sync + 'static,
) -> Box<Edit> {
    Box::new(move |head: &AtHead<'_>| {
        let (file, doc, text) = head
            .current
            .ok_or_else(|| WriteError::NoManifest(format!("tenant `{tenant}`")))?;
        let mut editor = Editor::new(text, doc)?;
        change(&mut editor)?;
        Ok((file.to_owned(), editor.into_text()))
    })
}

/// Set the lifecycle to `to`; `Deleted` adds the confirmation (`deletion: { confirm, reason }`).
/// `from`, when not empty, lists the committed states the change may start from.
pub fn lifecycle(
    tenant: String,
    to: crate::manifest::Lifecycle,
    reason: String,
    from: &'static [crate::manifest::Lifecycle],
) -> Box<Edit> {
    use crate::manifest::Lifecycle;
    let id = tenant.clone();
    modify(tenant, move |e| {
        let tenant = id.as_str();
        let now = e.document()["spec"]["lifecycle"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if now == to.as_str() {
            return Err(WriteError::Unchanged(format!(
                "tenant `{tenant}` is already {}",
                to.as_str()
            )));
        }
        if !from.is_empty() && !from.iter().any(|f| f.as_str() == now) {
            let states: Vec<&str> = from.iter().map(|f| f.as_str()).collect();
            return Err(WriteError::Precondition(format!(
                "tenant `{tenant}` is {now}; it must be {} first",
                states.join(" or ")
            )));
        }
        e.set("spec", "lifecycle", Some(&to.as_str().into()))?;
        if to == Lifecycle::Deleted && e.document()["spec"].get("deletion").is_none() {
            let deletion = serde_json::json!({ "confirm": tenant, "reason": reason });
            e.set("spec", "deletion", Some(&deletion))?;
        }
        Ok(())
    })
}

/// Commit `edit` of `tenant`'s manifest after validating and governing the candidate; returns
/// the new commit's sha.
///
/// The candidate is judged against the branch head and against `applied` (the tenant's last
/// applied manifest, as the daemon will judge it), and refused when it has an error on the
/// written tenant or file, or **any** error anywhere that its parent does not have: a write
/// to one tenant can never leave another one broken (a claimed external id is the writer's
/// conflict, not the incumbent's).
pub fn commit(
    target: &WriteTarget,
    tenant: &str,
    author: &str,
    message: &str,
    edit: &Edit,
    applied: Option<Previous>,
    if_match: Option<String>,
) -> Result<String, WriteError> {
    for _attempt in 0..5 {
        let repo = git2::Repository::open(&target.repo)?;
        let head_ref = repo.head()?;
        let ref_name = head_ref
            .name()
            .map_err(|_| WriteError::Git("HEAD is not a named branch".into()))?
            .to_owned();
        let parent = head_ref.peel_to_commit()?;
        let head = parent.id().to_string();
        // The tenant's file as the validator sees it at HEAD.
        let mut cache = target.cache.lock().unwrap_or_else(|p| p.into_inner());
        let WriteCache { parsed, last } = &mut *cache;
        let at_head = head_of(last, parsed, target, &head)?;
        let catalog = at_head.catalog();
        let located = catalog.tenant(tenant).map(|t| (t.file.clone(), t.doc));
        let text = match &located {
            Some((file, _)) => {
                let entry = parent.tree()?.get_path(Path::new(file))?;
                let blob = repo.find_blob(entry.id())?;
                Some(
                    String::from_utf8(blob.content().to_vec())
                        .map_err(|_| WriteError::Git(format!("{file} is not UTF-8")))?,
                )
            }
            None => None,
        };
        let current = located
            .as_ref()
            .zip(text.as_deref())
            .map(|((file, doc), text)| (file.as_str(), *doc, text));
        let (file, new_text) = edit(&AtHead { catalog, current })?;
        if current.is_some_and(|(f, _, t)| f == file && t == new_text) {
            return Err(WriteError::Unchanged(format!(
                "the request changes nothing in `{tenant}`'s manifest"
            )));
        }
        if current.is_none() && parent.tree()?.get_path(Path::new(&file)).is_ok() {
            return Err(WriteError::Exists(format!(
                "`{file}` already exists in the repository"
            )));
        }
        let new_blob = repo.blob(new_text.as_bytes())?;
        let mut update = git2::build::TreeUpdateBuilder::new();
        update.upsert(&file, new_blob, git2::FileMode::Blob);
        let tree_id = update.create_updated(&repo, &parent.tree()?)?;
        let tree = repo.find_tree(tree_id)?;
        let (name, email) = (author, format!("{author}@api.tenancy.invalid"));
        let sig = git2::Signature::now(name, &email)?;
        // The candidate commit exists only as an object until it is judged.
        let candidate = repo.commit(None, &sig, &sig, message, &tree, &[&parent])?;
        let inputs = Inputs {
            path: target.path.clone(),
            max_file_bytes: target.max_file_bytes,
            bundle: target.bundle.clone(),
            govern_only: Some([file.clone()].into_iter().collect()),
            previous: std::iter::once(Previous::Revision(head.clone()))
                .chain(applied.clone())
                .collect(),
            ..Inputs::new(&target.repo, Some(&candidate.to_string()))
        };
        let evaluate = |e: reconcile::EvaluateError| WriteError::Git(e.to_string());
        // Judged by what it changed when it changes a tenant file (what API writes do);
        // otherwise the whole candidate is validated.
        let judged = match reconcile::evaluate_change(&inputs, &at_head.validated, &file, &new_text)
            .map_err(evaluate)?
        {
            Some(change) => Judged::Delta(change.delta),
            None => Judged::Whole(
                reconcile::evaluate_cached(&inputs, Some(parsed))
                    .map_err(evaluate)?
                    .report,
            ),
        };
        let refused: Vec<_> = judged
            .findings()
            .iter()
            .filter(|f| {
                f.severity == crate::diagnostics::Severity::Error
                    && (f.tenant.as_deref() == Some(tenant)
                        || f.file == file
                        || !at_head.errors.contains(&finding_key(f)))
            })
            .cloned()
            .collect();
        if !refused.is_empty() {
            return Err(WriteError::Refused(file, refused));
        }
        if let Some(why) = &if_match {
            return Err(WriteError::IfMatch(why.clone()));
        }
        // A file the validator did not take as this tenant's manifest (outside the tenants
        // path, say) would commit something the daemon never reconciles.
        if !judged.reads_as(tenant, &file) {
            return Err(WriteError::Invalid(
                "tenantId".into(),
                format!("`{file}` would not be read as tenant `{tenant}`'s manifest"),
            ));
        }
        // The remote first, when there is one: it takes the commit only as a fast-forward.
        if let Some(push) = &target.push
            && !push_commit(&repo, push, candidate)?
        {
            fetch_branch(&repo, push, &ref_name)?;
            continue;
        }
        // What the next write starts from: the candidate, judged.
        match judged {
            Judged::Delta(delta) => {
                // The errors the delta replaces: the file's own, and the cross-tenant ones of
                // the tenants it shares names with.
                at_head.errors.retain(|(rule, f, t, _)| {
                    *f != delta.path
                        && !(t.is_some()
                            && crate::validate::TENANT_RULES.contains(&rule.as_str())
                            && delta.component.contains(f))
                });
                at_head.errors.extend(error_keys(&delta.findings));
                at_head.validated.apply(delta);
                if let Some((sha, _)) = last.as_mut() {
                    *sha = candidate.to_string();
                }
            }
            Judged::Whole(report) => {
                *last = Some((
                    candidate.to_string(),
                    Head {
                        errors: error_keys(&report.findings),
                        validated: Validated::new(report, parsed),
                    },
                ));
            }
        }
        drop(cache);
        // Compare-and-swap: only if the branch is still where we read it. Once the remote
        // has the commit it is written, whatever the local branch does meanwhile (a fetch of
        // the mirror may already have brought it, or something newer).
        match repo.reference_matching(&ref_name, candidate, true, parent.id(), message) {
            Ok(_) => {}
            Err(e) if e.code() == git2::ErrorCode::Modified && target.push.is_some() => {}
            Err(e) if e.code() == git2::ErrorCode::Modified => continue,
            Err(e) => return Err(e.into()),
        }
        // Keep a work tree in step for that one file — unless someone is editing it there.
        if let Some(workdir) = repo.workdir() {
            let on_disk = std::fs::read_to_string(workdir.join(&file)).ok();
            let before = current.filter(|(f, _, _)| *f == file).map(|(_, _, t)| t);
            if on_disk.as_deref() == before {
                std::fs::write(workdir.join(&file), &new_text)
                    .map_err(|e| WriteError::Git(format!("{file}: {e}")))?;
                let mut index = repo.index()?;
                index.add_path(Path::new(&file))?;
                index.write()?;
            }
        }
        return Ok(candidate.to_string());
    }
    Err(WriteError::Race)
}
