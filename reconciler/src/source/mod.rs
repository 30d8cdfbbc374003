//! Source: what a commit (or the work tree) declares, read without interpreting it.
//!
//! Manifests are read from the commit's tree in the object database, not from the work tree,
//! so what is validated is exactly what was committed. Symlinks and submodules are reported,
//! never followed; oversized and non-UTF-8 files are reported without being parsed. This module
//! knows nothing of YAML: it hands text to the manifest stage.

use crate::diagnostics::{Finding, Position};
use std::path::{Path, PathBuf};

mod blobs;
mod notes;
use blobs::{Slot, read_blobs};
pub use notes::read_note;
pub(crate) use notes::set_note_section;

/// A file that may hold manifests.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    pub text: String,
    /// The Git blob id when read from a commit (`None` from the work tree): equal ids mean
    /// equal text, which lets the daemon reuse what it learnt from a file last time.
    pub id: Option<git2::Oid>,
}

/// The commit a snapshot was read from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitInfo {
    pub sha: String,
    pub(crate) author_name: String,
    pub author_email: String,
    pub summary: String,
    /// The message's trailers (`Request-Id: …`, `Reason: …`, `Tenant: …`), in order. API
    /// writes carry them: the request id becomes the correlation id of what the commit does.
    pub(crate) trailers: Vec<(String, String)>,
    /// The repository it was read from.
    pub repo: PathBuf,
}

impl CommitInfo {
    /// Is `other` this commit or one of its ancestors (its change is part of this one)?
    pub(crate) fn includes(&self, other: &str) -> bool {
        if other == self.sha {
            return true;
        }
        let (Ok(repo), Ok(me), Ok(them)) = (
            git2::Repository::open(&self.repo),
            git2::Oid::from_str(&self.sha),
            git2::Oid::from_str(other),
        ) else {
            return false;
        };
        repo.graph_descendant_of(me, them).unwrap_or(false)
    }
}

impl CommitInfo {
    pub(crate) fn trailer(&self, key: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Everything read from one revision (or the work tree).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub files: Vec<SourceFile>,
    /// Files that could not be handed on (symlink, submodule, too large, not UTF-8).
    pub findings: Vec<Finding>,
    pub commit: Option<CommitInfo>,
}

/// What to read and the limits to read it with.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Sub-directory of the repository that holds the manifests ("" = the root).
    pub path: String,
    pub max_file_bytes: u64,
    /// When set, read only these manifest paths (repository-relative); used to fetch the
    /// previous versions of just the files a change touched.
    pub only: Option<std::collections::BTreeSet<String>>,
}

impl ReadOptions {
    fn wanted(&self, path: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(path))
    }
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            path: String::new(),
            max_file_bytes: 1024 * 1024,
            only: None,
        }
    }
}

