//! Snapshots: unpacked layers in overlay form under `snapshots/<chain id hex>/{fs,meta}`,
//! active (writable) snapshots, committing an upper dir by rename, and unpacking image
//! layers into a chain of snapshots.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::external_files::ExternalFiles;
use crate::fsutil::{remove_any, sync_dir, write_atomic};
use crate::layer_in::unpack_layer;
use crate::layer_out::{write_layer_tar_with, TarOptions};
use crate::model::oci::{layer_compression, Descriptor, MEDIA_TYPE_OCI_LAYER};
use crate::pipe::ThreadedWriter;
use crate::{ChainId, DiffId, Error, Result, Store};

/// A writable snapshot: an empty `upper` and a `work` dir for overlayfs, on the store's
/// filesystem. Consumed by [`Store::commit`] or [`Store::discard`]; dropping it removes it.
#[derive(Debug)]
pub struct ActiveSnapshot {
    /// The overlay upper dir.
    pub upper: PathBuf,
    /// The overlay work dir.
    pub work: PathBuf,
    dir: PathBuf,
}

impl Drop for ActiveSnapshot {
    fn drop(&mut self) {
        let _ = remove_any(&self.dir);
    }
}

/// A committed layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The diffID of its tar.
    pub diff_id: DiffId,
    /// The snapshot's chain ID.
    pub chain_id: ChainId,
    /// The uncompressed layer blob (`application/vnd.oci.image.layer.v1.tar`).
    pub descriptor: Descriptor,
    /// True when the upper dir was empty (the tar holds only the end-of-archive blocks).
    pub empty: bool,
}

/// `snapshots/<id>/meta`: what a snapshot is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Format version (1).
    pub version: u32,
    /// The snapshot's chain ID (its directory name).
    pub chain_id: ChainId,
    /// The diffID of its layer.
    pub diff_id: DiffId,
    /// The snapshot below it.
    pub parent: Option<ChainId>,
    /// Sum of its regular file sizes.
    pub size: u64,
}

const META_VERSION: u32 = 1;

impl Store {
    /// A fresh active snapshot (`upper` and `work` under this process's scratch dir).
    pub fn prepare(&self) -> Result<ActiveSnapshot> {
        let dir = self
            .scratch()
            .join(format!("active-{}", crate::fsutil::unique_suffix()));
        let upper = dir.join("fs");
        let work = dir.join("work");
        for d in [&dir, &upper, &work] {
            std::fs::create_dir(d).map_err(Error::io("create directory", d))?;
        }
        Ok(ActiveSnapshot { upper, work, dir })
    }

    /// Commits an active snapshot with mtimes clamped to `SOURCE_DATE_EPOCH` from the process
    /// environment (see [`Store::commit_with`]).
    pub fn commit(&self, active: ActiveSnapshot, parent: Option<&ChainId>) -> Result<Layer> {
        self.commit_with(active, parent, &TarOptions::from_env())
    }

    /// Turns an active snapshot into a committed layer: the deterministic tar of `upper` is
    /// written as an uncompressed layer blob (hashed in the same pass: diffID = blob digest),
    /// then `upper` is renamed to `snapshots/<chain id>/fs`. If that snapshot already exists
    /// (a concurrent or earlier commit of the same content), ours is discarded.
    pub fn commit_with(
        &self,
        active: ActiveSnapshot,
        parent: Option<&ChainId>,
        options: &TarOptions,
    ) -> Result<Layer> {
        self.commit_external(active, parent, options, &ExternalFiles::new())
    }

    /// [`Store::commit_with`] for a layer made of `upper` plus `external` files (see
    /// [`crate::write_layer_tar_with`]). With external files, `upper` is not the whole layer,
    /// so it is thrown away once the blob is written: only the blob is stored, and the
    /// snapshot is unpacked from it when a later step needs it as a lower
    /// ([`Store::snapshot_chain`]). A layer nobody stacks on is then written once, not twice.
    pub fn commit_external(
        &self,
        active: ActiveSnapshot,
        parent: Option<&ChainId>,
        options: &TarOptions,
        external: &ExternalFiles,
    ) -> Result<Layer> {
        // The tar is produced here while another thread hashes and writes the blob.
        let blobs = self.root().join("blobs");
        let mut threaded =
            ThreadedWriter::new(self.blobs().writer()?).map_err(Error::io("start", &blobs))?;
        let stats = write_layer_tar_with(&active.upper, external, &mut threaded, options)?;
        let writer = threaded
            .finish()
            .map_err(Error::io("write layer blob in", &blobs))?;
        let size = writer.written();
        let digest = writer.commit(None)?;
        let diff_id = DiffId::from(digest.clone());
        let chain_id = ChainId::child(parent, &diff_id);
        let layer = Layer {
            diff_id: diff_id.clone(),
            chain_id: chain_id.clone(),
            descriptor: Descriptor::new(MEDIA_TYPE_OCI_LAYER, digest, size),
            empty: stats.entries == 0,
        };
        if !external.is_empty() {
            self.discard(active)?;
            return Ok(layer);
        }
        let meta = SnapshotMeta {
            version: META_VERSION,
            chain_id,
            diff_id,
            parent: parent.cloned(),
            size: stats.content_bytes,
        };
        remove_any(&active.work)?;
        self.install_snapshot(&active.dir, &meta)?;
        Ok(layer)
    }

    /// Throws an active snapshot away.
    pub fn discard(&self, active: ActiveSnapshot) -> Result<()> {
        remove_any(&active.dir)
    }

