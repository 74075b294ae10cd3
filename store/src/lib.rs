//! rbuild's layer store: content-addressed blobs in an OCI image layout, unpacked layer
//! snapshots usable as overlay lowers, deterministic layer tars, image configs and
//! manifests, tags, the build-cache index, gc and fsck.
//!
//! The store is blocking code and never mounts anything: it hands out paths.
//!
//! On disk (`<root>/`):
//! - `oci-layout`, `index.json`, `blobs/sha256/<hex>`: an OCI image layout. Tags are
//!   `index.json` entries whose `org.opencontainers.image.ref.name` is the full normalized
//!   name (`docker.io/library/busybox:latest`, `127.0.0.1:5000/a/b:v1`); skopeo and umoci
//!   split `oci:<root>:<name>` at the first `:`, so `skopeo inspect oci:<root>:<full name>`
//!   and `umoci unpack --image <root>:<full name>` work as long as `<root>` has no `:`.
//! - `snapshots/<chain id hex>/fs` (overlay form: whiteout = char 0:0, opaque dir =
//!   `trusted.overlay.opaque=y` and/or `user.overlay.opaque=y`) and `snapshots/<chain id hex>/meta` ([`SnapshotMeta`] JSON).
//! - `cache/<key hex>` ([`CacheRecord`] JSON) and
//!   `cache/compressed/<diffid hex>-<gzip|zstd>-<level>`
//!   (the [`Descriptor`] of a layer's compressed blob).
//! - `tmp/<p…>/` + `tmp/<p…>.lock`: one scratch dir per open [`Store`] handle, flocked for its
//!   lifetime; [`Store::open`] removes the ones whose lock is free (dead processes).
//! - `lock`: flock taken exclusively for `index.json` updates and gc, shared by `open`.
//!
//! Everything is written under `tmp/` first, verified, fsync'd and renamed into place, so a
//! name in `blobs/` or `snapshots/` is always complete.
#![deny(missing_docs)]

mod archive;
mod archive_in;
mod area;
mod blob;
mod cache;
mod compress;
mod copy_snapshotter;
mod digest;
mod error;
mod external_files;
mod fsutil;
mod gc;
mod gzip_member;
mod image;
mod image_index;
mod layer_in;
mod layer_out;
pub mod model;
mod pipe;
mod rootfs;
mod scratch;
mod snapshot;
mod snapshotter;
mod sources;
mod store;
mod whiteout;

pub use area::{Area, AreaDir};
pub use blob::{BlobStore, BlobWriter, VerifiedReader};
pub use cache::{CacheRecord, CACHE_RECORD_VERSION};
pub use compress::{gzip_parallel, zstd_compress, LayerCompression, GZIP_LEVEL, ZSTD_LEVEL};
pub use copy_snapshotter::CopySnapshotter;
pub use digest::{ChainId, DiffId, Digest};
pub use error::{error_chain, Error, MissingPlatform};
pub use external_files::{lower_bound_in_walk_order, walk_order, ExternalFile, ExternalFiles};
pub use gc::{DiskUsage, FsckProblem, PrunePolicy, PruneReport, UsageLine};
pub use image::Image;
pub use image_index::{is_index_media_type, platform_list};
pub use layer_in::{unpack_layer, Unpacked};
pub use layer_out::{
    is_opaque_dir, write_layer_tar, write_layer_tar_with, TarOptions, TarStats, OPAQUE_MARKER,
    OPAQUE_XATTR, WHITEOUT_PREFIX,
};
pub use model::oci::*;
pub use model::{Compression, ImageConfig, ParseError, Platform, Reference, DOCKER_HUB};
pub use snapshot::{ActiveSnapshot, Layer, SnapshotMeta};
pub use snapshotter::{Mounts, Overlay, Snapshotter};
pub use sources::MountSources;
pub use store::{Store, TmpDir};
pub use whiteout::is_whiteout;

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
