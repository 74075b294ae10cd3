//! The layer being written (an upper directory) over read-only lower layers: what exists
//! at a path, symlinks in destination paths resolved inside the root, and parent
//! directories created in the upper.
//!
//! Lower layers are overlay-form snapshot dirs, top-most first: a char device 0:0 is a
//! whiteout (the path is gone), `trusted.overlay.opaque=y` on a directory hides what the
//! layers below hold under it.

use std::cell::RefCell;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rbuild_store::ExternalFiles;

use super::CopyError;
use crate::context::pathclean;

/// How many symlinks one destination path may go through.
const MAX_LINKS: usize = 40;

/// The directory a COPY/ADD writes into and the read-only layers below it.
#[derive(Debug, Clone, Copy)]
pub struct Layers<'a> {
    /// The new layer's upper directory (the root of what is written).
    pub upper: &'a Path,
    /// The parent rootfs layers, top-most first; only read.
    pub lowers: &'a [PathBuf],
    /// Where regular files go instead of being copied into `upper`, when set: they are
    /// part of the upper (lookups see them) and the layer tar reads them from their source.
    pub deferred: Option<&'a RefCell<ExternalFiles>>,
}

/// Something found at a path: its metadata and the real file it came from.
#[derive(Debug)]
pub(crate) struct Found {
    pub meta: Metadata,
    pub real: PathBuf,
    pub in_upper: bool,
}

fn lstat(path: &Path) -> Option<Metadata> {
    std::fs::symlink_metadata(path).ok()
}

impl Layers<'_> {
    /// What the merged view holds at the root-relative path `rel` (no symlinks followed).
    pub(crate) fn lookup(&self, rel: &str) -> Option<Found> {
        if rel == "." {
            return lstat(self.upper).map(|meta| Found {
                meta,
                real: self.upper.to_path_buf(),
                in_upper: true,
            });
        }
        if let Some(deferred) = self.deferred {
            let deferred = deferred.borrow();
            let path = Path::new(rel);
            if let Some(file) = deferred.get(path) {
                return lstat(&file.source).map(|meta| Found {
                    meta,
                    real: file.source,
                    in_upper: true,
                });
            }
            // A file in the upper as a parent hides everything below it.
            if path.ancestors().skip(1).any(|a| deferred.contains_key(a)) {
                return None;
            }
        }
        let parts: Vec<&str> = rel.split('/').collect();
        for (i, layer) in std::iter::once(self.upper)
            .chain(self.lowers.iter().map(PathBuf::as_path))
            .enumerate()
        {
            let real = layer.join(rel);
            if let Some(meta) = lstat(&real) {
                if rbuild_store::is_whiteout(&real, &meta) {
                    return None;
                }
                return Some(Found {
                    meta,
                    real,
                    in_upper: i == 0,
                });
            }
            // An opaque parent (or a non-directory parent) in this layer hides lower ones.
            let mut dir = layer.to_path_buf();
            for part in &parts[..parts.len() - 1] {
                dir.push(part);
                match lstat(&dir) {
                    Some(m) if m.is_dir() => {
                        if rbuild_store::is_opaque_dir(&dir) {
                            return None;
                        }
                    }
                    Some(_) => return None,
                    None => break,
                }
            }
        }
        None
    }

    /// Resolves symlinks along `rel` inside the root (an absolute link target starts again
    /// at the root, `..` stops there). The last element is followed only if `follow_last`.
    pub(crate) fn resolve(&self, rel: &str, follow_last: bool) -> Result<String, CopyError> {
        let mut pending: Vec<String> = match rel {
            "." | "" => Vec::new(),
            r => r.split('/').rev().map(str::to_string).collect(),
        };
        let mut current = String::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            let candidate = if current.is_empty() {
                part
            } else {
                format!("{current}/{part}")
            };
            let found = self.lookup(&candidate);
            let is_link = found
                .as_ref()
                .is_some_and(|f| f.meta.file_type().is_symlink());
            if !is_link || (pending.is_empty() && !follow_last) {
                current = candidate;
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(CopyError::SymlinkLoop {
                    path: format!("/{rel}"),
                });
            }
            let real = found.map(|f| f.real).unwrap_or_default();
            let target = std::fs::read_link(&real).map_err(|source| CopyError::Io {
                op: "read link",
                path: real,
                source,
            })?;
            pathclean::follow_link(&mut current, &target, &mut pending);
        }
        Ok(if current.is_empty() {
            ".".to_string()
        } else {
            current
        })
    }

    /// Is there a directory at `rel` (symlinks followed) in the merged view?
    pub(crate) fn is_dir(&self, rel: &str) -> Result<bool, CopyError> {
        let resolved = self.resolve(rel, true)?;
        Ok(self.lookup(&resolved).is_some_and(|f| f.meta.is_dir()))
    }

    /// Makes `rel` (already resolved) a directory in the upper, creating its parents. A
    /// directory that exists in a lower layer is created with that layer's mode, owner and
    /// mtime, so the merged view does not change; a new one gets mode 0755 and `owner`.
    /// Returns the real path in the upper.
    pub(crate) fn ensure_dir(&self, rel: &str, owner: (u32, u32)) -> Result<PathBuf, CopyError> {
        if rel == "." {
            return Ok(self.upper.to_path_buf());
        }
        let mut current = String::new();
        for part in rel.split('/') {
            if !current.is_empty() {
                current.push('/');
            }
            current.push_str(part);
            let real = self.upper.join(&current);
            match self.lookup(&current) {
                Some(found) if found.meta.is_dir() && found.in_upper => continue,
                Some(found) if found.meta.is_dir() => {
                    mkdir(&real)?;
                    let meta = &found.meta;
                    super::apply_metadata(
                        &real,
                        (meta.uid(), meta.gid()),
                        Some(meta.mode() & 0o7777),
                    )?;
                    let mtime = filetime::FileTime::from_last_modification_time(meta);
                    filetime::set_symlink_file_times(&real, mtime, mtime).map_err(|source| {
                        CopyError::Io {
                            op: "set times of",
                            path: real.clone(),
                            source,
                        }
                    })?;
                }
                Some(_) => {
                    return Err(CopyError::NotADirectory {
                        path: format!("/{current}"),
                    })
                }
                None => {
                    mkdir(&real)?;
                    super::apply_metadata(&real, owner, Some(0o755))?;
                }
            }
        }
        Ok(self.upper.join(rel))
    }
}

fn mkdir(path: &Path) -> Result<(), CopyError> {
    std::fs::create_dir(path).map_err(|source| CopyError::Io {
        op: "create directory",
        path: path.to_path_buf(),
        source,
    })
}
