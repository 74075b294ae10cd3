//! The external files of a layer (regular files whose content is read from where it is when
//! the layer tar is written), kept compactly in path order: each path once in a byte arena,
//! each source as a shared directory and a name.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The walk order of two `/`-separated relative paths: element by element, each compared
/// by bytes, so a directory comes right before what is below it (`a`, `a/b`, `a.txt`, `ab`).
/// It is `Path`'s order for relative paths, and the order of a sorted depth-first walk: a
/// byte comparison in which `/` sorts before every other byte (names hold no NUL).
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => {
            let key = |c: u8| if c == b'/' { 0 } else { c };
            key(a[i]).cmp(&key(b[i]))
        }
        None => a.len().cmp(&b.len()),
    }
}

/// The first of `len` names, sorted in [`walk_order`] and read by `name_at`, that does not
/// come before `target` (`len` when all do): the binary search of the tables kept in walk
/// order.
pub fn lower_bound_in_walk_order<'a>(
    len: usize,
    name_at: impl Fn(usize) -> &'a [u8],
    target: &[u8],
) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if walk_order(name_at(mid), target).is_lt() {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A regular file of a layer whose content is read from `source` when the layer tar is
/// written, with the metadata it has in the layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalFile {
    /// Where the content is (opened without following a symlink).
    pub source: PathBuf,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Content length; the source must still have exactly this many bytes.
    pub size: u64,
    /// External files with the same key are hard links of one another (the first in the
    /// tar's order holds the content): the source's (device, inode) when it has several links.
    pub link: Option<(u64, u64)>,
}

/// One file in the arena form.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Where its layer path ends in `bytes` (it starts where the previous slot's data ends).
    path_end: u32,
    /// Where the source's file name ends in `bytes`; `path_end` when it is the same as the
    /// last element of the layer path (a COPY keeps names).
    source_end: u32,
    /// The source's directory, in `dirs`.
    dir: u32,
    /// In `links`, or `u32::MAX` for none.
    link: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Replaced or removed since.
    removed: bool,
    mtime: i64,
    size: u64,
}

/// External files of a layer by their path relative to the layer root (`a/b`). Their
/// parent directories must exist in the layer's directory; a name there is replaced.
///
/// Files inserted in path order (a COPY of a tree) are appended to the compact form; one
/// that comes out of order goes to a small ordered map beside it. Iteration merges both.
#[derive(Clone, Debug, Default)]
pub struct ExternalFiles {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
    /// Source directories; consecutive files mostly share the last one.
    dirs: Vec<PathBuf>,
    links: Vec<(u64, u64)>,
    /// Files inserted out of path order.
    unordered: BTreeMap<PathBuf, ExternalFile>,
    live: usize,
}

