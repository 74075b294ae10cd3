//! Content digests of COPY/ADD sources: what a cache key covers.
//!
//! For each selected source, every entry of its tree (the source itself, then what is
//! below it in walk order) is encoded as length-prefixed fields: the path relative to the
//! source, the kind, permission bits (`mode & 0o7777`), uid, gid (0 for a build context:
//! COPY does not keep the checkout's owners, and they differ between machines), then the
//! sha256 of the content for a file, the link target for a symlink, the device number for
//! a device.
//! Modification times are not covered (as in BuildKit). The overall digest covers every
//! source's name and digest in order; the per-source digests let the engine say which
//! source changed. File contents are hashed on scoped threads, through the stat cache.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use super::{
    ContextEntry, ContextError, ContextFiles, EntryKind, IgnoreRules, SelectedSource, StatCache,
};

/// The digest of one source argument's selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDigest {
    /// The matched path (relative to the context), e.g. `app.conf`.
    pub name: String,
    /// `sha256:<hex>` over its tree.
    pub digest: String,
}

/// The digest of all the sources of one COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDigest {
    /// `sha256:<hex>` over every source, in order.
    pub digest: String,
    /// One per selected source, in order.
    pub sources: Vec<SourceDigest>,
}

/// A sha256 encoder of length-prefixed fields.
struct Encoder(Sha256);

