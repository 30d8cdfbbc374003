//! Exclusive locks on files, for what several Tenancy processes on one machine share: a
//! SQLite state store while it is migrated, a repository's notes ref while a note is written.
//! The lock is the operating system's (`flock`): it is released when the file is dropped, or
//! when the process holding it dies, so a crash leaves nothing to clean up.

use std::fs::File;
use std::path::Path;

/// Wait for, and take, the exclusive lock on `path` (created if it is not there); held until
/// the returned file is dropped. Every opener contends, threads of one process included.
pub(crate) fn exclusive(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.lock()?;
    Ok(file)
}
