//! The walked entries of a context in one compact table: each relative path stored once,
//! in walk order, in one byte arena, and found by binary search in that order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rbuild_store::{lower_bound_in_walk_order, walk_order};

use super::{ContextError, EntryKind, EntryStat};

/// One entry's record: the stat fields files mostly differ in, an index into the table's
/// distinct [`Shared`] fields, where its name ends in the arena and which base directory
/// holds its file. 48 bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    size: u64,
    mtime: i64,
    ino: u64,
    mode: u32,
    mtime_nsec: u32,
    shared: u32,
    name_end: u32,
    base: u32,
}

/// The stat fields most files of a tree have in common (one device, one owner, one link,
/// no device number), kept once per distinct value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shared {
    dev: u64,
    rdev: u64,
    uid: u32,
    gid: u32,
    nlink: u32,
}

/// The entries of a walk, in walk order.
#[derive(Debug, Default)]
pub(super) struct EntryTable {
    /// The directories the entries' files are in (the context root, or the layers).
    bases: Vec<PathBuf>,
    /// Every entry's relative path, one after the other.
    names: Vec<u8>,
    slots: Vec<Slot>,
    /// The distinct shared fields, and while pushing, where each is.
    shared: Vec<Shared>,
    shared_at: HashMap<Shared, u32>,
    /// The entries whose names are not UTF-8, by their lossy form (the form patterns and
    /// sources use), sorted; the last of equal names wins.
    lossy: Vec<(Box<str>, u32)>,
}

impl EntryTable {
    /// An empty table whose entries' files are in `bases`.
    pub(super) fn new(bases: Vec<PathBuf>) -> Self {
        Self {
            bases,
            ..Self::default()
        }
    }

    /// Appends an entry, which must come after every entry already in (walk order); its
    /// file is `bases[base]` joined with `name`.
    pub(super) fn push(
        &mut self,
        name: &[u8],
        stat: EntryStat,
        base: usize,
    ) -> Result<(), ContextError> {
        debug_assert!(self.slots.last().is_none_or(|_| walk_order(
            self.name(self.slots.len() - 1),
            name
        )
        .is_lt()));
        self.names.extend_from_slice(name);
        let name_end = u32::try_from(self.names.len()).map_err(|_| ContextError::TooLarge)?;
        let base = u32::try_from(base).map_err(|_| ContextError::TooLarge)?;
        if std::str::from_utf8(name).is_err() {
            let lossy = String::from_utf8_lossy(name).into_owned().into_boxed_str();
            self.lossy.push((lossy, self.slots.len() as u32));
        }
        let shared = Shared {
            dev: stat.dev,
            rdev: stat.rdev,
            uid: stat.uid,
            gid: stat.gid,
            nlink: stat.nlink,
        };
        let shared = match self.shared_at.get(&shared) {
            Some(&at) => at,
            None => {
                let at = u32::try_from(self.shared.len()).map_err(|_| ContextError::TooLarge)?;
                self.shared.push(shared);
                self.shared_at.insert(shared, at);
                at
            }
        };
        self.slots.push(Slot {
            size: stat.size,
            mtime: stat.mtime,
            ino: stat.ino,
            mode: stat.mode,
            mtime_nsec: stat.mtime_nsec,
            shared,
            name_end,
            base,
        });
        Ok(())
    }

    /// Done pushing: the spare capacity is given back and the lossy names sorted.
    pub(super) fn finish(&mut self) {
        self.names.shrink_to_fit();
        self.slots.shrink_to_fit();
        self.shared.shrink_to_fit();
        self.shared_at = HashMap::new();
        // Stable: equal lossy names stay in walk order, and lookups take the last.
        self.lossy.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// How many entries there are.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The relative path of entry `i`.
    fn name(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.slots[i - 1].name_end as usize,
        };
        &self.names[start..self.slots[i].name_end as usize]
    }

    /// The entry at `i`.
    pub(super) fn entry(&self, i: usize) -> ContextEntry<'_> {
        ContextEntry {
            table: self,
            index: i,
        }
    }

    /// The index of the entry named `name` (`/`-separated, relative): by its bytes, or for
    /// a name that is not UTF-8 on disk by its lossy form.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.binary_search(name.as_bytes())
            .or_else(|| self.find_lossy(name))
    }

    fn binary_search(&self, name: &[u8]) -> Option<usize> {
        let i = lower_bound_in_walk_order(self.slots.len(), |j| self.name(j), name);
        (i < self.slots.len() && self.name(i) == name).then_some(i)
    }

    fn find_lossy(&self, name: &str) -> Option<usize> {
        let end = self.lossy.partition_point(|(l, _)| &**l <= name);
        match end.checked_sub(1).map(|i| &self.lossy[i]) {
            Some((l, i)) if &**l == name => Some(*i as usize),
            _ => None,
        }
    }

    /// The indices of the entries below entry `i` (not itself), which follow it in walk
    /// order.
    pub(super) fn below(&self, i: usize) -> std::ops::Range<usize> {
        let dir = self.name(i);
        let end = (i + 1..self.slots.len())
            .find(|&j| {
                let name = self.name(j);
                !(name.len() > dir.len() && name.starts_with(dir) && name[dir.len()] == b'/')
            })
            .unwrap_or(self.slots.len());
        i + 1..end
    }
}

