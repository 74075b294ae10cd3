//! The file side of COPY and ADD: selected sources written into a new layer's upper
//! directory with Docker's destination rules, ADD's archive extraction and URL download.
//!
//! Destination rules (Docker's):
//! - `dest` is absolute or relative to the WORKDIR, and always stays inside the root;
//!   symlinks along it in the lower layers are followed inside the root.
//! - A directory source copies its *contents*; the root of the context is `.`.
//! - `dest` ending in `/` (or `.`) is a directory; so is a `dest` that already is one.
//!   Otherwise a single file source is written *as* `dest`.
//! - More than one source (after wildcards) needs a `dest` ending in `/`.
//! - Parents are created. As in BuildKit, directories the copy creates get the `--chown`
//!   owner (root otherwise) and mode 0755; directories that exist in a lower layer are
//!   re-created in the upper with their lower mode, owner and mtime. A directory source
//!   gives its mode, owner and mtime to `dest` only when the copy creates `dest`.
//! - `--chown` applies to everything copied; without it, files from the build context
//!   become 0:0 and files from another stage or image keep their owner
//!   ([`CopySpec::preserve_owner`]). `--chmod` sets the mode of every copied file and
//!   directory (BuildKit), not of symlinks nor of created parents.
//! - Symlinks are copied as links; hardlinks within one copy stay hardlinks; mtimes are
//!   kept; device nodes and fifos are re-created; sockets are skipped.
//! - An upper entry simply shadows the lower one (overlay semantics). A file replacing a
//!   lower directory needs no whiteout: a non-directory in the upper hides the lower
//!   entry entirely, in the overlay mount and when the layer tar is applied. Below the
//!   destination, a source directory meeting a lower-layer symlink of the same name
//!   replaces it with a directory (classic docker's behaviour; BuildKit errors). xattrs
//!   are not copied.

mod archive;
mod fetch;
mod layers;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use archive::{
    extract_archive, is_archive, ExtractOptions, ExtractStats, DEFAULT_ARCHIVE_LIMIT,
};
pub use fetch::{fetch_url, FetchedFile};
pub use layers::Layers;

use rbuild_store::ExternalFile;

use crate::context::{
    pathclean, source_entries, ContextEntry, ContextError, ContextFiles, EntryKind, EntryStat,
    IgnoreRules, SelectedSource, StatCache,
};

