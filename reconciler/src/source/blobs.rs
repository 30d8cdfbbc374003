//! Reading a revision's blobs: after the tree walk has listed them, in order, by a few threads
//! when there are thousands.

use super::{Finding, ReadOptions, Snapshot, SourceError, SourceFile, decode, too_large};

/// A manifest file of the tree, in tree order: known already, or still to read.
pub(super) enum Slot {
    Known(SourceFile),
    Blob(String, git2::Oid),
}

/// Read the blobs `slots` name into `out.files`, in order. Thousands of them (a whole
/// revision) are read by a few threads, each with its own handle on the repository (a
/// `git2::Repository` is not shared between threads).
pub(super) fn read_blobs(
    repo: &git2::Repository,
    slots: Vec<Slot>,
    opts: &ReadOptions,
    out: &mut Snapshot,
) -> Result<(), SourceError> {
    let blobs = slots.iter().filter(|s| matches!(s, Slot::Blob(..))).count();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let read = |repo: &git2::Repository, slots: Vec<Slot>| -> Result<Vec<Read>, SourceError> {
        let odb = repo.odb()?;
        slots
            .into_iter()
            .map(|slot| read_slot(repo, &odb, slot, opts))
            .collect()
    };
    let results: Vec<Read> = if blobs < 512 || threads == 1 {
        read(repo, slots)?
    } else {
        let chunk = slots.len().div_ceil(threads);
        let mut rest = slots.into_iter();
        let parts: Vec<Vec<Slot>> = std::iter::from_fn(|| {
            let part: Vec<Slot> = rest.by_ref().take(chunk).collect();
            (!part.is_empty()).then_some(part)
        })
        .collect();
        let dir = repo.path().to_owned();
        std::thread::scope(|scope| {
            let workers: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    let dir = &dir;
                    scope.spawn(move || read(&git2::Repository::open(dir)?, part))
                })
                .collect();
            let mut all = Vec::new();
            for w in workers {
                all.extend(w.join().map_err(|_| {
                    SourceError::Git(git2::Error::from_str("a thread reading blobs panicked"))
                })??);
            }
            Ok::<_, SourceError>(all)
        })?
    };
    for r in results {
        match r {
            Read::File(f) => out.files.push(f),
            Read::Finding(f) => out.findings.push(*f),
        }
    }
    Ok(())
}

/// What reading one slot gave.
enum Read {
    File(SourceFile),
    Finding(Box<Finding>),
}

fn read_slot(
    repo: &git2::Repository,
    odb: &git2::Odb<'_>,
    slot: Slot,
    opts: &ReadOptions,
) -> Result<Read, SourceError> {
    let (path, id) = match slot {
        Slot::Known(f) => return Ok(Read::File(f)),
        Slot::Blob(path, id) => (path, id),
    };
    let (size, _) = odb.read_header(id)?;
    if size as u64 > opts.max_file_bytes {
        return Ok(Read::Finding(Box::new(too_large(
            &path,
            size as u64,
            opts.max_file_bytes,
        ))));
    }
    let blob = repo.find_blob(id)?;
    Ok(match decode(&path, blob.content().to_vec()) {
        Ok(text) => Read::File(SourceFile {
            path,
            text,
            id: Some(id),
        }),
        Err(f) => Read::Finding(f),
    })
}

#[cfg(test)]
mod tests {
    use super::super::read_revision;
    use super::*;

    /// A commit of `files` (path, bytes) in a new repository.
    fn repo_of(files: &[(String, Vec<u8>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tmp");
        let repo = git2::Repository::init(dir.path()).expect("init");
        let mut index = repo.index().expect("index");
        for (path, bytes) in files {
            let id = repo.blob(bytes).expect("blob");
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: bytes.len() as u32,
                id,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).expect("add");
        }
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("tree");
        let sig = git2::Signature::now("t", "t@tenancy.invalid").expect("sig");
        repo.commit(Some("HEAD"), &sig, &sig, "files", &tree, &[])
            .expect("commit");
        dir
    }

    #[test]
    fn thousands_of_blobs_are_read_in_tree_order_by_several_threads() {
        // Enough blobs for the threaded path, with an oversized and a non-UTF-8 one among them.
        let mut files: Vec<(String, Vec<u8>)> = (0..1500)
            .map(|i| {
                (
                    format!("org_{:02}/t_{i:05}.yaml", i % 7),
                    format!("n: {i}\n").into_bytes(),
                )
            })
            .collect();
        files.push(("org_00/big.yaml".into(), vec![b'#'; 4096]));
        files.push(("org_01/latin1.yaml".into(), b"a: \xe9\n".to_vec()));
        let dir = repo_of(&files);
        let opts = ReadOptions {
            max_file_bytes: 1024,
            ..ReadOptions::default()
        };
        let snapshot = read_revision(dir.path(), "HEAD", &opts).expect("read");
        let mut expected: Vec<(String, String)> = files[..1500]
            .iter()
            .map(|(p, b)| (p.clone(), String::from_utf8(b.clone()).expect("utf-8")))
            .collect();
        expected.sort(); // a tree lists its entries by name
        let read: Vec<(String, String)> = snapshot
            .files
            .iter()
            .map(|f| (f.path.clone(), f.text.clone()))
            .collect();
        assert_eq!(read, expected);
        let mut said: Vec<(&str, &str)> = snapshot
            .findings
            .iter()
            .map(|f| (f.file.as_str(), f.rule.as_ref()))
            .collect();
        said.sort();
        assert_eq!(
            said,
            [
                ("org_00/big.yaml", "file.too-large"),
                ("org_01/latin1.yaml", "file.encoding")
            ]
        );
    }
}
