//! Garbage collection (`prune`) and consistency checking (`fsck`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::cache::CacheRecord;
use crate::fsutil::remove_any;
use crate::model::oci::{Index, Manifest};
use crate::snapshot::SnapshotMeta;
use crate::{error_chain, Area, ChainId, DiffId, Digest, Error, Result, Store};

/// What `prune` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs: Vec<Digest>,
    /// Snapshots deleted.
    pub snapshots: Vec<String>,
    /// Cache records deleted (file names under `cache/`).
    pub cache_records: Vec<String>,
    /// Bytes freed (blob sizes plus snapshot content sizes).
    pub bytes_freed: u64,
}

/// One thing `fsck` found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsckProblem {
    /// The object (a blob path, snapshot dir, cache record, tag).
    pub object: String,
    /// What is wrong with it.
    pub problem: String,
}

/// What `prune` may drop besides what nothing references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Drop every build-cache record.
    pub all: bool,
    /// Drop the build-cache records written longer ago than this (`--filter until=`).
    pub older_than: Option<std::time::Duration>,
    /// Drop build-cache records, oldest first, until blobs and snapshots take at most this
    /// many bytes (`--keep-storage`, `--max-used-space`); images are never dropped.
    pub max_used: Option<u64>,
}

/// Bytes and counts of one kind of object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageLine {
    /// How many there are.
    pub count: u64,
    /// Their bytes (blob sizes; snapshot content sizes).
    pub bytes: u64,
    /// How many `prune` would delete.
    pub reclaimable_count: u64,
    /// Their bytes.
    pub reclaimable_bytes: u64,
    /// How many `prune --all` would delete.
    pub reclaimable_all_count: u64,
    /// Their bytes.
    pub reclaimable_all_bytes: u64,
}

/// What the store holds (`rbuild du`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// `blobs/`.
    pub blobs: UsageLine,
    /// `snapshots/`.
    pub snapshots: UsageLine,
    /// Build-cache records (`cache/`, `cache/compressed/`); bytes are those of the blobs
    /// and snapshots only the cache keeps.
    pub cache_records: UsageLine,
}

/// What is kept: blobs and snapshots by name, and their bytes.
#[derive(Default, Clone)]
struct Live {
    blobs: BTreeSet<Digest>,
    snapshots: BTreeSet<String>,
    bytes: u64,
}

/// A build-cache record file.
struct RecordFile {
    name: String,
    path: PathBuf,
    record: Option<CacheRecord>,
    modified: std::time::SystemTime,
}

/// The sizes the marking needs, read once: blobs, snapshots, and which compressed copies
/// each layer has.
struct Sizes {
    blobs: std::collections::BTreeMap<Digest, u64>,
    snapshots: std::collections::BTreeMap<String, u64>,
    compressed: std::collections::BTreeMap<Digest, Vec<Digest>>,
}

impl Live {
    fn blob(&mut self, d: &Digest, sizes: &Sizes) {
        if self.blobs.insert(d.clone()) {
            self.bytes += sizes.blobs.get(d).copied().unwrap_or(0);
            // A layer's compressed copies stay while it does.
            for c in sizes.compressed.get(d).into_iter().flatten() {
                self.blob(c, sizes);
            }
        }
    }

    fn snapshot(&mut self, hex: &str, sizes: &Sizes) -> bool {
        let new = self.snapshots.insert(hex.to_owned());
        if new {
            self.bytes += sizes.snapshots.get(hex).copied().unwrap_or(0);
        }
        new
    }
}

impl Store {
    /// Deletes blobs, snapshots and cache records nothing references. Tagged images keep
    /// their manifests, configs, layers and snapshot chains; without `all`, build-cache
    /// records (and the layers and snapshots they name) are kept too; with `all` they are
    /// dropped, and so are the cache mounts and stat caches ([`Area`]). Compressed-layer
    /// records are kept while their uncompressed layer is.
    /// Refuses ([`Error::StoreBusy`]) while another rbuild process has the store open.
    pub fn prune(&self, all: bool) -> Result<PruneReport> {
        self.prune_with(&PrunePolicy {
            all,
            ..PrunePolicy::default()
        })
    }

