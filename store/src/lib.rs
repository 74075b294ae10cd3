//! rbuild's layer store: content-addressed blobs in an OCI image layout, unpacked layer
//! snapshots usable as overlay lowers, deterministic layer tars, image configs and
//! manifests, tags, the build-cache index, gc and fsck.
//!
//! The store is blocking code and never mounts anything: it hands out paths.
#![deny(missing_docs)]

mod archive;
mod blob;
mod cache;
mod compress;
mod digest;
mod error;
mod fsutil;
mod gc;
mod image;
mod layer_in;
mod layer_out;
mod oci;
mod reference;
mod scratch;
mod snapshot;
mod store;

pub use blob::{BlobStore, BlobWriter, VerifiedReader};
pub use cache::CacheRecord;
pub use digest::{ChainId, DiffId, Digest};
pub use error::Error;
pub use gc::{FsckProblem, PruneReport};
pub use image::Image;
pub use layer_in::{detect_compression, unpack_layer, Unpacked};
pub use layer_out::{
    write_layer_tar, TarOptions, TarStats, OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX,
};
pub use oci::*;
pub use reference::normalize_reference;
pub use snapshot::{ActiveSnapshot, Layer, SnapshotMeta};
pub use store::{Store, TmpDir};

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
