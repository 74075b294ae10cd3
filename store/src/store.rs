//! The `Store` handle: opening a root (layout creation, debris cleaning), the store lock,
//! and scratch directories.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::blob::BlobStore;
use crate::fsutil::{lock_exclusive, lock_shared, write_atomic};
use crate::model::oci::{canonical_json, Index};
use crate::scratch::{self, ScratchDir};
use crate::{Error, Result};

/// A handle on one store root. Cheap to clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) blobs: BlobStore,
    pub(crate) scratch: ScratchDir,
}

/// A scratch directory under `<root>/tmp/` (same filesystem as the store); removed on drop.
#[derive(Debug)]
pub struct TmpDir {
    path: PathBuf,
}

impl TmpDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory (the caller renamed or removed it) and returns its path.
    pub fn into_path(self) -> PathBuf {
        let p = self.path.clone();
        std::mem::forget(self);
        p
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = crate::fsutil::remove_any(&self.path);
    }
}

/// The exclusive store lock (index.json writes, gc), released on drop.
pub(crate) struct StoreLock {
    _file: File,
}

impl Store {
    /// Opens (creating when needed) the store at `root`: the OCI layout files, `blobs/sha256`,
    /// `snapshots`, `cache`, `tmp`; removes `tmp/` debris of dead processes.
    pub fn open(root: &Path) -> Result<Store> {
        for dir in ["blobs/sha256", "snapshots", "cache/compressed", "tmp"] {
            let p = root.join(dir);
            std::fs::create_dir_all(&p).map_err(Error::io("create directory", &p))?;
        }
        let root = root.canonicalize().map_err(Error::io("resolve", root))?;
        let tmp = root.join("tmp");
        // Opening takes the store lock shared, so a running prune (exclusive) finishes first
        // and never sees a half-started process.
        let lock_path = root.join("lock");
        let lock = open_lock(&lock_path)?;
        lock_shared(&lock, &lock_path)?;
        let scratch = ScratchDir::create(&tmp)?;
        scratch::clean(&tmp, Some(&scratch))?;
        drop(lock);

        let layout = root.join("oci-layout");
        if !layout.is_file() {
            write_atomic(&scratch.path, &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.is_file() {
            let bytes = canonical_json(&Index::default()).map_err(|source| Error::Json {
                what: "index.json",
                path: index.clone(),
                source,
            })?;
            let store_lock = Self::lock_at(&root)?;
            if !index.is_file() {
                write_atomic(&scratch.path, &index, &bytes)?;
            }
            drop(store_lock);
        }
        let blobs = BlobStore::new(root.join("blobs/sha256"), Arc::new(scratch.path.clone()));
        Ok(Store {
            inner: Arc::new(Inner {
                root,
                blobs,
                scratch,
            }),
        })
    }

    /// The store root (canonical path).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// A fresh scratch directory under `<root>/tmp/` for callers (removed on drop).
    pub fn tmp_dir(&self) -> Result<TmpDir> {
        let path = self
            .scratch()
            .join(format!("t-{}", crate::fsutil::unique_suffix()));
        std::fs::create_dir(&path).map_err(Error::io("create directory", &path))?;
        Ok(TmpDir { path })
    }

    pub(crate) fn scratch(&self) -> &Path {
        &self.inner.scratch.path
    }

    pub(crate) fn lock(&self) -> Result<StoreLock> {
        Self::lock_at(&self.inner.root)
    }

    fn lock_at(root: &Path) -> Result<StoreLock> {
        let path = root.join("lock");
        let file = open_lock(&path)?;
        lock_exclusive(&file, &path)?;
        Ok(StoreLock { _file: file })
    }

    /// Live scratch dirs of other handles/processes (for gc safety).
    pub(crate) fn others_live(&self) -> Result<Vec<String>> {
        scratch::live_others(&self.inner.root.join("tmp"), &self.inner.scratch)
    }
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(Error::io("open lock", path))
}