/// Why [`read_bounded`] read nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BoundedRead {
    #[error("not a regular file (a pipe, a device or a directory?)")]
    NotRegular,
    #[error("larger than its limit")]
    TooLarge,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Read a file from the file system: a regular file only (opening a named pipe blocks until a
/// writer comes, a device never ends), and never more than `max` bytes, whatever its size
/// said a moment before. Every file a command reads by path goes through here.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, BoundedRead> {
    use std::io::Read;
    // The path's type first: a FIFO is never opened.
    if !std::fs::metadata(path)?.is_file() {
        return Err(BoundedRead::NotRegular);
    }
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Never block on open, should the path have been swapped for a FIFO meanwhile.
        open.custom_flags(libc::O_NONBLOCK);
    }
    let file = open.open(path)?;
    // What was opened, not what the path named a moment before.
    if !file.metadata()?.is_file() {
        return Err(BoundedRead::NotRegular);
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(BoundedRead::TooLarge);
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text, its failure as an I/O error (for callers that report one).
pub(crate) fn read_text_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    let bytes = read_bounded(path, max).map_err(|e| match e {
        BoundedRead::Io(e) => e,
        BoundedRead::TooLarge => std::io::Error::other(format!("larger than the {max}-byte limit")),
        other => std::io::Error::other(other.to_string()),
    })?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Failures that stop the whole run (exit code 2), as opposed to findings about one file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: not a Git repository ({source})")]
    NotARepository { path: PathBuf, source: git2::Error },
    #[error("revision `{rev}` not found in {repo}: {message}")]
    BadRevision {
        rev: String,
        repo: PathBuf,
        message: String,
    },
    #[error("the repository at {0} has no commits yet; commit your manifests or use --worktree")]
    NoCommits(PathBuf),
    #[error("path `{path}` does not exist in {at}")]
    MissingPath { path: String, at: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("git error: {0}")]
    Git(#[from] git2::Error),
    #[error("cannot fetch `{branch}` from {url}: {message}")]
    Fetch {
        url: String,
        branch: String,
        message: String,
    },
}

/// Fetch `branch` of the repository at `url` into the bare mirror `dir` (created on first use)
/// and point the mirror's HEAD at it; returns the fetched commit. The branch is force-updated, so
/// a force-push upstream shows as a commit that does not descend from the last one reconciled.
/// `url` is anything libgit2 fetches without prompting: `https://` (a token may be given in the
/// URL through `${env:…}`), `file://` or a path.
pub(crate) fn fetch_mirror(url: &str, branch: &str, dir: &Path) -> Result<String, SourceError> {
    let fail = |message: String| SourceError::Fetch {
        url: redact(url),
        branch: branch.to_owned(),
        message,
    };
    let repo = if dir.join("HEAD").is_file() {
        git2::Repository::open_bare(dir)?
    } else {
        std::fs::create_dir_all(dir).map_err(|source| SourceError::Io {
            path: dir.to_owned(),
            source,
        })?;
        git2::Repository::init_bare(dir)?
    };
    // A local remote that is not there is said so (libgit2 calls it an unsupported protocol).
    let local = match url.strip_prefix("file://") {
        Some(path) => Some(path),
        None if !url.contains("://") && !url.contains('@') => Some(url),
        None => None,
    };
    if let Some(path) = local
        && !Path::new(path).exists()
    {
        return Err(fail(format!(
            "there is no repository at `{path}` (the path does not exist)"
        )));
    }
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| fail(e.message().to_owned()))?;
    let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
    remote
        .fetch(&[refspec.as_str()], None, None)
        .map_err(|e| fail(e.message().to_owned()))?;
    let reference = format!("refs/heads/{branch}");
    let head = repo
        .find_reference(&reference)
        .map_err(|_| fail("the remote has no such branch".into()))?
        .peel_to_commit()?
        .id();
    repo.set_head(&reference)?;
    Ok(head.to_string())
}

/// The short name of the branch HEAD points at (`main`), if it points at one.
pub(crate) fn current_branch(repo: &Path) -> Option<String> {
    let repo = git2::Repository::open(repo).ok()?;
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok().flatten()?.to_owned();
    target.strip_prefix("refs/heads/").map(str::to_owned)
}

/// A URL with any password or token replaced by `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Open the repository at `repo`, or say it is not one.
fn open_repository(repo: &Path) -> Result<git2::Repository, SourceError> {
    git2::Repository::open(repo).map_err(|source| SourceError::NotARepository {
        path: repo.to_owned(),
        source,
    })
}

/// Is this a file the manifest stage should read? YAML by extension, nothing hidden.
pub(crate) fn is_manifest_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn normalize_subpath(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

fn too_large(path: &str, size: u64, max: u64) -> Finding {
    Finding::error(
        path,
        "file.too-large",
        format!("file is {size} bytes, larger than the {max}-byte limit"),
    )
    .hint("split the file, or raise the limit with --max-file-size")
}

fn bad_name(prefix: &str, lossy: &str) -> Finding {
    Finding::error(
        join(prefix, lossy),
        "file.name-encoding",
        "file name is not valid UTF-8",
    )
    .hint("rename the file using UTF-8")
}

fn symlink_finding(path: &str) -> Finding {
    Finding::error(
        path,
        "file.symlink",
        "symbolic links are not followed in a tenant repository",
    )
    .hint("replace the link with the file it points to")
}

/// Turn bytes into text, or a finding naming the first byte that is not UTF-8.
fn decode(path: &str, bytes: Vec<u8>) -> Result<String, Box<Finding>> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text
            .strip_prefix('\u{feff}')
            .map(str::to_owned)
            .unwrap_or(text)),
        Err(e) => {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let before = &bytes[..at];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1)
                .unwrap_or(0);
            let column = String::from_utf8_lossy(&before[line_start..])
                .chars()
                .count()
                + 1;
            Err(Box::new(
                Finding::error(
                    path,
                    "file.encoding",
                    format!("invalid UTF-8 byte 0x{:02x}", bytes[at]),
                )
                .at(Position {
                    line: line as u32,
                    column: column as u32,
                    len: 1,
                })
                .hint("manifests must be UTF-8 text; re-save the file as UTF-8"),
            ))
        }
    }
}