impl Encoder {
    fn new(tag: &str) -> Self {
        let mut e = Self(Sha256::new());
        e.bytes(tag.as_bytes());
        e
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
    fn u64(&mut self, v: u64) {
        self.0.update(v.to_be_bytes());
    }
    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

fn hex_digest(raw: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(raw))
}

/// The sha256 of one regular file's content, never following a symlink.
pub fn hash_file(path: &Path) -> Result<[u8; 32], ContextError> {
    let io = |op| {
        let path = path.to_path_buf();
        move |source| ContextError::Io { op, path, source }
    };
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io("open"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io("read"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// The entries one source covers: the resolved entry itself and, for a directory,
/// everything kept below it. The root (`.`) has no entry of its own. `exclude` (COPY
/// `--exclude`) is matched against paths relative to the source directory, or against
/// the source's own name for a file.
pub(crate) fn source_entries<'f: 's, 's>(
    files: &'f ContextFiles,
    source: &'s SelectedSource,
    exclude: &'s IgnoreRules,
) -> impl Iterator<Item = Result<ContextEntry<'f>, ContextError>> + 's {
    let (own, below) = if source.kind != EntryKind::Dir {
        let own = match exclude.is_excluded(&source.name) {
            Ok(true) => None,
            Ok(false) => files.get(&source.resolved).map(Ok),
            Err(e) => Some(Err(e)),
        };
        (own, None)
    } else {
        (
            files.get(&source.resolved).map(Ok),
            Some(files.below(&source.resolved)),
        )
    };
    let prefix = format!("{}/", source.resolved);
    let below = below.into_iter().flatten().filter_map(move |entry| {
        if exclude.is_empty() {
            return Some(Ok(entry));
        }
        let name = entry.name();
        let rel = match source.resolved.as_str() {
            "." => &name,
            _ => name.strip_prefix(&prefix).unwrap_or(&name),
        };
        match exclude.is_excluded(rel) {
            Ok(true) => None,
            Ok(false) => Some(Ok(entry)),
            Err(e) => Some(Err(e)),
        }
    });
    own.into_iter().chain(below)
}

/// Computes the content digest of `sources` (from [`super::select_sources`]) using and
/// updating `cache`. `exclude` holds COPY's `--exclude` patterns (empty rules for none).
///
/// One pass encodes the entries with the digests the cache holds; when it lacked some, those
/// files are hashed (in parallel), recorded, and a second pass encodes again. Nothing is
/// kept per entry but the files the cache lacked.
pub fn digest_sources(
    files: &ContextFiles,
    sources: &[SelectedSource],
    exclude: &IgnoreRules,
    cache: &mut StatCache,
) -> Result<ContentDigest, ContextError> {
    let mut missed: Vec<ContextEntry> = Vec::new();
    let first = encode_sources(files, sources, exclude, |entry| {
        Ok(cache
            .lookup(&entry.path(), &entry.stat())
            .unwrap_or_else(|| {
                missed.push(entry);
                [0; 32]
            }))
    })?;
    if missed.is_empty() {
        return Ok(first);
    }
    let digests = hash_parallel(&missed)?;
    for (entry, digest) in missed.iter().zip(&digests) {
        cache.insert(&entry.path(), &entry.stat(), *digest);
    }
    // The second pass meets the same regular files in the same order.
    let mut fresh = missed.iter().zip(digests).peekable();
    encode_sources(files, sources, exclude, |entry| {
        if let Some((_, digest)) = fresh.next_if(|(m, _)| m.same_as(&entry)) {
            return Ok(digest);
        }
        match cache.peek(&entry.path(), &entry.stat()) {
            Some(digest) => Ok(digest),
            None => hash_file(&entry.path()),
        }
    })
}

/// The digest of `sources`, each regular file's content digest given by `content`, called
/// once per regular file in encoding order.
fn encode_sources<'f>(
    files: &'f ContextFiles,
    sources: &[SelectedSource],
    exclude: &IgnoreRules,
    mut content: impl FnMut(ContextEntry<'f>) -> Result<[u8; 32], ContextError>,
) -> Result<ContentDigest, ContextError> {
    let mut all = Encoder::new("rbuild-copy-v1");
    all.u64(sources.len() as u64);
    let mut per_source = Vec::with_capacity(sources.len());
    for source in sources {
        let mut enc = Encoder::new("rbuild-copy-source-v1");
        let prefix = match source.resolved.as_str() {
            "." => String::new(),
            r => format!("{r}/"),
        };
        for entry in source_entries(files, source, exclude) {
            let entry = entry?;
            let name = entry.name();
            let rel = name.strip_prefix(&prefix).unwrap_or("");
            let meta = entry.stat();
            let kind = entry.kind();
            enc.bytes(rel.as_bytes());
            enc.bytes(&[kind.tag()]);
            enc.u64(u64::from(meta.mode & 0o7777));
            let (uid, gid) = if files.owners_matter() {
                (meta.uid, meta.gid)
            } else {
                (0, 0)
            };
            enc.u64(u64::from(uid));
            enc.u64(u64::from(gid));
            match kind {
                EntryKind::File => {
                    enc.u64(meta.size);
                    enc.bytes(&content(entry)?);
                }
                EntryKind::Symlink => {
                    let full = entry.path();
                    let target = std::fs::read_link(&full).map_err(|source| ContextError::Io {
                        op: "read link",
                        path: full,
                        source,
                    })?;
                    enc.bytes(target.as_os_str().as_encoded_bytes());
                }
                EntryKind::CharDevice | EntryKind::BlockDevice => enc.u64(meta.rdev),
                EntryKind::Dir | EntryKind::Fifo | EntryKind::Socket => {}
            }
        }
        let raw = enc.finish();
        all.bytes(source.name.as_bytes());
        all.bytes(&raw);
        per_source.push(SourceDigest {
            name: source.name.clone(),
            digest: hex_digest(&raw),
        });
    }
    Ok(ContentDigest {
        digest: hex_digest(&all.finish()),
        sources: per_source,
    })
}

/// Hashes `entries` on a few scoped threads; the digests come back in the same order.
fn hash_parallel(entries: &[ContextEntry]) -> Result<Vec<[u8; 32]>, ContextError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(entries.len().max(1));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(vec![[0u8; 32]; entries.len()]);
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(entry) = entries.get(i) else { break };
                match hash_file(&entry.path()) {
                    Ok(d) => results.lock().unwrap_or_else(|p| p.into_inner())[i] = d,
                    Err(e) => {
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        next.store(entries.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::context::{select_sources, IgnoreRules, StatCacheStats};

    fn build(root: &Path) {
        std::fs::create_dir_all(root.join("app/sub")).unwrap();
        std::fs::write(root.join("app/a.txt"), "alpha").unwrap();
        std::fs::write(root.join("app/sub/b.txt"), "beta").unwrap();
        std::fs::write(root.join("app.conf"), "conf").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("app/link")).unwrap();
    }

    fn digest(root: &Path, args: &[&str], cache: &mut StatCache) -> ContentDigest {
        let files = ContextFiles::walk(root, &IgnoreRules::default()).unwrap();
        let selected = select_sources(&files, args).unwrap();
        digest_sources(&files, &selected, &IgnoreRules::default(), cache).unwrap()
    }

    #[test]
    fn same_tree_same_digest() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        build(one.path());
        build(two.path());
        let a = digest(
            one.path(),
            &["app", "app.conf"],
            &mut StatCache::in_memory(),
        );
        let b = digest(
            two.path(),
            &["app", "app.conf"],
            &mut StatCache::in_memory(),
        );
        assert_eq!(a, b);
        assert_eq!(a.sources.len(), 2);
        assert_ne!(a.sources[0].digest, a.sources[1].digest);
    }

    #[test]
    fn mode_content_and_link_changes_show() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path());
        let base = digest(
            dir.path(),
            &["app", "app.conf"],
            &mut StatCache::in_memory(),
        );

        let file = dir.path().join("app/a.txt");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        let moded = digest(
            dir.path(),
            &["app", "app.conf"],
            &mut StatCache::in_memory(),
        );
        assert_ne!(base.digest, moded.digest);
        assert_ne!(base.sources[0], moded.sources[0]);
        // Only the source that changed has a new digest: the engine can name it.
        assert_eq!(base.sources[1], moded.sources[1]);

        let link = dir.path().join("app/link");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("sub/b.txt", &link).unwrap();
        let relinked = digest(
            dir.path(),
            &["app", "app.conf"],
            &mut StatCache::in_memory(),
        );
        assert_ne!(moded.sources[0], relinked.sources[0]);

        std::fs::write(dir.path().join("app.conf"), "CONF").unwrap();
        let edited = digest(
            dir.path(),
            &["app", "app.conf"],
            &mut StatCache::in_memory(),
        );
        assert_ne!(relinked.sources[1], edited.sources[1]);
        assert_eq!(relinked.sources[0], edited.sources[0]);
    }

    #[test]
    fn stat_cache_avoids_reading_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        build(dir.path());
        let cache_file = StatCache::path_for(store.path(), dir.path());

        let mut cold = StatCache::open(&cache_file);
        let first = digest(dir.path(), &["."], &mut cold);
        assert_eq!(cold.stats(), StatCacheStats { hits: 0, misses: 3 });
        cold.save().unwrap();

        let mut warm = StatCache::open(&cache_file);
        let second = digest(dir.path(), &["."], &mut warm);
        assert_eq!(warm.stats(), StatCacheStats { hits: 3, misses: 0 });
        assert_eq!(first, second);
        // Loaded on another thread: the same hits once the first lookup waits for it.
        let mut background = StatCache::open_in_background(&cache_file);
        assert_eq!(digest(dir.path(), &["."], &mut background), first);
        assert_eq!(background.stats(), StatCacheStats { hits: 3, misses: 0 });

        // Same size, mtime put back: not noticed. This is docker's trade-off as well.
        let conf = dir.path().join("app.conf");
        let mtime = filetime::FileTime::from_last_modification_time(&conf.metadata().unwrap());
        std::fs::write(&conf, "CONF").unwrap();
        filetime::set_file_mtime(&conf, mtime).unwrap();
        let mut warm = StatCache::open(&cache_file);
        let stale = digest(dir.path(), &["."], &mut warm);
        assert_eq!(stale, first);
        // Without the cache the change is seen.
        let fresh = digest(dir.path(), &["."], &mut StatCache::in_memory());
        assert_ne!(fresh, first);
    }