    /// [`Store::prune`] with a policy for the build cache: all of it, the records older
    /// than a duration, or the oldest records until the store fits in a size.
    pub fn prune_with(&self, policy: &PrunePolicy) -> Result<PruneReport> {
        let _lock = self.lock()?;
        if !self.others_live()?.is_empty() {
            return Err(Error::StoreBusy {
                root: self.root().to_path_buf(),
            });
        }
        let sizes = self.sizes()?;
        let mut live = Live::default();
        self.mark_index(&self.read_index()?, &mut live, &sizes)?;
        let mut records = self.record_files()?;
        // Newest first: when a size is to be kept, the newest records are the ones kept.
        records.sort_by_key(|r| std::cmp::Reverse(r.modified));
        let now = std::time::SystemTime::now();
        let mut report = PruneReport::default();
        let mut full = false;
        for file in &records {
            let keep = match &file.record {
                Some(r) if !policy.all && !full => {
                    let age = now.duration_since(file.modified).unwrap_or_default();
                    if policy.older_than.is_some_and(|limit| age > limit) {
                        false
                    } else {
                        let mut with = live.clone();
                        self.mark_record(r, &mut with, &sizes);
                        if policy.max_used.is_some_and(|max| with.bytes > max) {
                            // This and every older record go.
                            full = true;
                            false
                        } else {
                            live = with;
                            true
                        }
                    }
                }
                _ => false,
            };
            if !keep {
                remove_any(&file.path)?;
                report.cache_records.push(file.name.clone());
            }
        }
        report.cache_records.sort();
        let compressed_dir = self.root().join("cache/compressed");
        for (name, path) in list_files(&compressed_dir)? {
            let source = name
                .split_once('-')
                .and_then(|(hex, _)| Digest::from_hex(hex).ok());
            if !source.is_some_and(|s| live.blobs.contains(&s)) {
                remove_any(&path)?;
                report.cache_records.push(format!("compressed/{name}"));
            }
        }
        if policy.all {
            for area in Area::ALL.into_iter().filter(|a| a.dropped_by_prune_all()) {
                let path = self.area_path(area);
                for (name, entry) in list_entries(&path)? {
                    // Move out first, so a half-deleted cache mount is never used.
                    let doomed = self.scratch().join(format!("gc-{}-{name}", area.name()));
                    std::fs::rename(&entry, &doomed)
                        .map_err(Error::io("move cache area entry out", &entry))?;
                    remove_any(&doomed)?;
                }
            }
        }
        let snapshots = self.root().join("snapshots");
        for (name, path) in list_entries(&snapshots)? {
            if live.snapshots.contains(&name) {
                continue;
            }
            let size = sizes.snapshots.get(&name).copied().unwrap_or(0);
            // Move out of `snapshots/` first so a name there is always complete.
            let doomed = self.scratch().join(format!("gc-{name}"));
            std::fs::rename(&path, &doomed).map_err(Error::io("move snapshot out", &path))?;
            remove_any(&doomed)?;
            report.bytes_freed += size;
            report.snapshots.push(name);
        }
        for d in self.blobs().list()? {
            if live.blobs.contains(&d) {
                continue;
            }
            report.bytes_freed += self.blobs().size(&d)?.unwrap_or(0);
            self.blobs().remove(&d)?;
            report.blobs.push(d);
        }
        Ok(report)
    }