/// Read the manifests of revision `rev` from the repository at `repo`.
pub fn read_revision(repo: &Path, rev: &str, opts: &ReadOptions) -> Result<Snapshot, SourceError> {
    read_revision_reusing(repo, rev, opts, &|_, _| None)
}

/// The text of a file already read, by path and blob id, if the caller kept it.
pub(crate) type Known<'a> = dyn Fn(&str, git2::Oid) -> Option<String> + 'a;

/// [`read_revision`], taking the text of files whose blob `known` already holds instead of
/// reading it from the object database again (the daemon's passes re-read only what changed).
pub(crate) fn read_revision_reusing(
    repo: &Path,
    rev: &str,
    opts: &ReadOptions,
    known: &Known<'_>,
) -> Result<Snapshot, SourceError> {
    let repository = open_repository(repo)?;
    if rev == "HEAD" && repository.head().is_err() {
        return Err(SourceError::NoCommits(repo.to_owned()));
    }
    let object = repository
        .revparse_single(rev)
        .map_err(|e| SourceError::BadRevision {
            rev: rev.to_owned(),
            repo: repo.to_owned(),
            message: e.message().to_owned(),
        })?;
    let commit = object
        .peel_to_commit()
        .map_err(|e| SourceError::BadRevision {
            rev: rev.to_owned(),
            repo: repo.to_owned(),
            message: e.message().to_owned(),
        })?;
    let info = commit_info(repo, &commit);
    let root = commit.tree()?;
    let sub = normalize_subpath(&opts.path);
    let tree = if sub.is_empty() {
        root
    } else {
        let entry = root
            .get_path(Path::new(&sub))
            .map_err(|_| SourceError::MissingPath {
                path: sub.clone(),
                at: format!("commit {}", &info.sha[..12]),
            })?;
        entry
            .to_object(&repository)?
            .peel_to_tree()
            .map_err(|_| SourceError::MissingPath {
                path: sub.clone(),
                at: format!("commit {} (it is not a directory)", &info.sha[..12]),
            })?
    };
    let mut snapshot = Snapshot {
        commit: Some(info),
        ..Snapshot::default()
    };
    let mut slots = Vec::new();
    walk_tree(
        &repository,
        &tree,
        &sub,
        opts,
        known,
        &mut slots,
        &mut snapshot,
    )?;
    read_blobs(&repository, slots, opts, &mut snapshot)?;
    Ok(snapshot)
}

/// What a snapshot records of the commit it was read from.
fn commit_info(repo: &Path, commit: &git2::Commit<'_>) -> CommitInfo {
    let author = commit.author();
    CommitInfo {
        sha: commit.id().to_string(),
        author_name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
        author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
        summary: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
        trailers: commit
            .message()
            .ok()
            .and_then(|m| git2::message_trailers_strs(m).ok())
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        repo: repo.to_owned(),
    }
}

/// The commit `rev` names, as a snapshot read from it would record it.
pub(crate) fn read_commit(repo: &Path, rev: &str) -> Result<CommitInfo, SourceError> {
    let repository = open_repository(repo)?;
    let commit = commit_of(&repository, repo, rev)?;
    Ok(commit_info(repo, &commit))
}

