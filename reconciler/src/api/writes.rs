//! Writes through Git: an API write edits the tenant's manifest in the repository the daemon
//! watches and commits it, authored by the caller — so API changes sit in the same history as
//! pull requests. The candidate commit is validated and policy-checked *before* the branch moves
//! (a refusal is a 422 with the findings `tenancy validate` prints, and no commit); the branch
//! is moved with compare-and-swap, retried on a race, so no commit is ever lost.

use crate::reconcile::{self, Inputs};
use std::path::{Path, PathBuf};

/// Where writes go.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub repo: PathBuf,
    pub path: String,
    pub bundle: Option<PathBuf>,
}

#[derive(Debug)]
pub enum WriteError {
    /// The tenant's manifest was not found in the repository.
    NoManifest(String),
    /// Nothing to change (already in the requested state).
    Unchanged(String),
    /// Validation or policy refused the change: the findings.
    Refused(Vec<crate::diagnostics::Finding>),
    /// The branch kept moving under us.
    Race,
    Git(String),
}

impl From<git2::Error> for WriteError {
    fn from(e: git2::Error) -> Self {
        WriteError::Git(e.message().to_owned())
    }
}

/// Set `lifecycle:` in the first document of `text` that declares it; `None` when absent.
fn set_lifecycle(text: &str, to: &str) -> Option<String> {
    let at = text.find("lifecycle:")?;
    let value_start = at + "lifecycle:".len();
    let rest = &text[value_start..];
    let skip = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    let value_len = rest[skip..]
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len() - skip);
    if value_len == 0 {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..value_start + skip]);
    out.push_str(to);
    out.push_str(&text[value_start + skip + value_len..]);
    Some(out)
}

/// Mark a tenant Deleted with its confirmation: `lifecycle: Deleted` and, on the next line at
/// the same indentation, `deletion: { confirm: <id>, reason: … }`. Block style only (a flow-style
/// `spec: { … }` is left to a human); an existing `deletion:` is kept.
fn set_deleted(text: &str, tenant: &str, reason: &str) -> Result<String, WriteError> {
    let with_state = set_lifecycle(text, "Deleted")
        .ok_or_else(|| WriteError::NoManifest("the manifest declares no lifecycle".into()))?;
    if with_state.contains("deletion:") {
        return Ok(with_state);
    }
    let at = with_state.find("lifecycle:").expect("just set");
    let line_start = with_state[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent = &with_state[line_start..at];
    if !indent.chars().all(|c| c == ' ') || indent.is_empty() {
        return Err(WriteError::Unchanged(
            "the manifest's spec is not in block style; mark the deletion by hand".into(),
        ));
    }
    let line_end = with_state[at..]
        .find('\n')
        .map_or(with_state.len(), |i| at + i + 1);
    let reason = reason.replace(['"', '\\'], "'");
    let mut out = with_state[..line_end].to_owned();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "{indent}deletion: {{ confirm: {tenant}, reason: \"{reason}\" }}\n"
    ));
    out.push_str(&with_state[line_end..]);
    Ok(out)
}

/// Commit `tenant`'s lifecycle change to `to` (`Deleted` adds the confirmation), after
/// validating and governing the candidate; returns the new commit's sha.
pub fn commit_lifecycle(
    target: &WriteTarget,
    tenant: &str,
    to: &str,
    author: &str,
    message: &str,
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
        // Find the tenant's file as the validator sees it at HEAD.
        let evaluation = reconcile::evaluate(&Inputs {
            repo: target.repo.clone(),
            rev: Some(head.clone()),
            path: target.path.clone(),
            max_file_bytes: 1 << 20,
            bundle: None,
            govern_only: Some(Default::default()),
        })
        .map_err(|e| WriteError::Git(e.to_string()))?;
        let file = evaluation
            .report
            .catalog
            .tenant(tenant)
            .map(|t| t.file.clone())
            .ok_or_else(|| WriteError::NoManifest(tenant.to_owned()))?;
        let entry = parent.tree()?.get_path(Path::new(&file))?;
        let blob = repo.find_blob(entry.id())?;
        let text = std::str::from_utf8(blob.content())
            .map_err(|_| WriteError::Git(format!("{file} is not UTF-8")))?;
        let new_text = if to == "Deleted" {
            let reason = message.lines().next().unwrap_or_default();
            set_deleted(text, tenant, reason)?
        } else {
            set_lifecycle(text, to)
                .ok_or_else(|| WriteError::NoManifest(format!("{file} declares no lifecycle")))?
        };
        if new_text == text {
            return Err(WriteError::Unchanged(format!(
                "tenant `{tenant}` is already {to}"
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
        let judged = reconcile::evaluate(&Inputs {
            repo: target.repo.clone(),
            rev: Some(candidate.to_string()),
            path: target.path.clone(),
            max_file_bytes: 1 << 20,
            bundle: target.bundle.clone(),
            govern_only: Some([file.clone()].into_iter().collect()),
        })
        .map_err(|e| WriteError::Git(e.to_string()))?;
        let refused: Vec<_> = judged
            .report
            .findings
            .into_iter()
            .filter(|f| {
                f.severity == crate::diagnostics::Severity::Error
                    && (f.tenant.as_deref() == Some(tenant) || f.file == file)
            })
            .collect();
        if !refused.is_empty() {
            return Err(WriteError::Refused(refused));
        }
        // Compare-and-swap: only if the branch is still where we read it.
        match repo.reference_matching(&ref_name, candidate, true, parent.id(), message) {
            Ok(_) => {}
            Err(e) if e.code() == git2::ErrorCode::Modified => continue,
            Err(e) => return Err(e.into()),
        }
        // Keep a work tree in step for that one file.
        if !repo.is_bare() {
            let mut co = git2::build::CheckoutBuilder::new();
            co.path(&file).force();
            repo.checkout_head(Some(&mut co))?;
        }
        return Ok(candidate.to_string());
    }
    Err(WriteError::Race)
}

#[cfg(test)]
mod tests {
    use super::set_lifecycle;

    #[test]
    fn lifecycle_is_set_in_block_and_flow_style_only() {
        assert_eq!(
            set_lifecycle("spec:\n  lifecycle: Active\n  plan: x\n", "Suspended").as_deref(),
            Some("spec:\n  lifecycle: Suspended\n  plan: x\n")
        );
        assert_eq!(
            set_lifecycle("spec: { lifecycle: Suspended, plan: x }", "Active").as_deref(),
            Some("spec: { lifecycle: Active, plan: x }")
        );
        assert_eq!(set_lifecycle("spec: {}\n", "Active"), None);
    }

    #[test]
    fn deletion_adds_the_confirmation_under_the_lifecycle() {
        let out = super::set_deleted(
            "spec:\n  lifecycle: Archived\n  plan: x\n",
            "t_1",
            "gone \"now\"",
        )
        .expect("block style");
        assert_eq!(
            out,
            "spec:\n  lifecycle: Deleted\n  deletion: { confirm: t_1, reason: \"gone 'now'\" }\n  plan: x\n"
        );
        assert!(super::set_deleted("spec: { lifecycle: Active }", "t_1", "x").is_err());
    }
}
