//! Small durable-write helpers: fsync a directory, write a file atomically via rename, flock.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use crate::{Error, Result};

/// fsyncs a directory so a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(Error::io("open directory", dir))?;
    f.sync_all().map_err(Error::io("fsync directory", dir))
}

/// Writes `bytes` to `dest` atomically: a temp file in `tmp_dir`, fsync, rename, fsync the
/// destination directory. `tmp_dir` must be on the same filesystem as `dest`.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile_in(tmp_dir)?;
    tmp.1.write_all(bytes).map_err(Error::io("write", &tmp.0))?;
    tmp.1.sync_all().map_err(Error::io("fsync", &tmp.0))?;
    std::fs::rename(&tmp.0, dest).map_err(Error::io("rename into place", dest))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// A new, uniquely named file in `dir` (path, handle).
pub(crate) fn tempfile_in(dir: &Path) -> Result<(std::path::PathBuf, File)> {
    loop {
        let path = dir.join(format!("f-{}", unique_suffix()));
        match OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create temp file", path)(e)),
        }
    }
}

/// A short name unique within this process and very likely across processes.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos:x}", std::process::id())
}

/// Takes an exclusive flock, blocking.
pub(crate) fn lock_exclusive(f: &File, path: &Path) -> Result<()> {
    rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io("lock", path)(e.into()))
}

/// Takes a shared flock, blocking.
pub(crate) fn lock_shared(f: &File, path: &Path) -> Result<()> {
    rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockShared)
        .map_err(|e| Error::io("lock", path)(e.into()))
}

/// Tries an exclusive flock without blocking: `Ok(false)` when someone else holds it.
pub(crate) fn try_lock_exclusive(f: &File, path: &Path) -> Result<bool> {
    match rustix::fs::flock(
        f.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    ) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(Error::io("lock", path)(e.into())),
    }
}

/// Removes a file or directory tree; a missing path is fine.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("stat", path)(e)),
    };
    let r = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Copies the regular file `from` to `to` (created): a reflink (`FICLONE`, sharing the
/// extents) where the filesystem has them (btrfs, xfs), else a plain copy.
pub(crate) fn clone_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `_IOW(0x94, 9, int)` from linux/fs.h.
    const FICLONE: libc::c_ulong = 0x4004_9409;
    let source = File::open(from)?;
    let dest = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    // SAFETY: both fds are open for the duration of the call.
    if unsafe { libc::ioctl(dest.as_raw_fd(), FICLONE, source.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let mut source = source;
    let mut dest = dest;
    std::io::copy(&mut source, &mut dest).map(|_| ())
}
