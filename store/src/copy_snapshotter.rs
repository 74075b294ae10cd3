//! The copying snapshotter, for where overlayfs cannot be mounted: a step's root is
//! materialised in one plain directory (reflinks where the filesystem has them) and its
//! changes are found against a stat index taken before the step, then committed in
//! overlay form, so layers and diffIDs are the overlay snapshotter's.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::external_files::ExternalFiles;
use crate::fsutil::remove_any;
use crate::layer_out::{mark_opaque, TarOptions};
use crate::rootfs::{copy_attributes, copy_entry, merge_lowers, set_times};
use crate::snapshot::{ActiveSnapshot, Layer};
use crate::snapshotter::{Mounts, Snapshotter};
use crate::whiteout::make_whiteout;
use crate::{ChainId, Descriptor, DiffId, Error, Result, Store};

/// What the differ compares of one entry. Not the ctime: restoring a file's times (as the
/// chroot runner does for /dev) must not count as a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// The inode and its birth time (statx): ext4 hands a freed inode number straight to
    /// the next file, so only both together tell a directory made anew.
    identity: (u64, Option<std::time::SystemTime>),
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    rdev: u64,
}

impl Stat {
    fn of(meta: &Metadata) -> Stat {
        Stat {
            identity: (meta.ino(), meta.created().ok()),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            // A directory's size is the filesystem's business, not a change.
            size: if meta.is_dir() { 0 } else { meta.size() },
            mtime: (meta.mtime(), meta.mtime_nsec()),
            rdev: meta.rdev(),
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// Every entry of a materialised root by its path relative to the root (`""` is the root).
type StatIndex = HashMap<PathBuf, Stat>;

fn index_tree(root: &Path) -> Result<StatIndex> {
    let mut index = StatIndex::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(Error::io("read directory", &path))? {
                let entry = entry.map_err(Error::io("read directory", &path))?;
                pending.push(rel.join(entry.file_name()));
            }
        }
        index.insert(rel, Stat::of(&meta));
    }
    Ok(index)
}

/// The copying snapshotter: `prepare` gives `Mounts` with no lowers and an upper dir that
/// holds the whole root; `commit` writes the step's changes, in overlay form, to a fresh
/// upper dir and commits that as the overlay snapshotter would.
#[derive(Debug)]
pub struct CopySnapshotter {
    store: Store,
    /// The stat index of each prepared root, by its upper dir.
    indexes: Mutex<HashMap<PathBuf, StatIndex>>,
}

impl CopySnapshotter {
    /// The copying snapshotter of `store`.
    pub fn new(store: Store) -> CopySnapshotter {
        CopySnapshotter {
            store,
            indexes: Mutex::new(HashMap::new()),
        }
    }

    fn take_index(&self, upper: &Path) -> Option<StatIndex> {
        self.indexes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(upper)
    }
}

impl Snapshotter for CopySnapshotter {
    fn view(&self, layers: &[Descriptor], diff_ids: &[DiffId]) -> Result<Vec<PathBuf>> {
        self.store.snapshot_chain(layers, diff_ids)
    }

    fn prepare(&self, lowers: Vec<PathBuf>) -> Result<(ActiveSnapshot, Mounts)> {
        let active = self.store.prepare()?;
        let made = merge_lowers(&lowers, &active.upper)
            .and_then(|()| align_root(lowers.first(), &active.upper))
            .and_then(|()| index_tree(&active.upper));
        let index = match made {
            Ok(index) => index,
            Err(err) => {
                let _ = self.store.discard(active);
                return Err(err);
            }
        };
        self.indexes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(active.upper.clone(), index);
        let mounts = Mounts::copied(&active);
        Ok((active, mounts))
    }

    fn commit(
        &self,
        active: ActiveSnapshot,
        parent: Option<&ChainId>,
        options: &TarOptions,
        external: &ExternalFiles,
    ) -> Result<Layer> {
        let index = self.take_index(&active.upper).unwrap_or_default();
        let diff = self.store.prepare()?;
        let written = write_diff(&active.upper, &index, &diff.upper, external);
        let _ = self.store.discard(active);
        if let Err(err) = written {
            let _ = self.store.discard(diff);
            return Err(err);
        }
        self.store.commit_external(diff, parent, options, external)
    }

    fn remove(&self, active: ActiveSnapshot) -> Result<()> {
        self.take_index(&active.upper);
        self.store.discard(active)
    }
}

/// The root dir gets the top-most lower's mode, owner and times, as overlayfs shows it.
fn align_root(top: Option<&PathBuf>, root: &Path) -> Result<()> {
    let Some(top) = top else {
        return Ok(());
    };
    let meta = std::fs::symlink_metadata(top).map_err(Error::io("stat", top))?;
    copy_attributes(top, root, &meta)?;
    set_times(root, &meta).map_err(Error::io("set times of", root))
}

/// Writes into `out` (empty) what changed in `root` since `index` was taken, as an overlay
/// upper dir would hold it: changed and new entries with their parent directories, a 0:0
/// character device for each deleted one, an opaque mark on a directory made anew.
fn write_diff(root: &Path, index: &StatIndex, out: &Path, external: &ExternalFiles) -> Result<()> {
    let mut diff = Diff {
        root,
        out,
        index,
        dirs: Vec::new(),
        links: HashMap::new(),
    };
    diff.walk(Path::new(""), false)?;
    diff.whiteouts()?;
    // A COPY's external files are merged into the tar over this dir: their directories
    // are part of the layer, as an overlay upper would hold them.
    for (path, _) in external.iter() {
        if let Some(parent) = path.parent() {
            diff.ensure_dir(parent)?;
        }
    }
    // Directory times last, deepest first, once nothing more is written below them.
    diff.dirs
        .sort_by_key(|rel| std::cmp::Reverse(rel.components().count()));
    for rel in &diff.dirs {
        let meta = std::fs::symlink_metadata(root.join(rel)).map_err(Error::io("stat", rel))?;
        let to = out.join(rel);
        set_times(&to, &meta).map_err(Error::io("set times of", &to))?;
    }
    Ok(())
}

struct Diff<'a> {
    root: &'a Path,
    out: &'a Path,
    index: &'a StatIndex,
    /// Directories made in `out`, relative.
    dirs: Vec<PathBuf>,
    /// Hard links among the written files: root inode → path written in `out`.
    links: HashMap<u64, PathBuf>,
}

