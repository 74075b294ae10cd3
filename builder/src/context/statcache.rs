//! The stat cache: file content digests remembered by `(path, size, mtime ns, inode,
//! mode)`, so an unchanged context is not read again.
//!
//! The trade-off is docker's own: a file rewritten with the same size and its mtime put
//! back is not noticed (ctime is not part of the key, as in BuildKit's contenthash).
//! The cache lives in a file the caller names and is written atomically (a temporary
//! file in the same directory, fsync, rename). A missing or unreadable cache file is an
//! empty cache, never an error: it only costs a cold read.
//!
//! In memory the file's records stay as they were read, in one buffer sorted by path and
//! found by binary search; the records added by a build go to a second buffer, found
//! through a map from the path's hash, and saving merges the two in path order.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{ContextError, EntryStat};

const MAGIC: &[u8] = b"rbuild-statcache-v1\n";

/// A record after its name: size, mtime ns, inode, mode, digest.
const FIXED: usize = 8 + 8 + 8 + 4 + 32;

/// What identifies an unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    ino: u64,
    mode: u32,
}

impl Stamp {
    fn of(stat: &EntryStat) -> Self {
        Self {
            size: stat.size,
            mtime_ns: stat.mtime_ns(),
            ino: stat.ino,
            mode: stat.mode,
        }
    }
}

/// Records in the file's encoding (little-endian: `u32` name length, name, size, mtime ns,
/// inode, mode, sha256), one after the other, and where each starts.
#[derive(Debug, Default)]
struct Records {
    bytes: Vec<u8>,
    at: Vec<u32>,
}

impl Records {
    fn name(&self, at: u32) -> &[u8] {
        let at = at as usize;
        let len = u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap_or_default());
        &self.bytes[at + 4..at + 4 + len as usize]
    }

    /// The whole record starting at `at`.
    fn record(&self, at: u32) -> &[u8] {
        let len = self.name(at).len();
        &self.bytes[at as usize..at as usize + 4 + len + FIXED]
    }

    fn value(&self, at: u32) -> (Stamp, [u8; 32]) {
        let name_len = self.name(at).len();
        let fixed = &self.bytes[at as usize + 4 + name_len..][..FIXED];
        let u64_at = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().unwrap_or_default());
        let stamp = Stamp {
            size: u64_at(0),
            mtime_ns: u64_at(8) as i64,
            ino: u64_at(16),
            mode: u32::from_le_bytes(fixed[24..28].try_into().unwrap_or_default()),
        };
        (stamp, fixed[28..60].try_into().unwrap_or_default())
    }

    /// Appends a record; `None` when the records would pass 4 GiB.
    fn push(&mut self, name: &[u8], stamp: Stamp, digest: &[u8; 32]) -> Option<u32> {
        let at = u32::try_from(self.bytes.len()).ok()?;
        u32::try_from(self.bytes.len() + 4 + name.len() + FIXED).ok()?;
        self.bytes
            .extend_from_slice(&(name.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(&stamp.size.to_le_bytes());
        self.bytes.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
        self.bytes.extend_from_slice(&stamp.ino.to_le_bytes());
        self.bytes.extend_from_slice(&stamp.mode.to_le_bytes());
        self.bytes.extend_from_slice(digest);
        self.at.push(at);
        Some(at)
    }

    /// The last record named `name`, by binary search (`at` sorted by name).
    fn find(&self, name: &[u8]) -> Option<u32> {
        let end = self.at.partition_point(|&at| self.name(at) <= name);
        let at = *self.at.get(end.checked_sub(1)?)?;
        (self.name(at) == name).then_some(at)
    }
}

/// The records read from a cache file, sorted by name, and the ones added since: those
/// found through a map from the name's hash (a collision only costs a miss).
#[derive(Debug, Default)]
struct Entries {
    loaded: Records,
    added: Records,
    by_hash: HashMap<u64, u32>,
    hasher: std::hash::RandomState,
}

impl Entries {
    fn get(&self, name: &[u8]) -> Option<(Stamp, [u8; 32])> {
        let added = self
            .by_hash
            .get(&self.hasher.hash_one(name))
            .filter(|&&at| self.added.name(at) == name);
        match added {
            Some(&at) => Some(self.added.value(at)),
            None => self.loaded.find(name).map(|at| self.loaded.value(at)),
        }
    }

    fn insert(&mut self, name: &[u8], stamp: Stamp, digest: &[u8; 32]) {
        if let Some(at) = self.added.push(name, stamp, digest) {
            self.by_hash.insert(self.hasher.hash_one(name), at);
        }
    }

    /// Every record, sorted by name, an added one replacing a loaded one of its name.
    fn write_sorted(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut added: Vec<u32> = self.by_hash.values().copied().collect();
        added.sort_unstable_by(|&a, &b| self.added.name(a).cmp(self.added.name(b)));
        let mut added = added.into_iter().peekable();
        let mut loaded = self.loaded.at.iter().copied().peekable();
        loop {
            let order = match (loaded.peek(), added.peek()) {
                (Some(&l), Some(&a)) => self.loaded.name(l).cmp(self.added.name(a)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => return Ok(()),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let at = loaded.next().unwrap_or_default();
                    out.write_all(self.loaded.record(at))?;
                }
                std::cmp::Ordering::Equal => {
                    loaded.next();
                }
                std::cmp::Ordering::Greater => {
                    let at = added.next().unwrap_or_default();
                    out.write_all(self.added.record(at))?;
                }
            }
        }
    }
}

/// Hits and misses since the cache was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatCacheStats {
    /// Digests answered from the cache.
    pub hits: u64,
    /// Files that had to be read.
    pub misses: u64,
}

