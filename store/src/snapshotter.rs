//! The snapshotter seam, after containerd's: how a step gets a writable filesystem over
//! committed layers and how its changes become a layer. [`Overlay`] (overlayfs upper and
//! lowers, committed by rename) is the default; [`crate::CopySnapshotter`] (the whole root
//! copied into the upper dir, committed by a diff) serves isolations that cannot mount
//! overlayfs. The solver and the runner never know which one they got: the runner
//! receives [`Mounts`], never a store.

use std::path::PathBuf;

use crate::external_files::ExternalFiles;
use crate::layer_out::TarOptions;
use crate::snapshot::{ActiveSnapshot, Layer};
use crate::{ChainId, Descriptor, DiffId, Result, Store};

/// What a step mounts: read-only lowers (top-most first) under a writable upper dir, with a
/// work dir on the upper's filesystem; or, from a copying snapshotter, one upper dir that
/// is the whole root (`copied_root`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mounts {
    /// Committed snapshot dirs, top-most first; empty for `FROM scratch`.
    pub lowers: Vec<PathBuf>,
    /// Where the step's changes land, in overlay form.
    pub upper: PathBuf,
    /// Scratch space on the upper's filesystem (overlayfs' workdir).
    pub work: PathBuf,
    /// `upper` holds the whole root, copied ([`crate::CopySnapshotter`]): there are no
    /// lowers and nothing to mount overlayfs with. Said here rather than guessed from
    /// empty `lowers`, which an overlay snapshot over `FROM scratch` has too.
    pub copied_root: bool,
}

impl Mounts {
    /// The overlay mounts of `active` over `lowers`.
    pub fn over(lowers: Vec<PathBuf>, active: &ActiveSnapshot) -> Mounts {
        Mounts {
            lowers,
            upper: active.upper.clone(),
            work: active.work.clone(),
            copied_root: false,
        }
    }

    /// The mounts of `active` whose upper dir holds the whole root, copied.
    pub fn copied(active: &ActiveSnapshot) -> Mounts {
        Mounts {
            lowers: Vec::new(),
            upper: active.upper.clone(),
            work: active.work.clone(),
            copied_root: true,
        }
    }
}

/// Makes writable snapshots over committed layers and commits them as layers.
pub trait Snapshotter: Send + Sync + std::fmt::Debug {
    /// The read-only dirs of an image's layers (bottom first in `layers`, with their
    /// diffIDs), made ready to be lowers, top-most first.
    fn view(&self, layers: &[Descriptor], diff_ids: &[DiffId]) -> Result<Vec<PathBuf>>;

    /// A fresh writable snapshot over `lowers` (from [`Snapshotter::view`]), and the mounts
    /// that show it.
    fn prepare(&self, lowers: Vec<PathBuf>) -> Result<(ActiveSnapshot, Mounts)>;

    /// Turns the active snapshot (plus `external` files read from where they are) into a
    /// layer above `parent`.
    fn commit(
        &self,
        active: ActiveSnapshot,
        parent: Option<&ChainId>,
        options: &TarOptions,
        external: &ExternalFiles,
    ) -> Result<Layer>;

    /// Throws an active snapshot away.
    fn remove(&self, active: ActiveSnapshot) -> Result<()>;
}

/// The overlayfs snapshotter: snapshots are `snapshots/<chain id>/fs` dirs in overlay form
/// (whiteouts as 0:0 char devices, opaque dirs by xattr), an upper dir is committed by
/// rename, and image layers are unpacked into snapshots when first viewed.
#[derive(Clone, Debug)]
pub struct Overlay {
    store: Store,
}

impl Overlay {
    /// The overlay snapshotter of `store`.
    pub fn new(store: Store) -> Overlay {
        Overlay { store }
    }
}

impl Snapshotter for Overlay {
    fn view(&self, layers: &[Descriptor], diff_ids: &[DiffId]) -> Result<Vec<PathBuf>> {
        self.store.snapshot_chain(layers, diff_ids)
    }

    fn prepare(&self, lowers: Vec<PathBuf>) -> Result<(ActiveSnapshot, Mounts)> {
        let active = self.store.prepare()?;
        let mounts = Mounts::over(lowers, &active);
        Ok((active, mounts))
    }

    fn commit(
        &self,
        active: ActiveSnapshot,
        parent: Option<&ChainId>,
        options: &TarOptions,
        external: &ExternalFiles,
    ) -> Result<Layer> {
        self.store
            .commit_external(active, parent, options, external)
    }

    fn remove(&self, active: ActiveSnapshot) -> Result<()> {
        self.store.discard(active)
    }
}