/// Would a read with `opts` hand on a file at `path` (repository-relative) of `size` bytes?
/// For a file written in memory, before anything reads it back.
pub fn reads(opts: &ReadOptions, path: &str, size: u64) -> bool {
    let sub = normalize_subpath(&opts.path);
    let inside = sub.is_empty()
        || path
            .strip_prefix(sub.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
    inside
        && is_manifest_path(path)
        && opts.wanted(path)
        && size <= opts.max_file_bytes
        && path.split('/').all(|s| !s.is_empty() && !is_hidden(s))
}

/// The manifest files under `tree`, in order, into `slots` (their blobs are read after the
/// walk); what cannot be read as a file (a bad name, a link, a submodule) into `out`.
fn walk_tree(
    repo: &git2::Repository,
    tree: &git2::Tree<'_>,
    prefix: &str,
    opts: &ReadOptions,
    known: &Known<'_>,
    slots: &mut Vec<Slot>,
    out: &mut Snapshot,
) -> Result<(), SourceError> {
    for entry in tree.iter() {
        let Ok(name) = std::str::from_utf8(entry.name_bytes()) else {
            let lossy = String::from_utf8_lossy(entry.name_bytes()).into_owned();
            out.findings.push(bad_name(prefix, &lossy));
            continue;
        };
        if is_hidden(name) {
            continue;
        }
        let path = join(prefix, name);
        match entry.filemode() {
            0o040000 => {
                let sub = repo.find_tree(entry.id())?;
                walk_tree(repo, &sub, &path, opts, known, slots, out)?;
            }
            0o120000 => out.findings.push(symlink_finding(&path)),
            0o160000 => out.findings.push(
                Finding::error(
                    &path,
                    "file.submodule",
                    "submodules are not read in a tenant repository",
                )
                .hint("vendor the manifests into this repository instead of linking another one"),
            ),
            _ if is_manifest_path(&path) && opts.wanted(&path) => {
                slots.push(match known(&path, entry.id()) {
                    Some(text) => Slot::Known(SourceFile {
                        path,
                        text,
                        id: Some(entry.id()),
                    }),
                    None => Slot::Blob(path, entry.id()),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Read the manifests from the work tree (uncommitted edits), with the same rules as a commit.
pub fn read_worktree(root: &Path, opts: &ReadOptions) -> Result<Snapshot, SourceError> {
    let sub = normalize_subpath(&opts.path);
    let dir = if sub.is_empty() {
        root.to_owned()
    } else {
        root.join(&sub)
    };
    let meta = std::fs::symlink_metadata(&dir).map_err(|_| SourceError::MissingPath {
        path: if sub.is_empty() {
            ".".into()
        } else {
            sub.clone()
        },
        at: root.display().to_string(),
    })?;
    if !meta.is_dir() {
        return Err(SourceError::MissingPath {
            path: sub,
            at: format!("{} (it is not a directory)", root.display()),
        });
    }
    let mut snapshot = Snapshot::default();
    walk_dir(&dir, &sub, opts, &mut snapshot)?;
    snapshot.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(snapshot)
}

fn walk_dir(
    dir: &Path,
    prefix: &str,
    opts: &ReadOptions,
    out: &mut Snapshot,
) -> Result<(), SourceError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SourceError::Io { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let os_name = entry.file_name();
        let Some(name) = os_name.to_str() else {
            out.findings
                .push(bad_name(prefix, &os_name.to_string_lossy()));
            continue;
        };
        if is_hidden(name) {
            continue;
        }
        let path = join(prefix, name);
        let file_type = entry.file_type().map_err(io(&entry.path()))?;
        if file_type.is_symlink() {
            out.findings.push(symlink_finding(&path));
        } else if file_type.is_dir() {
            walk_dir(&entry.path(), &path, opts, out)?;
        } else if file_type.is_file() && is_manifest_path(&path) && opts.wanted(&path) {
            let size = entry.metadata().map_err(io(&entry.path()))?.len();
            // The size as read, not as stated a moment before: a file may grow meanwhile.
            let bytes = match read_bounded(&entry.path(), opts.max_file_bytes) {
                Ok(bytes) => bytes,
                Err(BoundedRead::Io(e)) => return Err(io(&entry.path())(e)),
                Err(_) => {
                    out.findings.push(too_large(
                        &path,
                        size.max(opts.max_file_bytes + 1),
                        opts.max_file_bytes,
                    ));
                    continue;
                }
            };
            match decode(&path, bytes) {
                Ok(text) => out.files.push(SourceFile {
                    path,
                    text,
                    id: None,
                }),
                Err(f) => out.findings.push(*f),
            }
        }
    }
    Ok(())
}

fn commit_of<'r>(
    repository: &'r git2::Repository,
    repo: &Path,
    rev: &str,
) -> Result<git2::Commit<'r>, SourceError> {
    repository
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| SourceError::BadRevision {
            rev: rev.to_owned(),
            repo: repo.to_owned(),
            message: e.message().to_owned(),
        })
}

/// The first parent of `rev`, if it has one.
pub(crate) fn parent_of(repo: &Path, rev: &str) -> Result<Option<String>, SourceError> {
    let repository = open_repository(repo)?;
    let commit = commit_of(&repository, repo, rev)?;
    Ok(commit.parent_ids().next().map(|id| id.to_string()))
}

/// The commit `rev` names, as a full sha.
pub fn resolve(repo: &Path, rev: &str) -> Result<String, SourceError> {
    let repository = open_repository(repo)?;
    Ok(commit_of(&repository, repo, rev)?.id().to_string())
}

/// How a path changed between two revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangedPath {
    pub path: String,
    pub change: ChangeKind,
}

/// Manifest files that differ between `base` and `head` (renames appear as delete + add), so
/// `plan --base --head` and the daemon reconcile only what a commit touched.
pub fn changed_paths(
    repo: &Path,
    base: &str,
    head: &str,
    opts: &ReadOptions,
) -> Result<Vec<ChangedPath>, SourceError> {
    let repository = open_repository(repo)?;
    let tree_of = |rev: &str| -> Result<git2::Tree<'_>, SourceError> {
        repository
            .revparse_single(rev)
            .and_then(|o| o.peel_to_tree())
            .map_err(|e| SourceError::BadRevision {
                rev: rev.to_owned(),
                repo: repo.to_owned(),
                message: e.message().to_owned(),
            })
    };
    let (old, new) = (tree_of(base)?, tree_of(head)?);
    let mut diff_opts = git2::DiffOptions::new();
    let sub = normalize_subpath(&opts.path);
    if !sub.is_empty() {
        diff_opts.pathspec(&sub);
    }
    let diff = repository.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut diff_opts))?;
    let mut changes = Vec::new();
    for delta in diff.deltas() {
        let (file, change) = match delta.status() {
            git2::Delta::Added => (delta.new_file(), ChangeKind::Added),
            git2::Delta::Deleted => (delta.old_file(), ChangeKind::Deleted),
            _ => (delta.new_file(), ChangeKind::Modified),
        };
        let Some(path) = file.path().and_then(Path::to_str) else {
            continue;
        };
        let path = path.to_owned();
        if is_manifest_path(&path) && !path.split('/').any(is_hidden) {
            changes.push(ChangedPath { path, change });
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reports_first_bad_byte() {
        let f = decode("a.yaml", b"a: 1\nb: \xff\n".to_vec()).unwrap_err();
        assert_eq!((f.line, f.column), (Some(2), Some(4)));
        assert_eq!(f.rule, "file.encoding");
        assert_eq!(
            decode("a.yaml", "\u{feff}a: 1".as_bytes().to_vec()).unwrap(),
            "a: 1"
        );
    }

    #[test]
    fn manifest_paths() {
        assert!(is_manifest_path("org/t.yaml"));
        assert!(is_manifest_path("org/t.YML"));
        assert!(!is_manifest_path("README.md"));
        assert_eq!(normalize_subpath("./tenants//"), "tenants");
    }

    /// `reads` says what a read would hand on, without reading: what lets an API write judge
    /// its file by itself.
    #[test]
    fn reads_is_what_a_read_takes() {
        let opts = ReadOptions {
            path: "./tenants/".into(),
            max_file_bytes: 100,
            only: None,
        };
        assert!(reads(&opts, "tenants/org/t.yaml", 100));
        for (path, size) in [
            ("tenants/org/t.yaml", 101),
            ("tenantsx/org/t.yaml", 1),
            ("other/t.yaml", 1),
            ("tenants/.hidden/t.yaml", 1),
            ("tenants/org/.t.yaml", 1),
            ("tenants/org/t.json", 1),
            ("tenants//t.yaml", 1),
        ] {
            assert!(!reads(&opts, path, size), "{path} ({size} bytes)");
        }
        assert!(reads(&ReadOptions::default(), "org/t.yml", 1));
    }
}