    #[test]
    fn damaged_cache_file_is_a_cold_cache() {
        let store = tempfile::tempdir().unwrap();
        let file = store.path().join("statcache-x");
        std::fs::write(&file, b"rbuild-statcache-v1\n\x05\x00").unwrap();
        let cache = StatCache::open(&file);
        assert_eq!(cache.stats(), StatCacheStats::default());
    }

    /// Cold vs warm stat cache on 20k small files. A measurement, not a check:
    /// `cargo test -p rbuild-builder --lib stat_cache_20k -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn stat_cache_20k_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        for d in 0..200 {
            let sub = dir.path().join(format!("d{d:03}"));
            std::fs::create_dir(&sub).unwrap();
            for f in 0..100 {
                let body = format!("{d}/{f}").repeat(100);
                std::fs::write(sub.join(format!("f{f:03}.txt")), body).unwrap();
            }
        }
        let cache_file = StatCache::path_for(store.path(), dir.path());
        let run = |label: &str| {
            let start = std::time::Instant::now();
            let mut cache = StatCache::open(&cache_file);
            let files = ContextFiles::walk(dir.path(), &IgnoreRules::default()).unwrap();
            let walked = start.elapsed();
            let selected = select_sources(&files, &["."]).unwrap();
            let d = digest_sources(&files, &selected, &IgnoreRules::default(), &mut cache).unwrap();
            cache.save().unwrap();
            eprintln!(
                "{label}: {:?} total ({:?} walk), {:?}, {}",
                start.elapsed(),
                walked,
                cache.stats(),
                d.digest
            );
            d
        };
        let cold = run("cold");
        let warm = run("warm");
        assert_eq!(cold, warm);
    }
}