    /// The `fs` dir of a committed snapshot.
    pub fn snapshot_path(&self, chain: &ChainId) -> Option<PathBuf> {
        let dir = self.snapshot_dir(chain);
        dir.join("meta").is_file().then(|| dir.join("fs"))
    }

    /// A committed snapshot's meta record.
    pub fn snapshot_meta(&self, chain: &ChainId) -> Result<Option<SnapshotMeta>> {
        let path = self.snapshot_dir(chain).join("meta");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                what: "snapshot meta",
                path,
                source,
            })
    }

    /// Makes sure every layer of an image is unpacked (`layers[i]` has diffID `diff_ids[i]`,
    /// checked while unpacking) and returns the snapshot `fs` dirs in overlay lowerdir order:
    /// top-most first. A snapshot holds one layer's diff in overlay form and needs nothing of
    /// its parent but its name, so the missing layers are unpacked in parallel, one per core,
    /// into scratch dirs; they are installed bottom first, so that a snapshot's parent is
    /// always there, even after a crash or a failed layer.
    pub fn snapshot_chain(
        &self,
        layers: &[Descriptor],
        diff_ids: &[DiffId],
    ) -> Result<Vec<PathBuf>> {
        if layers.len() != diff_ids.len() {
            return Err(Error::LayerCountMismatch {
                layers: layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut chains: Vec<ChainId> = Vec::with_capacity(layers.len());
        for diff_id in diff_ids {
            chains.push(ChainId::child(chains.last(), diff_id));
        }
        let missing: Vec<usize> = (0..layers.len())
            .filter(|&i| self.snapshot_path(&chains[i]).is_none())
            .collect();
        let unpack = |i: usize| {
            let parent = i.checked_sub(1).map(|p| &chains[p]);
            self.unpack_snapshot(&layers[i], &diff_ids[i], parent, &chains[i])
        };
        let unpacked = parallel_map(&missing, unpack);
        // In chain order: the first failure stops the installs; what was unpacked above it
        // is removed with its scratch dir.
        for result in unpacked {
            let (dir, meta) = result?;
            self.install_snapshot(dir.path(), &meta)?;
        }
        Ok(chains
            .iter()
            .rev()
            .map(|c| self.snapshot_dir(c).join("fs"))
            .collect())
    }

    /// Unpacks one layer into a scratch dir (removed when dropped) and returns it with the
    /// meta its snapshot will have.
    fn unpack_snapshot(
        &self,
        layer: &Descriptor,
        diff_id: &DiffId,
        parent: Option<&ChainId>,
        chain: &ChainId,
    ) -> Result<(RemoveOnDrop, SnapshotMeta)> {
        if layer_compression(&layer.media_type).is_err() {
            return Err(Error::UnsupportedMediaType(layer.media_type.clone()));
        }
        let dir = self
            .scratch()
            .join(format!("unpack-{}", crate::fsutil::unique_suffix()));
        let fs = dir.join("fs");
        std::fs::create_dir_all(&fs).map_err(Error::io("create directory", &fs))?;
        let guard = RemoveOnDrop(dir);
        let reader = self.blobs().open_verified(&layer.digest)?;
        let unpacked = unpack_layer(reader, &fs, Some(diff_id), &layer.digest.to_string())?;
        let meta = SnapshotMeta {
            version: META_VERSION,
            chain_id: chain.clone(),
            diff_id: diff_id.clone(),
            parent: parent.cloned(),
            size: unpacked.content_bytes,
        };
        Ok((guard, meta))
    }

    /// Writes `meta` into `dir` (which holds `fs`) and renames `dir` to
    /// `snapshots/<chain hex>`. First rename wins: if the snapshot exists, `dir` is removed.
    fn install_snapshot(&self, dir: &Path, meta: &SnapshotMeta) -> Result<()> {
        let meta_path = dir.join("meta");
        let bytes = serde_json::to_vec(meta).map_err(|source| Error::Json {
            what: "snapshot meta",
            path: meta_path.clone(),
            source,
        })?;
        write_atomic(self.scratch(), &meta_path, &bytes)?;
        let dest = self.snapshot_dir(&meta.chain_id);
        match std::fs::rename(dir, &dest) {
            Ok(()) => sync_dir(&self.root().join("snapshots")),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                remove_any(dir)
            }
            Err(e) => Err(Error::io("rename snapshot into place", dest)(e)),
        }
    }

    pub(crate) fn snapshot_dir(&self, chain: &ChainId) -> PathBuf {
        self.root().join("snapshots").join(chain.hex())
    }
}

struct RemoveOnDrop(PathBuf);

impl RemoveOnDrop {
    fn path(&self) -> &Path {
        &self.0
    }
}

/// `f` of every item, in order, computed on up to one thread per core. Once an item fails,
/// no thread starts another, and the items not computed are left out of the result (which
/// then ends with the first failure in item order, or an earlier one).
fn parallel_map<T: Send>(items: &[usize], f: impl Fn(usize) -> Result<T> + Sync) -> Vec<Result<T>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        let mut out = Vec::with_capacity(items.len());
        for &i in items {
            let r = f(i);
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        return out;
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut done: Vec<(usize, Result<T>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = items.get(k) else { break };
                        let r = f(i);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        mine.push((k, r));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_by_key(|(k, _)| *k);
    // Keep the unbroken run of positions from the start, up to and including a failure.
    let mut out = Vec::with_capacity(done.len());
    for (expected, (k, r)) in done.into_iter().enumerate() {
        if k != expected {
            break;
        }
        let failed = r.is_err();
        out.push(r);
        if failed {
            break;
        }
    }
    out
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = remove_any(&self.0);
    }
}