/// A persistent map from file identity to its sha256.
#[derive(Debug, Default)]
pub struct StatCache {
    file: Option<PathBuf>,
    /// The file being read on another thread ([`StatCache::open_in_background`]); its
    /// entries are taken on first use.
    loading: Option<std::thread::JoinHandle<Option<Entries>>>,
    /// Keyed by the path's bytes: hashing a `Path` parses its components, which costs more
    /// than the rest of a warm lookup.
    entries: Entries,
    dirty: bool,
    stats: StatCacheStats,
}

impl StatCache {
    /// A cache that is never saved.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Loads the cache stored at `file` (empty when it does not exist or is damaged).
    pub fn open(file: &Path) -> Self {
        Self {
            file: Some(file.to_path_buf()),
            entries: load(file).unwrap_or_default(),
            ..Self::default()
        }
    }

    /// [`StatCache::open`] on another thread, so reading and decoding a big cache overlaps
    /// the rest of the build's start (parsing, the context walk); the first lookup waits.
    pub fn open_in_background(file: &Path) -> Self {
        let path = file.to_path_buf();
        let loading = std::thread::Builder::new()
            .name("statcache-load".into())
            .spawn(move || load(&path));
        match loading {
            Ok(handle) => Self {
                file: Some(file.to_path_buf()),
                loading: Some(handle),
                ..Self::default()
            },
            Err(_) => Self::open(file),
        }
    }

    /// The entries, once the background load (if any) is done. A load that failed or
    /// panicked is an empty cache.
    fn loaded(&mut self) -> &mut Entries {
        if let Some(handle) = self.loading.take() {
            if let Ok(Some(entries)) = handle.join() {
                self.entries = entries;
            }
        }
        &mut self.entries
    }

    /// Where the cache for the context directory `context_dir` lives under a store's
    /// cache directory: `<cache_dir>/statcache-<sha256 of the absolute context path>`.
    pub fn path_for(cache_dir: &Path, context_dir: &Path) -> PathBuf {
        let absolute = std::fs::canonicalize(context_dir).unwrap_or(context_dir.to_path_buf());
        let hash = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
        cache_dir.join(format!("statcache-{}", &hex::encode(hash)[..32]))
    }

    /// The cached digest of `path` if its stat fields have not changed.
    pub fn lookup(&mut self, path: &Path, meta: &EntryStat) -> Option<[u8; 32]> {
        let found = self.loaded().get(path.as_os_str().as_encoded_bytes());
        match found {
            Some((stamp, digest)) if stamp == Stamp::of(meta) => {
                self.stats.hits += 1;
                Some(digest)
            }
            _ => None,
        }
    }

    /// [`StatCache::lookup`] without counting a hit (a digest looked up again).
    pub(crate) fn peek(&mut self, path: &Path, meta: &EntryStat) -> Option<[u8; 32]> {
        match self.loaded().get(path.as_os_str().as_encoded_bytes()) {
            Some((stamp, digest)) if stamp == Stamp::of(meta) => Some(digest),
            _ => None,
        }
    }

    /// Records the digest of `path` as read with the stat fields `meta`.
    pub fn insert(&mut self, path: &Path, meta: &EntryStat, digest: [u8; 32]) {
        self.stats.misses += 1;
        self.loaded().insert(
            path.as_os_str().as_encoded_bytes(),
            Stamp::of(meta),
            &digest,
        );
        self.dirty = true;
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> StatCacheStats {
        self.stats
    }

    /// Writes the cache to its file if anything changed (temporary file, fsync, rename).
    pub fn save(&mut self) -> Result<(), ContextError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| ContextError::Io { op, path, source }
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            file.file_name()
                .map_or("statcache".into(), |n| n.to_string_lossy()),
            std::process::id()
        ));
        // Dirty: the background load, if any, was taken by the insert.
        let entries = &self.entries;
        let written = std::fs::File::create(&tmp).and_then(|f| {
            let mut out = BufWriter::with_capacity(1 << 20, f);
            out.write_all(MAGIC)?;
            entries.write_sorted(&mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()
        });
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("write", &tmp)(source));
        }
        std::fs::rename(&tmp, file).map_err(io("rename stat cache to", file))?;
        self.dirty = false;
        Ok(())
    }
}

