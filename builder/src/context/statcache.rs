//! The stat cache: file content digests remembered by `(path, size, mtime ns, inode,
//! mode)`, so an unchanged context is not read again.
//!
//! The trade-off is docker's own: a file rewritten with the same size and its mtime put
//! back is not noticed (ctime is not part of the key, as in BuildKit's contenthash).
//! The cache lives in a file the caller names and is written atomically (a temporary
//! file in the same directory, fsync, rename). A missing or unreadable cache file is an
//! empty cache, never an error: it only costs a cold read.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{ContextError, EntryStat};

const MAGIC: &[u8] = b"rbuild-statcache-v1\n";

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

/// Hits and misses since the cache was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatCacheStats {
    /// Digests answered from the cache.
    pub hits: u64,
    /// Files that had to be read.
    pub misses: u64,
}

type Entries = HashMap<OsString, (Stamp, [u8; 32])>;

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
        let found = self.loaded().get(path.as_os_str()).copied();
        match found {
            Some((stamp, digest)) if stamp == Stamp::of(meta) => {
                self.stats.hits += 1;
                Some(digest)
            }
            _ => None,
        }
    }

    /// Records the digest of `path` as read with the stat fields `meta`.
    pub fn insert(&mut self, path: &Path, meta: &EntryStat, digest: [u8; 32]) {
        self.stats.misses += 1;
        self.loaded()
            .insert(path.as_os_str().to_os_string(), (Stamp::of(meta), digest));
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
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(&encode(&self.entries))?;
            f.sync_all()
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
    decode(&std::fs::read(file).ok()?)
}

fn encode(entries: &Entries) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + entries.len() * 96);
    out.extend_from_slice(MAGIC);
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (path, (stamp, digest)) in sorted {
        let name = path.as_encoded_bytes();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&stamp.size.to_le_bytes());
        out.extend_from_slice(&stamp.mtime_ns.to_le_bytes());
        out.extend_from_slice(&stamp.ino.to_le_bytes());
        out.extend_from_slice(&stamp.mode.to_le_bytes());
        out.extend_from_slice(digest);
    }
    out
}

fn decode(bytes: &[u8]) -> Option<Entries> {
    use std::os::unix::ffi::OsStrExt;
    let mut rest = bytes.strip_prefix(MAGIC)?;
    let mut entries = HashMap::new();
    fn take<'a>(n: usize, rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    fn array<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
        take(N, rest)?.try_into().ok()
    }
    while !rest.is_empty() {
        let len = u32::from_le_bytes(array(&mut rest)?) as usize;
        let name = take(len, &mut rest)?;
        let size = u64::from_le_bytes(array(&mut rest)?);
        let mtime_ns = i64::from_le_bytes(array(&mut rest)?);
        let ino = u64::from_le_bytes(array(&mut rest)?);
        let mode = u32::from_le_bytes(array(&mut rest)?);
        let digest: [u8; 32] = array(&mut rest)?;
        entries.insert(
            std::ffi::OsStr::from_bytes(name).to_os_string(),
            (
                Stamp {
                    size,
                    mtime_ns,
                    ino,
                    mode,
                },
                digest,
            ),
        );
    }
    Some(entries)
}