/// An error writing the files of a COPY or ADD.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// A filesystem operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Several sources and a destination that is not a directory.
    #[error("when using COPY with more than one source file, the destination must be a directory and end with a / (destination {dest:?})")]
    DestNotDirectory {
        /// The destination as written.
        dest: String,
    },
    /// A parent of the destination is not a directory.
    #[error("cannot create {path}: a parent is not a directory")]
    NotADirectory {
        /// The path inside the image.
        path: String,
    },
    /// Too many symlinks along a destination path.
    #[error("too many levels of symbolic links resolving {path}")]
    SymlinkLoop {
        /// The path inside the image.
        path: String,
    },
    /// An archive entry that would be written outside the destination.
    #[error("archive entry {entry:?} points outside the destination")]
    ArchiveEscape {
        /// The entry's name (or link target) in the archive.
        entry: String,
    },
    /// An archive that unpacks to more than the limit.
    #[error("archive {} unpacks to more than {limit} bytes", archive.display())]
    ArchiveTooLarge {
        /// The archive.
        archive: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// An archive that cannot be read.
    #[error("cannot read archive {}", archive.display())]
    ArchiveRead {
        /// The archive.
        archive: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// COPY `--exclude` patterns that fail to match.
    #[error("cannot apply --exclude")]
    Exclude(#[from] Box<ContextError>),
    /// A download that failed.
    #[error("cannot download {url}")]
    Download {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A download answered with an error status.
    #[error("cannot download {url}: server answered {status}")]
    DownloadStatus {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// A downloaded file whose digest is not the one `--checksum` asked for.
    #[error("digest mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// `--checksum`.
        expected: String,
        /// What was downloaded.
        actual: String,
    },
    /// A `--checksum` that is not `sha256:<64 hex>`.
    #[error("unsupported checksum {checksum:?}: expected sha256:<64 hex digits>")]
    BadChecksum {
        /// The value given.
        checksum: String,
    },
    /// A URL with no file name where one is needed.
    #[error("cannot determine a file name from {url}")]
    NoFileName {
        /// The URL.
        url: String,
    },
}

/// Where the files of one COPY/ADD come from.
#[derive(Debug, Clone, Copy)]
pub enum CopySource<'a> {
    /// Sources selected from a walked tree: the build context, or the rootfs of another
    /// stage or image (walked with [`ContextFiles::walk`] and no ignore rules).
    Tree {
        /// The walked tree.
        files: &'a ContextFiles,
        /// From [`crate::context::select_sources`].
        selected: &'a [SelectedSource],
    },
    /// Heredoc sources `(name, content)`: written as files of mode 0644.
    Inline(&'a [(String, Vec<u8>)]),
    /// A file ADD downloaded ([`fetch_url`]): written with mode 0600.
    Fetched(&'a FetchedFile),
}

/// One COPY or ADD.
#[derive(Debug, Clone)]
pub struct CopySpec<'a> {
    /// What to copy.
    pub source: CopySource<'a>,
    /// The destination after variable expansion, as written (absolute, or relative to
    /// `workdir`; a trailing `/` matters).
    pub dest: String,
    /// The stage's WORKDIR (absolute); `/` when unset.
    pub workdir: String,
    /// `--chown` as numbers (the engine resolves names).
    pub chown: Option<(u32, u32)>,
    /// `--chmod` (octal permission bits).
    pub chmod: Option<u32>,
    /// Keep source owners (COPY --from); otherwise files become 0:0.
    pub preserve_owner: bool,
    /// ADD: extract local tar archives (plain, gzip, bzip2, xz, zstd) into the destination.
    pub unpack_archives: bool,
    /// The most bytes one archive may unpack to ([`DEFAULT_ARCHIVE_LIMIT`]).
    pub archive_limit: u64,
    /// COPY `--exclude` patterns, matched relative to each source directory (the same
    /// rules must go to [`crate::context::digest_sources`]).
    pub exclude: IgnoreRules,
    /// COPY `--parents`: each source keeps its path relative to the context root, or to
    /// the `./` pivot of its argument (`a/./b/c` keeps `b/c`); `dest` is a directory.
    pub parents: bool,
}

impl<'a> CopySpec<'a> {
    /// A COPY of `source` to `dest` with no flags, WORKDIR `/`.
    pub fn new(source: CopySource<'a>, dest: impl Into<String>) -> Self {
        Self {
            source,
            dest: dest.into(),
            workdir: "/".to_string(),
            chown: None,
            chmod: None,
            preserve_owner: false,
            unpack_archives: false,
            archive_limit: DEFAULT_ARCHIVE_LIMIT,
            exclude: IgnoreRules::default(),
            parents: false,
        }
    }
}

/// What a copy wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Entries written (files, dirs, links, nodes), parents not counted.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Writes the files of `spec` into `layers.upper`, checking `layers.lowers` for what
/// already exists. Blocking: the engine runs it in `spawn_blocking`.
pub fn copy_into(spec: &CopySpec<'_>, layers: &Layers<'_>) -> Result<CopyReport, CopyError> {
    copy_with(spec, layers, None)
}

/// [`copy_into`] that also hashes, in the same pass, every file it copies whose digest
/// `cache` does not hold, and records it there. Use it when the step's cache key is still
/// needed after the copy (e.g. an earlier step already missed, so this one will too):
/// [`crate::context::digest_sources`] afterwards reads nothing.
pub fn copy_into_hashing(
    spec: &CopySpec<'_>,
    layers: &Layers<'_>,
    cache: &mut StatCache,
) -> Result<CopyReport, CopyError> {
    copy_with(spec, layers, Some(cache))
}

fn copy_with(
    spec: &CopySpec<'_>,
    layers: &Layers<'_>,
    cache: Option<&mut StatCache>,
) -> Result<CopyReport, CopyError> {
    let count = match spec.source {
        CopySource::Tree { selected, .. } => selected.len(),
        CopySource::Inline(docs) => docs.len(),
        CopySource::Fetched(_) => 1,
    };
    let dest_is_dir = spec.parents
        || spec.dest.ends_with('/')
        || spec.dest == "."
        || spec.dest.ends_with("/.")
        || spec.dest.is_empty();
    if count > 1 && !dest_is_dir {
        return Err(CopyError::DestNotDirectory {
            dest: spec.dest.clone(),
        });
    }
    let joined = if spec.dest.starts_with('/') {
        spec.dest.clone()
    } else {
        format!("{}/{}", spec.workdir, spec.dest)
    };
    let dest = layers.resolve(&pathclean::clean_in_root(&joined), true)?;
    let created_owner = spec.chown.unwrap_or((0, 0));
    if spec.parents {
        // Made even when a wildcard selected nothing (BuildKit's CreateDestPath).
        layers.ensure_dir(&dest, created_owner)?;
    }
    let mut writer = Writer {
        spec,
        layers,
        report: CopyReport::default(),
        links: HashMap::new(),
        dir_times: Vec::new(),
        cache,
    };
    // Where a non-directory source goes: into `dest` or as `dest`.
    let into_dir = dest_is_dir || layers.is_dir(&dest)?;
    let target_for = |name: &str| -> String {
        match (into_dir, dest.as_str()) {
            (true, ".") => name.to_string(),
            (true, d) => format!("{d}/{name}"),
            (false, d) => d.to_string(),
        }
    };
    match spec.source {
        CopySource::Tree { files, selected } => {
            for source in selected {
                if source.kind != EntryKind::Dir
                    && !spec.exclude.is_empty()
                    && spec.exclude.is_excluded(&source.name).map_err(Box::new)?
                {
                    continue;
                }
                let full = files
                    .get(&source.resolved)
                    .map_or_else(|| files.root().join(&source.resolved), |e| e.path());
                if spec.parents {
                    writer.copy_with_parents(files, source, &dest, created_owner)?;
                } else if source.kind == EntryKind::Dir {
                    // An existing destination keeps its own mode and owner.
                    let existed = layers.lookup(&dest).is_some();
                    layers.ensure_dir(&dest, created_owner)?;
                    writer.copy_tree(files, source, &dest, existed)?;
                } else if spec.unpack_archives
                    && source.kind == EntryKind::File
                    && is_archive(&full)?
                {
                    let dir = layers.ensure_dir(&dest, created_owner)?;
                    let options = ExtractOptions {
                        chown: spec.chown,
                        limit: spec.archive_limit,
                    };
                    let stats = archive::extract_file(&full, &dir, &options)?;
                    writer.report.entries += stats.entries;
                    writer.report.bytes += stats.bytes;
                } else {
                    let target = target_for(source.base_name());
                    writer.parent_of(&target, created_owner)?;
                    let entry = files.get(&source.resolved);
                    if let Some(entry) = entry {
                        writer.copy_entry(&entry, &target)?;
                    }
                }
            }
        }
        CopySource::Inline(docs) => {
            for (name, content) in docs {
                let target = target_for(name);
                writer.parent_of(&target, created_owner)?;
                writer.write_content(&target, content, 0o644)?;
            }
        }
        CopySource::Fetched(fetched) => {
            if into_dir && fetched.name.is_empty() {
                return Err(CopyError::NoFileName {
                    url: fetched.url.clone(),
                });
            }
            let target = target_for(&fetched.name);
            writer.parent_of(&target, created_owner)?;
            let real = writer.prepare(&target)?;
            copy_file(&fetched.path, &real)?;
            writer.report.bytes += fetched.size;
            writer.report.entries += 1;
            let owner = spec.chown.unwrap_or((0, 0));
            apply_metadata(&real, owner, Some(spec.chmod.unwrap_or(0o600)))?;
            if let Some(mtime) = fetched.mtime {
                let t = filetime::FileTime::from_system_time(mtime);
                set_times(&real, t)?;
            }
        }
    }
    writer.finish()?;
    Ok(writer.report)
}

/// A `--parents` source's pivot (the cleaned part of its argument before the first
/// `/./`, `.` without one) and its path below the pivot (empty for the pivot itself).
fn parents_split(source: &SelectedSource) -> (String, String) {
    let pivot = match source.arg.split_once("/./") {
        Some((before, _)) => pathclean::clean_in_root(before),
        None => ".".to_string(),
    };
    let kept = if pivot == "." {
        source.name.clone()
    } else if source.name == pivot {
        String::new()
    } else {
        source
            .name
            .strip_prefix(&format!("{pivot}/"))
            .unwrap_or(&source.name)
            .to_string()
    };
    (pivot, kept)
}

struct Writer<'s, 'a> {
    spec: &'s CopySpec<'a>,
    layers: &'s Layers<'s>,
    report: CopyReport,
    /// (dev, ino) of a multiply-linked source file → where its first copy went.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories whose mtime is set once everything inside them is written.
    dir_times: Vec<(PathBuf, filetime::FileTime)>,
    /// Where digests computed while copying go.
    cache: Option<&'s mut StatCache>,
}

impl Writer<'_, '_> {
    fn owner_of(&self, meta: &EntryStat) -> (u32, u32) {
        match self.spec.chown {
            Some(owner) => owner,
            None if self.spec.preserve_owner => (meta.uid, meta.gid),
            None => (0, 0),
        }
    }

    /// Creates the parent directories of `target`.
    fn parent_of(&self, target: &str, owner: (u32, u32)) -> Result<(), CopyError> {
        let parent = pathclean::dir(target);
        let resolved = self.layers.resolve(&parent, true)?;
        self.layers.ensure_dir(&resolved, owner)?;
        Ok(())
    }

    /// Clears the upper at `target` for a new non-directory entry; returns its real path.
    fn prepare(&self, target: &str) -> Result<PathBuf, CopyError> {
        Ok(self.prepare_at(target)?.0)
    }

    /// [`Writer::prepare`], also returning the root-relative path with the parent resolved.
    fn prepare_at(&self, target: &str) -> Result<(PathBuf, PathBuf), CopyError> {
        let parent = self.layers.resolve(&pathclean::dir(target), true)?;
        let name = target.rsplit('/').next().unwrap_or(target);
        let rel = match parent.as_str() {
            "." => PathBuf::from(name),
            p => Path::new(p).join(name),
        };
        let real = self.layers.upper.join(&rel);
        remove_any(&real)?;
        self.forget_deferred(&rel);
        Ok((real, rel))
    }

    /// Drops deferred files at `rel` and below it (something else is written there).
    fn forget_deferred(&self, rel: &Path) {
        if let Some(deferred) = self.layers.deferred {
            deferred.borrow_mut().remove_below(rel);
        }
    }

    fn write_content(&mut self, target: &str, content: &[u8], mode: u32) -> Result<(), CopyError> {
        let real = self.prepare(target)?;
        let mut file = create_new(&real)?;
        file.write_all(content).map_err(|source| CopyError::Io {
            op: "write",
            path: real.clone(),
            source,
        })?;
        drop(file);
        apply_metadata(
            &real,
            self.spec.chown.unwrap_or((0, 0)),
            Some(self.spec.chmod.unwrap_or(mode)),
        )?;
        self.report.entries += 1;
        self.report.bytes += content.len() as u64;
        Ok(())
    }

    /// COPY `--parents`: writes `source` at `dest/<its path below the pivot>`, the
    /// directories on that path copied from the source tree with their metadata.
    fn copy_with_parents(
        &mut self,
        files: &ContextFiles,
        source: &SelectedSource,
        dest: &str,
        created_owner: (u32, u32),
    ) -> Result<(), CopyError> {
        let (pivot, kept) = parents_split(source);
        self.layers.ensure_dir(dest, created_owner)?;
        let join = |rel: &str| match (dest, rel) {
            (d, "") => d.to_string(),
            (".", r) => r.to_string(),
            (d, r) => format!("{d}/{r}"),
        };
        let mut walked = String::new();
        let parts: Vec<&str> = kept.split('/').filter(|p| !p.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            walked = if walked.is_empty() {
                part.to_string()
            } else {
                format!("{walked}/{part}")
            };
            let name = match pivot.as_str() {
                "." => walked.clone(),
                p => format!("{p}/{walked}"),
            };
            let target = join(&walked);
            // Once per directory: copying it again would drop what was written below it.
            if self.layers.upper.join(&target).is_dir() {
                continue;
            }
            match files.get(&name) {
                Some(entry) if entry.kind() == EntryKind::Dir => {
                    self.copy_entry(&entry, &target)?
                }
                _ => self.layers.ensure_dir(&target, created_owner).map(drop)?,
            }
        }
        let target = join(&kept);
        if source.kind == EntryKind::Dir {
            let existed = self.layers.lookup(&target).is_some();
            self.layers.ensure_dir(&target, created_owner)?;
            return self.copy_tree(files, source, &target, existed);
        }
        if let Some(entry) = files.get(&source.resolved) {
            self.copy_entry(&entry, &target)?;
        }
        Ok(())
    }

    /// Copies a directory source's contents (and its own metadata) into `dest`.
    fn copy_tree(
        &mut self,
        files: &ContextFiles,
        source: &SelectedSource,
        dest: &str,
        dest_existed: bool,
    ) -> Result<(), CopyError> {
        let prefix = match source.resolved.as_str() {
            "." => String::new(),
            r => format!("{r}/"),
        };
        for entry in source_entries(files, source, &self.spec.exclude) {
            let entry = entry.map_err(Box::new)?;
            let name = entry.name();
            let rel = name.strip_prefix(&prefix).unwrap_or("");
            if rel.is_empty() && dest_existed {
                continue;
            }
            let target = match (dest, rel) {
                (d, "") => d.to_string(),
                (".", r) => r.to_string(),
                (d, r) => format!("{d}/{r}"),
            };
            self.copy_entry(&entry, &target)?;
        }
        Ok(())
    }

    /// Writes one entry at `target` (root-relative, parents existing).
    fn copy_entry(&mut self, entry: &ContextEntry, target: &str) -> Result<(), CopyError> {
        let src = entry.path();
        let meta = &entry.stat();
        let kind = entry.kind();
        let owner = self.owner_of(meta);
        let mtime = filetime::FileTime::from_unix_time(meta.mtime, meta.mtime_nsec);
        let mode = self.spec.chmod.unwrap_or(meta.mode & 0o7777);
        if kind == EntryKind::Dir {
            let real = match target {
                "." => self.layers.upper.to_path_buf(),
                t => self.layers.upper.join(t),
            };
            if target != "." {
                self.forget_deferred(Path::new(target));
            }
            match std::fs::symlink_metadata(&real) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&real)?;
                    make_dir(&real)?;
                }
                Err(_) => make_dir(&real)?,
            }
            apply_metadata(&real, owner, Some(mode))?;
            self.dir_times.push((real, mtime));
            self.report.entries += 1;
            return Ok(());
        }
        let (real, rel) = self.prepare_at(target)?;
        if let (EntryKind::File, Some(deferred), None) =
            (kind, self.layers.deferred, self.cache.as_ref())
        {
            // The layer tar reads it from the source; nothing is copied now. Hard links
            // among the copied files stay hard links (the tar links them by source inode).
            let link = (meta.nlink > 1).then_some((meta.dev, meta.ino));
            let first = link.is_none_or(|key| self.links.insert(key, rel.clone()).is_none());
            deferred.borrow_mut().insert(
                rel,
                ExternalFile {
                    source: src,
                    mode,
                    uid: owner.0,
                    gid: owner.1,
                    mtime: meta.mtime,
                    size: meta.size,
                    link,
                },
            );
            if first {
                self.report.bytes += meta.size;
            }
            self.report.entries += 1;
            return Ok(());
        }
        if kind == EntryKind::File && meta.nlink > 1 {
            if let Some(first) = self.links.get(&(meta.dev, meta.ino)) {
                std::fs::hard_link(first, &real).map_err(|source| CopyError::Io {
                    op: "link",
                    path: real.clone(),
                    source,
                })?;
                self.report.entries += 1;
                return Ok(());
            }
            self.links.insert((meta.dev, meta.ino), real.clone());
        }
        match kind {
            EntryKind::File => {
                let mut copied = false;
                if let Some(cache) = self.cache.as_deref_mut() {
                    if cache.lookup(&src, meta).is_none() {
                        let digest = copy_file_hashing(&src, &real)?;
                        cache.insert(&src, meta, digest);
                        copied = true;
                    }
                }
                if !copied {
                    copy_file(&src, &real)?;
                }
                self.report.bytes += meta.size;
                apply_metadata(&real, owner, Some(mode))?;
            }
            EntryKind::Symlink => {
                let target = std::fs::read_link(&src).map_err(|source| CopyError::Io {
                    op: "read link",
                    path: src.clone(),
                    source,
                })?;
                std::os::unix::fs::symlink(&target, &real).map_err(|source| CopyError::Io {
                    op: "create symlink",
                    path: real.clone(),
                    source,
                })?;
                apply_metadata(&real, owner, None)?;
            }
            EntryKind::Fifo | EntryKind::CharDevice | EntryKind::BlockDevice => {
                make_node(&real, meta.mode, meta.rdev)?;
                apply_metadata(&real, owner, Some(mode))?;
            }
            EntryKind::Socket | EntryKind::Dir => return Ok(()),
        }
        set_times(&real, mtime)?;
        self.report.entries += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), CopyError> {
        for (path, mtime) in self.dir_times.drain(..).rev() {
            set_times(&path, mtime)?;
        }
        Ok(())
    }
}