impl ExternalFiles {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many files there are.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            _ => self.slots[i - 1].source_end as usize,
        }
    }

    fn path_bytes(&self, i: usize) -> &[u8] {
        &self.bytes[self.start(i)..self.slots[i].path_end as usize]
    }

    fn path(&self, i: usize) -> &Path {
        Path::new(OsStr::from_bytes(self.path_bytes(i)))
    }

    fn file(&self, i: usize) -> ExternalFile {
        let slot = &self.slots[i];
        let name = match slot.source_end == slot.path_end {
            true => self.path(i).file_name().unwrap_or_default(),
            false => {
                OsStr::from_bytes(&self.bytes[slot.path_end as usize..slot.source_end as usize])
            }
        };
        ExternalFile {
            source: self.dirs[slot.dir as usize].join(name),
            mode: slot.mode,
            uid: slot.uid,
            gid: slot.gid,
            mtime: slot.mtime,
            size: slot.size,
            link: self.links.get(slot.link as usize).copied(),
        }
    }

    /// The first slot whose path is not before `path`.
    fn lower_bound(&self, path: &[u8]) -> usize {
        lower_bound_in_walk_order(self.slots.len(), |i| self.path_bytes(i), path)
    }

    /// The live slot at `path`, if any.
    fn find(&self, path: &[u8]) -> Option<usize> {
        let i = self.lower_bound(path);
        (i < self.slots.len() && !self.slots[i].removed && self.path_bytes(i) == path).then_some(i)
    }

    /// The file at `path`, if any.
    pub fn get(&self, path: &Path) -> Option<ExternalFile> {
        match self.find(path.as_os_str().as_bytes()) {
            Some(i) => Some(self.file(i)),
            None => self.unordered.get(path).cloned(),
        }
    }

    /// Whether there is a file at `path`.
    pub fn contains_key(&self, path: &Path) -> bool {
        self.find(path.as_os_str().as_bytes()).is_some() || self.unordered.contains_key(path)
    }

    /// Adds `file` at `path`, replacing a file there.
    pub fn insert(&mut self, path: PathBuf, file: ExternalFile) {
        let key = path.as_os_str().as_bytes();
        if let Some(i) = self.find(key) {
            self.slots[i].removed = true;
            self.live -= 1;
        }
        let (dir, name) = match (file.source.parent(), file.source.file_name()) {
            (Some(dir), Some(name)) => (dir, name),
            _ => (Path::new(""), file.source.as_os_str()),
        };
        let in_order = self
            .slots
            .len()
            .checked_sub(1)
            .is_none_or(|last| walk_order(self.path_bytes(last), key).is_lt());
        // The compact form counts in u32: past 4 GiB of names, the map takes the rest.
        let fits = u32::try_from(self.bytes.len() + key.len() + name.len()).is_ok()
            && u32::try_from(self.dirs.len() + self.links.len() + 1).is_ok();
        if !in_order || !fits {
            if self.unordered.insert(path, file).is_none() {
                self.live += 1;
            }
            return;
        }
        if self.unordered.remove(&path).is_some() {
            self.live -= 1;
        }
        if self.dirs.last().is_none_or(|last| last != dir) {
            self.dirs.push(dir.to_path_buf());
        }
        self.bytes.extend_from_slice(key);
        let path_end = self.bytes.len() as u32;
        if path.file_name() != Some(name) {
            self.bytes.extend_from_slice(name.as_bytes());
        }
        let link = match file.link {
            Some(key) => {
                self.links.push(key);
                (self.links.len() - 1) as u32
            }
            None => u32::MAX,
        };
        self.slots.push(Slot {
            path_end,
            source_end: self.bytes.len() as u32,
            dir: (self.dirs.len() - 1) as u32,
            link,
            mode: file.mode,
            uid: file.uid,
            gid: file.gid,
            removed: false,
            mtime: file.mtime,
            size: file.size,
        });
        self.live += 1;
    }

    /// Removes the file at `path` and every file below it.
    pub fn remove_below(&mut self, path: &Path) {
        let key = path.as_os_str().as_bytes();
        let below = |p: &[u8]| {
            p.starts_with(key) && (p.len() == key.len() || p[key.len()] == b'/' || key.is_empty())
        };
        let mut i = self.lower_bound(key);
        while i < self.slots.len() && below(self.path_bytes(i)) {
            if !self.slots[i].removed {
                self.slots[i].removed = true;
                self.live -= 1;
            }
            i += 1;
        }
        let gone: Vec<PathBuf> = self
            .unordered
            .range(path.to_path_buf()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(path))
            .cloned()
            .collect();
        for k in gone {
            self.unordered.remove(&k);
            self.live -= 1;
        }
    }

    /// Every file in path order.
    pub fn iter(&self) -> impl Iterator<Item = (PathBuf, ExternalFile)> + '_ {
        let mut compact = (0..self.slots.len())
            .filter(|&i| !self.slots[i].removed)
            .peekable();
        let mut unordered = self.unordered.iter().peekable();
        std::iter::from_fn(move || {
            let take_compact = match (compact.peek(), unordered.peek()) {
                (Some(&i), Some((p, _))) => {
                    walk_order(self.path_bytes(i), p.as_os_str().as_bytes()).is_lt()
                }
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            if take_compact {
                let i = compact.next()?;
                Some((self.path(i).to_path_buf(), self.file(i)))
            } else {
                unordered.next().map(|(p, f)| (p.clone(), f.clone()))
            }
        })
    }

    /// The files directly in the directory `dir` (`""` for the layer root): their names and
    /// the files, in path order of the compact form, then of the others.
    pub fn children<'a>(
        &'a self,
        dir: &'a Path,
    ) -> impl Iterator<Item = (&'a OsStr, ExternalFile)> + 'a {
        let key = dir.as_os_str().as_bytes();
        let prefix_len = if key.is_empty() { 0 } else { key.len() + 1 };
        let in_dir = move |p: &[u8]| {
            p.len() > prefix_len
                && (key.is_empty() || (p.starts_with(key) && p[key.len()] == b'/'))
                && !p[prefix_len..].contains(&b'/')
        };
        let mut start = key.to_vec();
        if !key.is_empty() {
            start.push(b'/');
        }
        let first = self.lower_bound(&start);
        let compact = (first..self.slots.len())
            .take_while(move |&i| {
                let p = self.path_bytes(i);
                key.is_empty() || (p.starts_with(key) && p.get(key.len()) == Some(&b'/'))
            })
            .filter(move |&i| !self.slots[i].removed && in_dir(self.path_bytes(i)))
            .map(move |i| {
                let name = OsStr::from_bytes(&self.path_bytes(i)[prefix_len..]);
                (name, self.file(i))
            });
        // What is below `dir` follows it in `Path` order.
        let others = self
            .unordered
            .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
            .take_while(move |(p, _)| p.starts_with(dir))
            .filter(move |(p, _)| p.parent().unwrap_or(Path::new("")) == dir)
            .filter_map(|(p, f)| Some((p.file_name()?, f.clone())));
        compact.chain(others)
    }
}