/// The entries stored at `file`; `None` when it is missing, unreadable or damaged.
fn load(file: &Path) -> Option<Entries> {
    decode(std::fs::read(file).ok()?)
}

/// The records of a cache file, sorted by name; `None` when it is damaged.
fn decode(mut bytes: Vec<u8>) -> Option<Entries> {
    if !bytes.starts_with(MAGIC) {
        return None;
    }
    bytes.drain(..MAGIC.len());
    let mut loaded = Records {
        bytes,
        at: Vec::new(),
    };
    let mut at = 0usize;
    let mut sorted = true;
    while at < loaded.bytes.len() {
        let len = loaded.bytes.get(at..at + 4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let end = at.checked_add(4 + len + FIXED)?;
        if end > loaded.bytes.len() {
            return None;
        }
        let at32 = u32::try_from(at).ok()?;
        if let Some(&prev) = loaded.at.last() {
            sorted &= loaded.name(prev) < &loaded.bytes[at + 4..at + 4 + len];
        }
        loaded.at.push(at32);
        at = end;
    }
    if !sorted {
        // Stable: of equal names the later one is found, as when they were read into a map.
        let mut at = std::mem::take(&mut loaded.at);
        at.sort_by(|&a, &b| loaded.name(a).cmp(loaded.name(b)));
        loaded.at = at;
    }
    Some(Entries {
        loaded,
        ..Entries::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(size: u64) -> EntryStat {
        EntryStat {
            size,
            mtime: 1,
            ino: 2,
            dev: 3,
            rdev: 0,
            mode: libc::S_IFREG | 0o644,
            mtime_nsec: 4,
            uid: 0,
            gid: 0,
            nlink: 1,
        }
    }

    fn names_in(file: &Path) -> Vec<Vec<u8>> {
        let entries = load(file).unwrap();
        let names = entries.loaded.at.iter();
        names.map(|&at| entries.loaded.name(at).to_vec()).collect()
    }

    #[test]
    fn added_records_replace_loaded_ones_and_save_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache");
        let (a, b, c) = (Path::new("/x/a"), Path::new("/x/b"), Path::new("/x/a.txt"));
        let mut cache = StatCache::open(&file);
        cache.insert(b, &stat(1), [1; 32]);
        cache.insert(a, &stat(1), [2; 32]);
        assert_eq!(cache.lookup(a, &stat(1)), Some([2; 32]));
        assert_eq!(
            cache.lookup(a, &stat(9)),
            None,
            "another size is another file"
        );
        cache.save().unwrap();
        assert_eq!(names_in(&file), [b"/x/a".to_vec(), b"/x/b".to_vec()]);

        let mut cache = StatCache::open(&file);
        assert_eq!(cache.lookup(b, &stat(1)), Some([1; 32]));
        cache.insert(c, &stat(1), [3; 32]);
        cache.insert(a, &stat(5), [4; 32]);
        assert_eq!(cache.lookup(a, &stat(5)), Some([4; 32]));
        assert_eq!(cache.lookup(a, &stat(1)), None);
        cache.save().unwrap();
        let want: Vec<Vec<u8>> = vec![b"/x/a".to_vec(), b"/x/a.txt".to_vec(), b"/x/b".to_vec()];
        assert_eq!(names_in(&file), want);
        let mut cache = StatCache::open(&file);
        assert_eq!(cache.lookup(a, &stat(5)), Some([4; 32]));
        assert_eq!(cache.lookup(c, &stat(1)), Some([3; 32]));
    }

    #[test]
    fn an_unsorted_file_is_sorted_and_its_last_record_of_a_name_wins() {
        let mut records = Records::default();
        let stamp = Stamp::of(&stat(1));
        records.push(b"/b", stamp, &[1; 32]).unwrap();
        records.push(b"/a", stamp, &[2; 32]).unwrap();
        records.push(b"/a", stamp, &[3; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache");
        std::fs::write(&file, [MAGIC, &records.bytes].concat()).unwrap();
        let mut cache = StatCache::open(&file);
        assert_eq!(cache.lookup(Path::new("/a"), &stat(1)), Some([3; 32]));
        assert_eq!(cache.lookup(Path::new("/b"), &stat(1)), Some([1; 32]));
        assert_eq!(cache.lookup(Path::new("/c"), &stat(1)), None);
    }
}