/// Sets the owner (never following a symlink) and, if given, the permission bits
/// (after the owner, since chown clears setuid).
pub(crate) fn apply_metadata(
    path: &Path,
    owner: (u32, u32),
    mode: Option<u32>,
) -> Result<(), CopyError> {
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).map_err(|source| {
        CopyError::Io {
            op: "change owner of",
            path: path.to_path_buf(),
            source,
        }
    })?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777)).map_err(
            |source| CopyError::Io {
                op: "change mode of",
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    Ok(())
}

pub(crate) fn set_times(path: &Path, mtime: filetime::FileTime) -> Result<(), CopyError> {
    filetime::set_symlink_file_times(path, mtime, mtime).map_err(|source| CopyError::Io {
        op: "set times of",
        path: path.to_path_buf(),
        source,
    })
}

/// Removes whatever is at `path` in the upper (a directory with its contents).
pub(crate) fn remove_any(path: &Path) -> Result<(), CopyError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    result.map_err(|source| CopyError::Io {
        op: "remove",
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn make_dir(path: &Path) -> Result<(), CopyError> {
    std::fs::create_dir(path).map_err(|source| CopyError::Io {
        op: "create directory",
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn create_new(path: &Path) -> Result<File, CopyError> {
    File::options()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .map_err(|source| CopyError::Io {
            op: "create",
            path: path.to_path_buf(),
            source,
        })
}

/// Copies a regular file's content (copy_file_range where the kernel can).
fn copy_file(src: &Path, dst: &Path) -> Result<u64, CopyError> {
    let mut input = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(|source| CopyError::Io {
            op: "open",
            path: src.to_path_buf(),
            source,
        })?;
    let mut output = create_new(dst)?;
    std::io::copy(&mut input, &mut output).map_err(|source| CopyError::Io {
        op: "copy to",
        path: dst.to_path_buf(),
        source,
    })
}

/// Copies a regular file's content and returns its sha256, reading it once.
fn copy_file_hashing(src: &Path, dst: &Path) -> Result<[u8; 32], CopyError> {
    use sha2::Digest as _;
    use std::io::Read;
    let mut input = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(|source| CopyError::Io {
            op: "open",
            path: src.to_path_buf(),
            source,
        })?;
    let mut output = create_new(dst)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf).map_err(|source| CopyError::Io {
            op: "read",
            path: src.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(|source| CopyError::Io {
                op: "write",
                path: dst.to_path_buf(),
                source,
            })?;
    }
    Ok(hasher.finalize().into())
}

pub(crate) fn make_node(path: &Path, mode: u32, rdev: u64) -> Result<(), CopyError> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
    let perm = Mode::from_bits_truncate(mode & 0o7777);
    mknod(path, kind, perm, rdev as libc::dev_t).map_err(|errno| CopyError::Io {
        op: "create node",
        path: path.to_path_buf(),
        source: std::io::Error::from(errno),
    })
}

#[cfg(test)]
mod tests;