impl Diff<'_> {
    /// Visits the directory `rel` of the root; `fresh`: every entry below is new (the
    /// directory itself was made by the step).
    fn walk(&mut self, rel: &Path, fresh: bool) -> Result<()> {
        let dir = self.root.join(rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(Error::io("read directory", &dir))?
            .collect::<std::io::Result<_>>()
            .map_err(Error::io("read directory", &dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let child = rel.join(entry.file_name());
            let path = self.root.join(&child);
            let meta = std::fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
            let now = Stat::of(&meta);
            let before = if fresh { None } else { self.index.get(&child) };
            if meta.is_dir() {
                match before {
                    Some(old) if old.is_dir() && old.identity == now.identity => {
                        if *old != now {
                            self.ensure_dir(&child)?;
                        }
                        self.walk(&child, false)?;
                    }
                    // Made by the step, replacing a directory: it hides what was below.
                    Some(old) if old.is_dir() => {
                        self.ensure_dir(&child)?;
                        let to = self.out.join(&child);
                        mark_opaque(&to).map_err(Error::io("mark opaque", &to))?;
                        self.walk(&child, true)?;
                    }
                    _ => {
                        self.ensure_dir(&child)?;
                        self.walk(&child, true)?;
                    }
                }
            } else if before != Some(&now) {
                self.write_entry(&child, &meta)?;
            }
        }
        Ok(())
    }

    fn write_entry(&mut self, rel: &Path, meta: &Metadata) -> Result<()> {
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent)?;
        }
        let from = self.root.join(rel);
        let to = self.out.join(rel);
        if meta.nlink() > 1 && !meta.file_type().is_symlink() {
            if let Some(first) = self.links.get(&meta.ino()) {
                return std::fs::hard_link(first, &to).map_err(Error::io("link", &to));
            }
            self.links.insert(meta.ino(), to.clone());
        }
        copy_entry(&from, &to, meta)
    }

    /// Makes the directory `rel` (and its parents) in `out` with the root's attributes.
    fn ensure_dir(&mut self, rel: &Path) -> Result<()> {
        if rel.as_os_str().is_empty() || self.out.join(rel).is_dir() {
            return Ok(());
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent)?;
        }
        let from = self.root.join(rel);
        let to = self.out.join(rel);
        let meta = std::fs::symlink_metadata(&from).map_err(Error::io("stat", &from))?;
        std::fs::create_dir(&to).map_err(Error::io("create directory", &to))?;
        copy_attributes(&from, &to, &meta)?;
        self.dirs.push(rel.to_path_buf());
        Ok(())
    }

    /// A 0:0 character device for each indexed entry that is gone, when its directory is
    /// still the one indexed (a deleted or replaced directory covers its children).
    fn whiteouts(&mut self) -> Result<()> {
        let mut gone: Vec<&PathBuf> = Vec::new();
        for (rel, _) in self.index.iter() {
            let Some(parent) = rel.parent() else {
                continue;
            };
            if std::fs::symlink_metadata(self.root.join(rel)).is_ok() {
                continue;
            }
            let parent_same = match (
                self.index.get(parent),
                std::fs::symlink_metadata(self.root.join(parent)),
            ) {
                (Some(old), Ok(meta)) => meta.is_dir() && old.identity == Stat::of(&meta).identity,
                _ => false,
            };
            if parent_same {
                gone.push(rel);
            }
        }
        gone.sort();
        for rel in gone {
            if let Some(parent) = rel.parent() {
                self.ensure_dir(parent)?;
            }
            let to = self.out.join(rel);
            remove_any(&to)?;
            make_whiteout(&to).map_err(Error::io("make a whiteout at", &to))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn diff_holds_changes_new_files_whiteouts_and_opaque_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        write(&root, "etc/keep", b"k");
        write(&root, "etc/change", b"old");
        write(&root, "etc/gone", b"g");
        write(&root, "var/lib/x", b"x");
        write(&root, "redo/old", b"o");
        let index = index_tree(&root).unwrap();

        std::fs::write(root.join("etc/change"), b"new!").unwrap();
        std::fs::remove_file(root.join("etc/gone")).unwrap();
        write(&root, "etc/new", b"n");
        std::fs::remove_dir_all(root.join("redo")).unwrap();
        write(&root, "redo/fresh", b"f");
        write_diff(&root, &index, &out, &ExternalFiles::new()).unwrap();

        assert_eq!(std::fs::read(out.join("etc/change")).unwrap(), b"new!");
        assert_eq!(std::fs::read(out.join("etc/new")).unwrap(), b"n");
        assert!(!out.join("etc/keep").exists());
        assert!(!out.join("var").exists());
        let gone = std::fs::symlink_metadata(out.join("etc/gone")).unwrap();
        assert!(crate::is_whiteout(&out.join("etc/gone"), &gone));
        assert!(crate::is_opaque_dir(&out.join("redo")));
        assert_eq!(std::fs::read(out.join("redo/fresh")).unwrap(), b"f");
        assert!(!out.join("redo/old").exists());
    }
}
