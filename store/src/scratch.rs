//! The per-process scratch directory under `<root>/tmp/` and start-up cleaning of debris
//! left by dead processes.
//!
//! Each `Store` handle owns `tmp/<name>/`, created only after `tmp/<name>.lock` is created
//! and flocked; the lock is held for the handle's lifetime. Start-up removes every
//! `tmp/<name>` whose lock it can take (its owner is gone), so a live process's
//! ingests are never deleted.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fsutil::{remove_any, try_lock_exclusive, unique_suffix};
use crate::{Error, Result};

/// A locked scratch directory owned by this process; removed on drop.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    pub(crate) path: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl ScratchDir {
    /// Creates and locks a fresh scratch directory in `tmp`.
    pub(crate) fn create(tmp: &Path) -> Result<ScratchDir> {
        loop {
            let name = format!("p{}", unique_suffix());
            let lock_path = tmp.join(format!("{name}.lock"));
            let lock = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(Error::io("create", &lock_path))?;
            if !try_lock_exclusive(&lock, &lock_path)? {
                continue;
            }
            // A cleaner may have unlinked the file between our open and our flock: only a
            // lock on the file that is still at `lock_path` counts.
            let held = lock.metadata().map_err(Error::io("stat", &lock_path))?;
            match std::fs::metadata(&lock_path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
                _ => continue,
            }
            let path = tmp.join(&name);
            std::fs::create_dir(&path).map_err(Error::io("create directory", &path))?;
            return Ok(ScratchDir {
                path,
                lock_path,
                _lock: lock,
            });
        }
    }

    /// Whether `name` (an entry of `tmp/`) is this scratch dir or its lock.
    pub(crate) fn owns(&self, name: &std::ffi::OsStr) -> bool {
        self.path.file_name() == Some(name) || self.lock_path.file_name() == Some(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: whatever is left is debris the next start-up removes.
        let _ = remove_any(&self.path);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Removes debris of dead processes from `tmp`: scratch dirs whose lock is free, and
/// anything else that is not a live scratch dir. Returns what it removed.
pub(crate) fn clean(tmp: &Path, me: Option<&ScratchDir>) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(tmp).map_err(Error::io("read directory", tmp))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("read directory", tmp))?;
        let name = entry.file_name();
        if me.is_some_and(|m| m.owns(&name)) {
            continue;
        }
        let name_str = name.to_string_lossy();
        let path = entry.path();
        if let Some(base) = name_str.strip_suffix(".lock") {
            let dir = tmp.join(base);
            if dir.exists() {
                continue; // handled with its directory
            }
            // An orphan lock: the owner is gone if we can take it.
            if let Some(f) = open_existing(&path)? {
                if try_lock_exclusive(&f, &path)? {
                    remove_any(&path)?;
                    removed.push(path);
                }
            }
            continue;
        }
        let lock_path = tmp.join(format!("{name_str}.lock"));
        match open_existing(&lock_path)? {
            Some(f) => {
                if try_lock_exclusive(&f, &lock_path)? {
                    remove_any(&path)?;
                    remove_any(&lock_path)?;
                    removed.push(path);
                }
            }
            None => {
                // No lock file: not a scratch dir (or its owner created the lock before the
                // directory, so a directory without one is from a dead, old-style writer).
                remove_any(&path)?;
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

/// Names of live scratch dirs in `tmp` other than `me` (locks someone else holds).
pub(crate) fn live_others(tmp: &Path, me: &ScratchDir) -> Result<Vec<String>> {
    let mut live = Vec::new();
    let entries = std::fs::read_dir(tmp).map_err(Error::io("read directory", tmp))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("read directory", tmp))?;
        let name = entry.file_name();
        if me.owns(&name) {
            continue;
        }
        let name_str = name.to_string_lossy().into_owned();
        if name_str.ends_with(".lock") {
            let path = entry.path();
            if let Some(f) = open_existing(&path)? {
                if !try_lock_exclusive(&f, &path)? {
                    live.push(name_str);
                }
            }
        }
    }
    Ok(live)
}

fn open_existing(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open", path)(e)),
    }
}
