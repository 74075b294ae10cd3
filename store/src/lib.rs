//! rbuild's layer store: content-addressed blobs in an OCI image layout, unpacked layer
//! snapshots usable as overlay lowers, deterministic layer tars, image configs and
//! manifests, tags, the build-cache index, gc and fsck.
//!
//! The store is blocking code and never mounts anything: it hands out paths.
#![deny(missing_docs)]

mod error;

pub use error::Error;

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
