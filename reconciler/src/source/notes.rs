//! Git notes: the compliance record `apply` leaves on each commit it judged, in
//! [`NOTES_REF`] (`git log --notes=tenancy`). What the note says is rendered by
//! `reconcile::notes`; this is how it is read and written.

use super::{SourceError, open_repository};
use std::path::Path;

/// The notes ref where `apply` records what it did with each commit (`git log --notes=tenancy`).
pub(crate) const NOTES_REF: &str = "refs/notes/tenancy";

/// Make `section` the part of `commit`'s note (in [`NOTES_REF`]) from the line `mark` on; text
/// above it (notes written by hand, or by earlier versions) is kept. Writes only when the note
/// changes; `Ok(false)` when it already said this.
pub(crate) fn set_note_section(
    repo: &Path,
    commit: &str,
    mark: &str,
    section: &str,
) -> Result<bool, SourceError> {
    let repository = open_repository(repo)?;
    let oid = git2::Oid::from_str(commit)?;
    // libgit2 moves the notes ref without comparing it to the commit it built on: two writers
    // at once (an apply beside the daemon) would each build on the same tip, and the later
    // move would drop the other's note. Tenancy's writers of one repository take turns.
    let lock = repository.path().join("tenancy-notes.lock");
    let _held = crate::lockfile::exclusive(&lock)
        .map_err(move |source| SourceError::Io { path: lock, source })?;
    let existing = repository
        .find_note(Some(NOTES_REF), oid)
        .ok()
        .and_then(|n| n.message().ok().map(str::to_owned));
    let kept = existing
        .as_deref()
        .map(|old| match old.find(mark) {
            Some(at) => old[..at].trim_end(),
            None => old.trim_end(),
        })
        .unwrap_or_default();
    let body = if kept.is_empty() {
        section.to_owned()
    } else {
        format!("{kept}\n\n{section}")
    };
    if existing.as_deref() == Some(body.as_str()) {
        return Ok(false);
    }
    let signature = git2::Signature::now("Tenancy", "tenancy@localhost")?;
    repository.note(&signature, &signature, Some(NOTES_REF), oid, &body, true)?;
    Ok(true)
}

/// The note of `commit` in [`NOTES_REF`], if any.
pub fn read_note(repo: &Path, commit: &str) -> Result<Option<String>, SourceError> {
    let repository = open_repository(repo)?;
    let oid = git2::Oid::from_str(commit)?;
    Ok(repository
        .find_note(Some(NOTES_REF), oid)
        .ok()
        .and_then(|n| n.message().ok().map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers of different commits' notes at once, as an apply beside the daemon: every note
    /// is there at the end, and every write succeeded. Without the lock, libgit2 built each
    /// notes commit on the tip it read and moved the ref over the others' (or failed to lock it).
    #[test]
    fn concurrent_note_writers_lose_no_note() {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = git2::Repository::init(dir.path()).expect("init");
        let sig = git2::Signature::now("t", "t@example.com").expect("sig");
        let tree = repo
            .find_tree(repo.index().expect("index").write_tree().expect("tree"))
            .expect("tree");
        // Notes attach to any commit: 48 root commits, told apart by their messages.
        let commits: Vec<git2::Oid> = (0..48)
            .map(|i| {
                repo.commit(None, &sig, &sig, &format!("c{i}"), &tree, &[])
                    .expect("commit")
            })
            .collect();
        let path = dir.path();
        std::thread::scope(|scope| {
            for chunk in commits.chunks(12) {
                scope.spawn(move || {
                    for id in chunk {
                        let text = format!("MARK\nnote of {id}");
                        set_note_section(path, &id.to_string(), "MARK", &text).expect("write");
                    }
                });
            }
        });
        for id in &commits {
            let note = read_note(path, &id.to_string()).expect("read");
            assert_eq!(
                note.as_deref(),
                Some(format!("MARK\nnote of {id}").as_str())
            );
        }
    }
}