    /// What the store holds and what `prune` and `prune --all` would free, without
    /// deleting anything.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let sizes = self.sizes()?;
        let mut images = Live::default();
        self.mark_index(&self.read_index()?, &mut images, &sizes)?;
        let mut with_cache = images.clone();
        let records = self.record_files()?;
        let mut cache = UsageLine::default();
        for file in &records {
            cache.count += 1;
            cache.reclaimable_all_count += 1;
            match &file.record {
                Some(r) => self.mark_record(r, &mut with_cache, &sizes),
                None => cache.reclaimable_count += 1,
            }
        }
        cache.bytes = with_cache.bytes - images.bytes;
        cache.reclaimable_all_bytes = cache.bytes;
        let line = |all: Vec<(&str, u64)>, keep: &dyn Fn(&str, &Live) -> bool| {
            let mut l = UsageLine::default();
            for (name, bytes) in all {
                l.count += 1;
                l.bytes += bytes;
                if !keep(name, &with_cache) {
                    l.reclaimable_count += 1;
                    l.reclaimable_bytes += bytes;
                }
                if !keep(name, &images) {
                    l.reclaimable_all_count += 1;
                    l.reclaimable_all_bytes += bytes;
                }
            }
            l
        };
        let blobs = line(
            sizes.blobs.iter().map(|(d, b)| (d.as_str(), *b)).collect(),
            &|name, live| {
                name.parse::<Digest>()
                    .is_ok_and(|d| live.blobs.contains(&d))
            },
        );
        let snapshots = line(
            sizes
                .snapshots
                .iter()
                .map(|(n, b)| (n.as_str(), *b))
                .collect(),
            &|name, live| live.snapshots.contains(name),
        );
        Ok(DiskUsage {
            blobs,
            snapshots,
            cache_records: cache,
        })
    }

    fn sizes(&self) -> Result<Sizes> {
        let mut blobs = std::collections::BTreeMap::new();
        for d in self.blobs().list()? {
            let size = self.blobs().size(&d)?.unwrap_or(0);
            blobs.insert(d, size);
        }
        let mut snapshots = std::collections::BTreeMap::new();
        for (name, _) in list_entries(&self.root().join("snapshots"))? {
            let size = ChainId::from_str_hex(&name)
                .and_then(|c| self.snapshot_meta(&c).ok().flatten())
                .map_or(0, |m| m.size);
            snapshots.insert(name, size);
        }
        let mut compressed = std::collections::BTreeMap::<Digest, Vec<Digest>>::new();
        for (name, path) in list_files(&self.root().join("cache/compressed"))? {
            let source = name
                .split_once('-')
                .and_then(|(hex, _)| Digest::from_hex(hex).ok());
            let target = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::Descriptor>(&b).ok());
            if let (Some(s), Some(t)) = (source, target) {
                compressed.entry(s).or_default().push(t.digest);
            }
        }
        Ok(Sizes {
            blobs,
            snapshots,
            compressed,
        })
    }

    fn record_files(&self) -> Result<Vec<RecordFile>> {
        let mut out = Vec::new();
        for (name, path) in list_files(&self.root().join("cache"))? {
            let record = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<CacheRecord>(&b).ok());
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            out.push(RecordFile {
                name,
                path,
                record,
                modified,
            });
        }
        Ok(out)
    }

    fn mark_record(&self, record: &CacheRecord, live: &mut Live, sizes: &Sizes) {
        if let Some(l) = &record.layer {
            live.blob(&l.digest, sizes);
        }
        if let Some(c) = &record.chain_id {
            self.mark_snapshot(c, live, sizes);
        }
    }

    fn mark_index(&self, index: &Index, live: &mut Live, sizes: &Sizes) -> Result<()> {
        for d in &index.manifests {
            self.mark_manifest(&d.digest, live, sizes)?;
        }
        Ok(())
    }

    fn mark_manifest(&self, digest: &Digest, live: &mut Live, sizes: &Sizes) -> Result<()> {
        if live.blobs.contains(digest) {
            return Ok(());
        }
        live.blob(digest, sizes);
        let bytes = self.blobs().read(digest)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                what: "manifest",
                path: self.blobs().path(digest),
                source,
            })?;
        if value.get("manifests").is_some() {
            let child: Index = serde_json::from_value(value).map_err(|source| Error::Json {
                what: "image index",
                path: self.blobs().path(digest),
                source,
            })?;
            for d in &child.manifests {
                if self.blobs().contains(&d.digest) {
                    self.mark_manifest(&d.digest, live, sizes)?;
                }
            }
            return Ok(());
        }
        let m: Manifest = serde_json::from_value(value).map_err(|source| Error::Json {
            what: "manifest",
            path: self.blobs().path(digest),
            source,
        })?;
        live.blob(&m.config.digest, sizes);
        for l in &m.layers {
            live.blob(&l.digest, sizes);
        }
        // The image's snapshot chain.
        if let Ok(config) = self.blobs().read(&m.config.digest) {
            let ids = serde_json::from_slice::<serde_json::Value>(&config)
                .ok()
                .and_then(|c| c.pointer("/rootfs/diff_ids").cloned())
                .and_then(|v| serde_json::from_value::<Vec<DiffId>>(v).ok())
                .unwrap_or_default();
            let mut parent: Option<ChainId> = None;
            for id in &ids {
                let c = ChainId::child(parent.as_ref(), id);
                live.snapshot(c.hex(), sizes);
                // Our own layers: the uncompressed blob is the diffID; keep it for re-push.
                live.blob(id.digest(), sizes);
                parent = Some(c);
            }
        }
        Ok(())
    }

    fn mark_snapshot(&self, chain: &ChainId, live: &mut Live, sizes: &Sizes) {
        let mut next = Some(chain.clone());
        while let Some(c) = next {
            if !live.snapshot(c.hex(), sizes) {
                return;
            }
            next = self.snapshot_meta(&c).ok().flatten().and_then(|m| m.parent);
        }
    }

    /// Re-hashes every blob and checks `index.json`, every snapshot's meta and every cache
    /// record. A tagged image's layer blob may be absent when the mount sources name a
    /// registry repository that holds it (an image resolved lazily). Returns the problems
    /// found (empty = healthy).
    pub fn fsck(&self) -> Result<Vec<FsckProblem>> {
        let mut problems = Vec::new();
        let mut problem =
            |object: String, problem: String| problems.push(FsckProblem { object, problem });
        let blob_dir = self.blobs().dir().to_path_buf();
        for (name, path) in list_entries(&blob_dir)? {
            match Digest::from_hex(&name) {
                Err(_) => problem(
                    path.display().to_string(),
                    "file name is not a sha256 digest".into(),
                ),
                Ok(d) => match self.blobs().verify(&d) {
                    Ok(None) => {}
                    Ok(Some(actual)) => problem(
                        path.display().to_string(),
                        format!("content hashes to {actual}"),
                    ),
                    Err(e) => problem(path.display().to_string(), error_chain(&e)),
                },
            }
        }
        match self.read_index() {
            Err(e) => problem(
                self.root().join("index.json").display().to_string(),
                error_chain(&e),
            ),
            Ok(index) => {
                for d in &index.manifests {
                    let name = d
                        .annotations
                        .get(crate::ANNOTATION_REF_NAME)
                        .cloned()
                        .unwrap_or_else(|| d.digest.to_string());
                    match self.load_image(None, d) {
                        Err(e) => problem(format!("image {name}"), error_chain(&e)),
                        Ok(img) => match img.parsed_manifest() {
                            Err(e) => problem(format!("image {name}"), error_chain(&e)),
                            Ok(m) => {
                                // A layer a registry holds may be absent: images resolved
                                // lazily (a build with a remote cache) fetch it when needed.
                                let sources = self.mount_sources()?;
                                for l in &m.layers {
                                    let remote =
                                        sources.holders(l.digest.as_str()).next().is_some();
                                    if !self.blobs().contains(&l.digest) && !remote {
                                        problem(
                                            format!("image {name}"),
                                            format!("layer blob {} is missing", l.digest),
                                        );
                                    }
                                }
                            }
                        },
                    }
                }
            }
        }
        let snapshots = self.root().join("snapshots");
        for (name, path) in list_entries(&snapshots)? {
            let object = path.display().to_string();
            let Some(chain) = ChainId::from_str_hex(&name) else {
                problem(object, "directory name is not a chain ID".into());
                continue;
            };
            let meta: SnapshotMeta = match self.snapshot_meta(&chain) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    problem(object, "meta is missing".into());
                    continue;
                }
                Err(e) => {
                    problem(object, error_chain(&e));
                    continue;
                }
            };
            if meta.chain_id != chain {
                problem(
                    object.clone(),
                    format!("meta names chain {}", meta.chain_id),
                );
            }
            if ChainId::child(meta.parent.as_ref(), &meta.diff_id) != chain {
                problem(
                    object.clone(),
                    "chain ID does not match parent + diffID".into(),
                );
            }
            if let Some(p) = &meta.parent {
                if self.snapshot_path(p).is_none() {
                    problem(object.clone(), format!("parent snapshot {p} is missing"));
                }
            }
            if !path.join("fs").is_dir() {
                problem(object, "fs directory is missing".into());
            }
        }
        let cache_dir = self.root().join("cache");
        for (_, path) in list_files(&cache_dir)? {
            let ok = std::fs::read(&path)
                .ok()
                .is_some_and(|b| serde_json::from_slice::<CacheRecord>(&b).is_ok());
            if !ok {
                problem(
                    path.display().to_string(),
                    "not a readable cache record".into(),
                );
            }
        }
        for (_, path) in list_files(&cache_dir.join("compressed"))? {
            let ok = std::fs::read(&path)
                .ok()
                .is_some_and(|b| serde_json::from_slice::<crate::Descriptor>(&b).is_ok());
            if !ok {
                problem(
                    path.display().to_string(),
                    "not a readable compressed-layer record".into(),
                );
            }
        }
        Ok(problems)
    }
}

impl ChainId {
    fn from_str_hex(hex: &str) -> Option<ChainId> {
        Digest::from_hex(hex).ok().map(ChainId::from)
    }
}

/// (name, path) of every entry of `dir`, sorted; nothing when `dir` does not exist.
fn list_entries(dir: &std::path::Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("read directory", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("read directory", dir))?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(out)
}

/// The record files of a directory of records (`cache/`, `cache/compressed/`): its
/// sub-directories (`compressed/` and the [`Area`]s `mounts/` and `stat/`) are not records.
fn list_files(dir: &std::path::Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = list_entries(dir)?;
    out.retain(|(_, path)| !path.is_dir());
    Ok(out)
}
