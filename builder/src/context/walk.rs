//! The walk of a build context: which files `COPY . /dest/` sees once `.dockerignore` is
//! applied.
//!
//! Rules (fsutil's): the walk is sorted by file name and never follows symlinks (a link
//! is an entry of its own). An excluded file is left out. An excluded directory is
//! pruned unless an exception could match below it; then it is walked, and it appears
//! only if something below it is kept (it is created as the parent of what an exception
//! re-includes). A kept directory appears even when empty. `dir/**` excludes what is in
//! `dir` but not `dir` itself.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use walkdir::WalkDir;

use rbuild_store::walk_order;

use super::table::EntryTable;
use super::{ContextEntry, ContextError, EntryKind, EntryStat, IgnoreRules};

/// The files of a build context after `.dockerignore`, in walk order (sorted by name,
/// parents before children).
#[derive(Debug)]
pub struct ContextFiles {
    root: PathBuf,
    table: EntryTable,
    /// Whether owners are part of the content: yes for layers (`COPY --from` keeps them),
    /// no for a build context, whose files COPY writes as 0:0 (or `--chown`): who owns the
    /// checkout differs between machines and must not change a cache key.
    owners: bool,
}

/// A directory of the walk: its children still to visit.
struct Level {
    children: Listing,
    next: usize,
    rel: PathBuf,
    depth: usize,
}

impl Level {
    /// The next child's relative path and stat fields.
    fn next_child(&mut self) -> Option<(PathBuf, EntryStat)> {
        let (name, stat) = self.children.get(self.next)?;
        self.next += 1;
        Some((self.rel.join(name), stat))
    }
}

/// A directory's children with their `lstat` fields, sorted by name (bytes): the names in
/// one buffer, so a listed tree costs no allocation per file.
#[derive(Debug, Default)]
struct Listing {
    names: Vec<u8>,
    /// Where each child's name ends in `names`.
    ends: Vec<u32>,
    stats: Vec<EntryStat>,
}

impl Listing {
    fn len(&self) -> usize {
        self.stats.len()
    }

    fn get(&self, i: usize) -> Option<(&OsStr, EntryStat)> {
        let stat = *self.stats.get(i)?;
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p] as usize);
        let name = OsStr::from_bytes(&self.names[start..self.ends[i] as usize]);
        Some((name, stat))
    }

    fn iter(&self) -> impl Iterator<Item = (&OsStr, EntryStat)> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// Whether the walk goes into a directory: it is kept, or excluded with an exception
/// that may re-include something below it.
fn descends(rules: &IgnoreRules, name: &str, excluded: bool) -> bool {
    !excluded || rules.exception_may_match_below(name)
}

/// Lists, on a few threads, every directory the walk will go into (by [`descends`]),
/// keyed by its path relative to `root`. A directory that cannot be listed (or whose
/// children's rules fail) is left out: the walk lists it itself and meets the error in order.
fn list_tree(root: &Path, rules: &IgnoreRules) -> HashMap<PathBuf, Listing> {
    struct Work {
        todo: Vec<PathBuf>,
        busy: usize,
        done: HashMap<PathBuf, Listing>,
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
    let work = Mutex::new(Work {
        todo: vec![PathBuf::new()],
        busy: 0,
        done: HashMap::new(),
    });
    let changed = Condvar::new();
    let lock = || work.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let rel = {
                    let mut w = lock();
                    loop {
                        if let Some(rel) = w.todo.pop() {
                            w.busy += 1;
                            break rel;
                        }
                        if w.busy == 0 {
                            changed.notify_all();
                            return;
                        }
                        w = changed.wait(w).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let listing = list_dir(&root.join(&rel)).ok();
                let mut subdirs = Vec::new();
                for (name, stat) in listing.iter().flat_map(Listing::iter) {
                    if stat.kind() == EntryKind::Dir {
                        let child = rel.join(name);
                        let text = child.to_string_lossy();
                        if let Ok(excluded) = rules.is_excluded(&text) {
                            if descends(rules, &text, excluded) {
                                subdirs.push(child);
                            }
                        }
                    }
                }
                let mut w = lock();
                w.busy -= 1;
                w.todo.extend(subdirs);
                if let Some(listing) = listing {
                    w.done.insert(rel, listing);
                }
                changed.notify_all();
            });
        }
    });
    work.into_inner().unwrap_or_else(|e| e.into_inner()).done
}