impl FromIterator<(PathBuf, ExternalFile)> for ExternalFiles {
    fn from_iter<I: IntoIterator<Item = (PathBuf, ExternalFile)>>(iter: I) -> Self {
        let mut files = Self::new();
        for (path, file) in iter {
            files.insert(path, file);
        }
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(source: &str) -> ExternalFile {
        ExternalFile {
            source: source.into(),
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: 3,
            size: 4,
            link: None,
        }
    }

    fn paths(files: &ExternalFiles) -> Vec<String> {
        files.iter().map(|(p, _)| p.display().to_string()).collect()
    }

    #[test]
    fn walk_order_is_paths_order() {
        let mut names: Vec<&str> = vec!["ab", "a.txt", "a/b", "a", "a/b/c", "a-b", "b", "a/b.txt"];
        names.sort_by(|a, b| walk_order(a.as_bytes(), b.as_bytes()));
        assert_eq!(
            names,
            ["a", "a/b", "a/b/c", "a/b.txt", "a-b", "a.txt", "ab", "b"]
        );
        let mut as_paths: Vec<&Path> = names.iter().map(Path::new).collect();
        as_paths.sort();
        assert_eq!(as_paths, names.iter().map(Path::new).collect::<Vec<_>>());
    }

    #[test]
    fn files_in_and_out_of_order_come_back_sorted_and_whole() {
        let mut files = ExternalFiles::new();
        files.insert("a/b".into(), file("/ctx/a/b"));
        files.insert("a/c".into(), file("/ctx/other/name"));
        files.insert("a.txt".into(), file("/ctx/a.txt"));
        // Out of order: kept beside the compact form.
        files.insert("a/a".into(), file("/ctx2/a/a"));
        files.insert("0".into(), file("/zero"));
        assert_eq!(paths(&files), ["0", "a/a", "a/b", "a/c", "a.txt"]);
        assert_eq!(files.len(), 5);
        assert_eq!(files.get(Path::new("a/c")), Some(file("/ctx/other/name")));
        assert_eq!(files.get(Path::new("a/a")), Some(file("/ctx2/a/a")));
        assert_eq!(files.get(Path::new("a")), None);
        // Replacing keeps one file at a path.
        files.insert("a/b".into(), file("/new/b"));
        assert_eq!(files.len(), 5);
        assert_eq!(files.get(Path::new("a/b")), Some(file("/new/b")));
        assert_eq!(paths(&files), ["0", "a/a", "a/b", "a/c", "a.txt"]);
    }

    #[test]
    fn remove_below_takes_the_subtree_only() {
        let mut files: ExternalFiles = ["a/b", "a/c/d", "a.txt", "ab"]
            .into_iter()
            .map(|p| (PathBuf::from(p), file(&format!("/s/{p}"))))
            .collect();
        files.insert("a/0".into(), file("/s/late"));
        files.remove_below(Path::new("a"));
        assert_eq!(paths(&files), ["a.txt", "ab"]);
        assert_eq!(files.len(), 2);
        assert!(!files.contains_key(Path::new("a/b")));
        files.remove_below(Path::new("ab"));
        assert_eq!(paths(&files), ["a.txt"]);
    }

    #[test]
    fn children_are_one_level_with_non_utf8_names() {
        let names: [&[u8]; 5] = [b"a/\xffx", b"a/b/c", b"a/y", b"a.txt", b"z"];
        let files: ExternalFiles = names
            .iter()
            .map(|n| {
                let p = PathBuf::from(OsStr::from_bytes(n));
                let mut f = file("");
                f.source = Path::new("/s").join(&p);
                (p, f)
            })
            .collect();
        // Sorted: the listing sorts them with the directory's own entries.
        let kids_of = |files: &ExternalFiles, dir: &str| -> Vec<Vec<u8>> {
            let mut kids: Vec<Vec<u8>> = files
                .children(Path::new(dir))
                .map(|(n, _)| n.as_bytes().to_vec())
                .collect();
            kids.sort();
            kids
        };
        let kids = |dir: &str| kids_of(&files, dir);
        assert_eq!(kids(""), [b"a.txt".to_vec(), b"z".to_vec()]);
        assert_eq!(kids("a"), [b"y".to_vec(), b"\xffx".to_vec()]);
        assert_eq!(kids("a/b"), [b"c".to_vec()]);
        let mut files = files;
        files.insert("a/b/0".into(), file("/s/late"));
        files.insert("0".into(), file("/s/zero"));
        assert_eq!(kids_of(&files, "a/b"), [b"0".to_vec(), b"c".to_vec()]);
        let top = [b"0".to_vec(), b"a.txt".to_vec(), b"z".to_vec()];
        assert_eq!(kids_of(&files, ""), top);
        let (_, f) = files.children(Path::new("a")).next().unwrap();
        assert_eq!(
            f.source,
            Path::new("/s").join(OsStr::from_bytes(b"a/\xffx"))
        );
    }
}