/// One path of the context that survived `.dockerignore`: a view into its table.
#[derive(Clone, Copy)]
pub struct ContextEntry<'a> {
    table: &'a EntryTable,
    index: usize,
}

impl<'a> ContextEntry<'a> {
    /// The path relative to the context root (never empty, never `..`), as bytes.
    pub fn name_bytes(&self) -> &'a [u8] {
        self.table.name(self.index)
    }

    /// The same path as a `/`-separated string (lossy for non-UTF-8 names), the form
    /// patterns match against.
    pub fn name(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.name_bytes())
    }

    /// The relative path as a `Path`.
    pub fn rel(&self) -> &'a Path {
        Path::new(OsStr::from_bytes(self.name_bytes()))
    }

    /// The file on disk (the context root, or for a layered walk the layer holding it,
    /// joined with the relative path).
    pub fn path(&self) -> PathBuf {
        let slot = &self.table.slots[self.index];
        self.table.bases[slot.base as usize].join(self.rel())
    }

    /// Its `lstat` fields from the walk.
    pub fn stat(&self) -> EntryStat {
        let slot = &self.table.slots[self.index];
        let shared = &self.table.shared[slot.shared as usize];
        EntryStat {
            size: slot.size,
            mtime: slot.mtime,
            ino: slot.ino,
            dev: shared.dev,
            rdev: shared.rdev,
            mode: slot.mode,
            mtime_nsec: slot.mtime_nsec,
            uid: shared.uid,
            gid: shared.gid,
            nlink: shared.nlink,
        }
    }

    /// Whether `other` is this entry of the same walk.
    pub fn same_as(&self, other: &ContextEntry<'_>) -> bool {
        std::ptr::eq(self.table, other.table) && self.index == other.index
    }

    /// What it is.
    pub fn kind(&self) -> EntryKind {
        EntryKind::of_mode(self.table.slots[self.index].mode)
    }
}

impl fmt::Debug for ContextEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextEntry")
            .field("name", &self.name())
            .field("kind", &self.kind())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mode: u32) -> EntryStat {
        EntryStat {
            size: 0,
            mtime: 0,
            ino: 0,
            dev: 0,
            rdev: 0,
            mode,
            mtime_nsec: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
        }
    }

    fn table(names: &[&[u8]]) -> EntryTable {
        let mut t = EntryTable::new(vec![PathBuf::from("/ctx")]);
        for name in names {
            t.push(name, stat(libc::S_IFREG | 0o644), 0).unwrap();
        }
        t.finish();
        t
    }

    #[test]
    fn lookups_find_every_entry_and_nothing_else() {
        let names: Vec<&[u8]> = vec![b"a", b"a/b", b"a/b/c", b"a.txt", b"ab", b"b"];
        let t = table(&names);
        for (i, name) in names.iter().enumerate() {
            assert_eq!(t.find(std::str::from_utf8(name).unwrap()), Some(i));
            assert_eq!(t.entry(i).name_bytes(), *name);
        }
        for absent in ["", "a/", "a/c", "aa", "a.txt/b", "c", "/a"] {
            assert_eq!(t.find(absent), None, "{absent}");
        }
        assert_eq!(t.entry(3).path(), Path::new("/ctx/a.txt"));
    }

    #[test]
    fn stat_fields_come_back_whole_with_shared_ones_kept_once() {
        let mut t = EntryTable::new(vec![PathBuf::from("/ctx")]);
        let mut stats = Vec::new();
        for i in 0..6u32 {
            let mut st = stat(libc::S_IFREG | 0o600 | i);
            st.size = u64::from(i) * 1000;
            st.mtime = -i64::from(i);
            st.mtime_nsec = i * 7;
            st.ino = u64::from(i) + 40;
            st.dev = 3;
            st.uid = i % 2;
            st.gid = 100;
            st.nlink = 1 + i / 4;
            stats.push(st);
        }
        stats[5].mode = libc::S_IFCHR | 0o600;
        stats[5].rdev = 0x0501;
        for (i, st) in stats.iter().enumerate() {
            t.push(format!("f{i}").as_bytes(), *st, 0).unwrap();
        }
        t.finish();
        for (i, st) in stats.iter().enumerate() {
            assert_eq!(t.entry(i).stat(), *st, "entry {i}");
        }
        assert_eq!(t.entry(5).kind(), EntryKind::CharDevice);
        // uid 0 or 1, nlink 1 for four files and 2 for two (the device among them): four
        // distinct values for six files.
        assert_eq!(t.shared.len(), 4);
    }

    #[test]
    fn below_is_the_subtree_only() {
        let t = table(&[b"a", b"a/b", b"a/b/c", b"a.txt", b"ab", b"ab/x"]);
        assert_eq!(t.below(0), 1..3);
        assert_eq!(t.below(1), 2..3);
        assert_eq!(t.below(3), 4..4);
        assert_eq!(t.below(4), 5..6);
    }

    #[test]
    fn non_utf8_names_are_found_by_their_lossy_form() {
        let t = table(&[b"d", b"d/\xffx", b"e\xfe"]);
        assert_eq!(t.find("d/\u{fffd}x"), Some(1));
        assert_eq!(t.find("e\u{fffd}"), Some(2));
        assert_eq!(t.entry(1).name(), "d/\u{fffd}x");
        assert_eq!(t.entry(2).rel().as_os_str().as_bytes(), b"e\xfe");
        assert_eq!(t.find("e"), None);
    }
}