/// The children of `dir` with their `lstat` metadata, sorted by name (bytes).
fn list_dir(dir: &Path) -> Result<Listing, ContextError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ContextError::Io { op, path, source }
    };
    let mut read = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("walk", dir))? {
        let entry = entry.map_err(io("walk", dir))?;
        let metadata = entry.metadata().map_err(io("stat", &entry.path()))?;
        read.push((entry.file_name(), EntryStat::of(&metadata)));
    }
    read.sort_unstable_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
    let mut out = Listing {
        names: Vec::new(),
        ends: Vec::with_capacity(read.len()),
        stats: Vec::with_capacity(read.len()),
    };
    for (name, stat) in read {
        out.names.extend_from_slice(name.as_bytes());
        out.ends
            .push(u32::try_from(out.names.len()).map_err(|_| ContextError::TooLarge)?);
        out.stats.push(stat);
    }
    out.names.shrink_to_fit();
    Ok(out)
}

impl ContextFiles {
    /// Walks `root` and applies `rules`.
    pub fn walk(root: &Path, rules: &IgnoreRules) -> Result<Self, ContextError> {
        let root_meta = std::fs::metadata(root).map_err(|source| ContextError::Io {
            op: "stat context directory",
            path: root.to_path_buf(),
            source,
        })?;
        if !root_meta.is_dir() {
            return Err(ContextError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        // The directories are listed and their children stat'ed first, on every core; the
        // ordered walk below then only takes the listings.
        let mut listed = list_tree(root, rules);
        Self::walk_listed(root, rules, &mut listed)
    }

    /// The ordered walk over `listed` (a directory missing there is listed on the spot).
    fn walk_listed(
        root: &Path,
        rules: &IgnoreRules,
        listed: &mut HashMap<PathBuf, Listing>,
    ) -> Result<Self, ContextError> {
        let mut take = |rel: &Path| match listed.remove(rel) {
            Some(listing) => Ok(listing),
            None => list_dir(&root.join(rel)),
        };
        let mut table = EntryTable::new(vec![root.to_path_buf()]);
        // Excluded directories walked because an exception may re-include something below
        // them: emitted only when that happens. `(depth, relative path, stat)`.
        let mut pending: Vec<(usize, PathBuf, EntryStat)> = Vec::new();
        // Depth first with an explicit stack; each directory's children listed and stat'ed
        // relative to its open fd (a full-path stat per file costs a path lookup per file).
        let mut stack = vec![Level {
            children: take(Path::new(""))?,
            next: 0,
            rel: PathBuf::new(),
            depth: 1,
        }];
        while let Some(level) = stack.last_mut() {
            let Some((rel, stat)) = level.next_child() else {
                stack.pop();
                continue;
            };
            let depth = level.depth;
            while pending.last().is_some_and(|(d, _, _)| *d >= depth) {
                pending.pop();
            }
            let name = rel.to_string_lossy();
            let kind = stat.kind();
            let excluded = rules.is_excluded(&name)?;
            let descend = kind == EntryKind::Dir && descends(rules, &name, excluded);
            drop(name);
            if descend {
                let children = take(&rel)?;
                stack.push(Level {
                    children,
                    next: 0,
                    rel: rel.clone(),
                    depth: depth + 1,
                });
            }
            if excluded {
                if descend {
                    pending.push((depth, rel, stat));
                }
                continue;
            }
            for (_, parent, parent_stat) in pending.drain(..) {
                table.push(parent.as_os_str().as_bytes(), parent_stat, 0)?;
            }
            table.push(rel.as_os_str().as_bytes(), stat, 0)?;
        }
        table.finish();
        Ok(Self {
            root: root.to_path_buf(),
            table,
            owners: false,
        })
    }

    /// Walks the merged view of overlay-form layers, top-most first, with no ignore rules:
    /// the rootfs of an earlier stage or of an image, for `COPY --from`, without mounting
    /// it. A whiteout (a 0:0 char device, or the xattr form where the store's filesystem
    /// refuses one) removes a path, an opaque directory (either mark, `trusted.` or
    /// `user.overlay.opaque=y`) hides what lower layers hold below it, and an upper entry
    /// hides a lower one of the same name (directories merge). Each entry's `path` is the
    /// file in the layer that provides it; `root()` is the top-most layer.
    pub fn walk_layers(layers: &[PathBuf]) -> Result<Self, ContextError> {
        enum Seen {
            Gone,
            NonDir,
            Dir { opaque: bool },
        }
        let mut seen: HashMap<String, Seen> = HashMap::new();
        // (relative path, stat, layer): each path once, the top-most layer's.
        let mut merged: Vec<(PathBuf, EntryStat, usize)> = Vec::new();
        for (at, layer) in layers.iter().enumerate() {
            if !layer.is_dir() {
                return Err(ContextError::NotADirectory {
                    path: layer.clone(),
                });
            }
            // Applied once the layer is done: a layer never hides its own entries.
            let mut found: Vec<(String, Seen)> = Vec::new();
            let mut it = WalkDir::new(layer)
                .min_depth(1)
                .follow_links(false)
                .sort_by_file_name()
                .into_iter();
            while let Some(item) = it.next() {
                let item = item.map_err(|e| ContextError::Io {
                    op: "walk",
                    path: e.path().unwrap_or(layer).to_path_buf(),
                    source: e.into(),
                })?;
                let rel = item
                    .path()
                    .strip_prefix(layer)
                    .unwrap_or(item.path())
                    .to_path_buf();
                let name = rel.to_string_lossy().into_owned();
                let is_dir = item.file_type().is_dir();
                let hidden_above = name.match_indices('/').any(|(i, _)| {
                    matches!(
                        seen.get(&name[..i]),
                        Some(Seen::Gone | Seen::NonDir | Seen::Dir { opaque: true })
                    )
                });
                let shadowed = match seen.get(&name) {
                    // Same directory in a higher layer: merge, walk on.
                    Some(Seen::Dir { .. }) if is_dir && !hidden_above => continue,
                    Some(_) => true,
                    None => false,
                };
                if hidden_above || shadowed {
                    if is_dir {
                        it.skip_current_dir();
                    }
                    continue;
                }
                let metadata = item.metadata().map_err(|e| ContextError::Io {
                    op: "stat",
                    path: item.path().to_path_buf(),
                    source: e.into(),
                })?;
                let stat = EntryStat::of(&metadata);
                if rbuild_store::is_whiteout(item.path(), &metadata) {
                    found.push((name, Seen::Gone));
                    continue;
                }
                found.push((
                    name.clone(),
                    if is_dir {
                        Seen::Dir {
                            opaque: rbuild_store::is_opaque_dir(item.path()),
                        }
                    } else {
                        Seen::NonDir
                    },
                ));
                merged.push((rel, stat, at));
            }
            seen.extend(found);
        }
        merged.sort_unstable_by(|a, b| {
            walk_order(a.0.as_os_str().as_bytes(), b.0.as_os_str().as_bytes())
        });
        let mut table = EntryTable::new(layers.to_vec());
        for (rel, stat, at) in merged {
            table.push(rel.as_os_str().as_bytes(), stat, at)?;
        }
        table.finish();
        Ok(Self {
            root: layers.first().cloned().unwrap_or_default(),
            table,
            owners: true,
        })
    }

    /// Whether the files' owners are part of their content (see `digest_sources`).
    pub fn owners_matter(&self) -> bool {
        self.owners
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many entries were kept.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Every kept entry in walk order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = ContextEntry<'_>> + '_ {
        (0..self.table.len()).map(|i| self.table.entry(i))
    }

    /// The kept entry at the `/`-separated relative path `name`, if any.
    pub fn get(&self, name: &str) -> Option<ContextEntry<'_>> {
        self.table.find(name).map(|i| self.table.entry(i))
    }

    /// The kept entries below the directory `name` (not itself), in walk order; every
    /// entry for `.`.
    pub fn below<'a>(&'a self, name: &str) -> impl Iterator<Item = ContextEntry<'a>> + 'a {
        let range = match name {
            "." => 0..self.table.len(),
            _ => self.table.find(name).map_or(0..0, |i| self.table.below(i)),
        };
        range.map(|i| self.table.entry(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(root: &Path, patterns: &[&str]) -> Vec<String> {
        let rules = IgnoreRules::new(patterns).unwrap();
        let names = |files: ContextFiles| -> Vec<String> {
            files.iter().map(|e| e.name().into_owned()).collect()
        };
        let walked = names(ContextFiles::walk(root, &rules).unwrap());
        // Listing each directory on the spot, in walk order, sees the same.
        let mut none = HashMap::new();
        let alone = ContextFiles::walk_listed(root, &rules, &mut none).unwrap();
        assert_eq!(
            walked,
            names(alone),
            "listing the tree first changed the walk"
        );
        walked
    }

    #[test]
    fn tree_listing_goes_only_where_the_walk_goes() {
        let dir = tree(&["keep/a", "node_modules/x/y", "docs/skip/z", "docs/keep.md"]);
        let rules = IgnoreRules::new(&["node_modules", "docs", "!docs/*.md"]).unwrap();
        let listed = list_tree(dir.path(), &rules);
        let mut dirs: Vec<String> = listed.keys().map(|k| k.display().to_string()).collect();
        dirs.sort();
        // `docs` is excluded but an exception may match below it (the rule is conservative,
        // so `docs/skip` is listed too); `node_modules` is never listed.
        assert_eq!(dirs, ["", "docs", "docs/skip", "keep"]);
        assert_eq!(
            names(dir.path(), &["node_modules", "docs", "!docs/*.md"]),
            ["docs", "docs/keep.md", "keep", "keep/a"]
        );
    }

    fn tree(paths: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for p in paths {
            let full = dir.path().join(p);
            if let Some(stripped) = p.strip_suffix('/') {
                std::fs::create_dir_all(dir.path().join(stripped)).unwrap();
            } else {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(full, p.as_bytes()).unwrap();
            }
        }
        dir
    }

    #[test]
    fn exception_recreates_excluded_parent() {
        let dir = tree(&["bar", "foo2", "foo/bar2", "foo/other", "empty/"]);
        assert_eq!(
            names(dir.path(), &["foo*", "!foo/bar2"]),
            ["bar", "empty", "foo", "foo/bar2"]
        );
    }

    #[test]
    fn double_star_keeps_the_dir() {
        let dir = tree(&["d/a", "d/e/b", "x"]);
        assert_eq!(names(dir.path(), &["d/**"]), ["d", "x"]);
    }

    #[test]
    fn symlinks_are_entries_not_followed() {
        let dir = tree(&["a"]);
        std::os::unix::fs::symlink("/etc", dir.path().join("etc-link")).unwrap();
        let rules = IgnoreRules::default();
        let files = ContextFiles::walk(dir.path(), &rules).unwrap();
        let link = files.get("etc-link").unwrap();
        assert_eq!(link.kind(), EntryKind::Symlink);
        assert!(files.get("etc-link/passwd").is_none());
    }

    #[test]
    fn layered_walk_merges_like_overlay() {
        let bottom = tree(&["etc/a", "etc/b", "opt/x/y", "usr/bin/tool", "gone/deep/f"]);
        let top = tree(&["etc/c", "opt/new", "usr/bin/tool"]);
        let node = |p: &Path| {
            nix::sys::stat::mknod(
                p,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                0,
            )
            .unwrap()
        };
        node(&top.path().join("etc/b"));
        node(&top.path().join("gone"));
        let opt = top.path().join("opt");
        let c_opt = std::ffi::CString::new(opt.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a valid value buffer.
        let rc = unsafe {
            libc::lsetxattr(
                c_opt.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "needs root: {}", std::io::Error::last_os_error());
        let layers = vec![top.path().to_path_buf(), bottom.path().to_path_buf()];
        let files = ContextFiles::walk_layers(&layers).unwrap();
        let names: Vec<_> = files.iter().map(|e| e.name()).collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/a",
                "etc/c",
                "opt",
                "opt/new",
                "usr",
                "usr/bin",
                "usr/bin/tool"
            ]
        );
        let tool = files.get("usr/bin/tool").unwrap();
        assert!(tool.path().starts_with(top.path()));
        assert!(files
            .get("etc/a")
            .unwrap()
            .path()
            .starts_with(bottom.path()));
    }

    #[test]
    fn below_lists_a_subtree() {
        let dir = tree(&["a/b", "a/c/d", "a.txt", "ab"]);
        let files = ContextFiles::walk(dir.path(), &IgnoreRules::default()).unwrap();
        let sub: Vec<_> = files.below("a").map(|e| e.name()).collect();
        assert_eq!(sub, ["a/b", "a/c", "a/c/d"]);
        assert_eq!(files.below(".").count(), 6);
    }
}
