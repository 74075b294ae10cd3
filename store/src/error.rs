//! The store's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation on a store path failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A string is not a valid `sha256:<64 hex>` digest.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest {
        /// The rejected text.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Content did not hash to the digest it was expected to have.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (a blob, a layer's diffID).
        what: String,
        /// The digest it should have had.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// A blob the operation needs is not in the store.
    #[error("blob {digest} is not in the store")]
    BlobNotFound {
        /// The missing blob.
        digest: String,
    },
    /// A JSON document the store reads is malformed.
    #[error("malformed {what} {}", path.display())]
    Json {
        /// What kind of document (index.json, manifest, config, snapshot meta, cache record).
        what: &'static str,
        /// Where it was read from (or the blob path).
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A multi-platform image without an image for the wanted platform.
    #[error("{} has no {} image; it has {}", .0.reference, .0.platform, .0.available)]
    NoPlatform(Box<MissingPlatform>),
    /// An index entry to write has no platform.
    #[error("index entry {manifest} has no platform")]
    IndexEntryWithoutPlatform {
        /// The entry's manifest digest.
        manifest: crate::Digest,
    },
    /// An index lists no image manifest.
    #[error("index {index} lists no image manifest")]
    EmptyIndex {
        /// The index's digest.
        index: crate::Digest,
    },
    /// An image config has no usable `rootfs.diff_ids`.
    #[error("image {manifest}: config has no rootfs.diff_ids list of digests")]
    NoDiffIds {
        /// The image's manifest digest.
        manifest: crate::Digest,
    },
    /// A layer tar member that would write outside the snapshot, or is otherwise unusable.
    #[error("layer {layer}: refusing member {member:?}: {reason}")]
    UnsafeMember {
        /// The layer (diffID or blob digest).
        layer: String,
        /// The member's path as written in the tar.
        member: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A layer tar could not be read or applied.
    #[error("layer {layer}: cannot apply member {member:?}")]
    LayerMember {
        /// The layer (diffID or blob digest).
        layer: String,
        /// The member's path.
        member: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A layer tar could not be read.
    #[error("layer {layer}: malformed tar stream")]
    LayerStream {
        /// The layer (diffID or blob digest).
        layer: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file in a directory being turned into a layer cannot be represented.
    #[error("cannot put {} into a layer: {reason}", path.display())]
    Unrepresentable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// `snapshot_chain` was given layers and diffIDs of different lengths.
    #[error("{layers} layers but {diff_ids} diffIDs")]
    LayerCountMismatch {
        /// Number of layer descriptors.
        layers: usize,
        /// Number of diffIDs.
        diff_ids: usize,
    },
    /// A user-given name, platform or format does not parse.
    #[error(transparent)]
    Parse(#[from] crate::ParseError),
    /// An image name or ID matched nothing.
    #[error("no such image: {0}")]
    NoSuchImage(String),
    /// An image ID prefix matched more than one image.
    #[error("image ID prefix {0} is ambiguous")]
    AmbiguousImage(String),
    /// Another rbuild process uses the store, so garbage collection would be unsafe.
    #[error("store {} is in use by another rbuild process; prune refuses to run", root.display())]
    StoreBusy {
        /// The store root.
        root: PathBuf,
    },
    /// An archive given to `load` is not a docker-archive or oci-archive rbuild can read.
    #[error("archive {}: {reason}", path.display())]
    BadArchive {
        /// The archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob's media type is not a layer type the store knows.
    #[error("unsupported layer media type {0}")]
    UnsupportedMediaType(String),
    /// A compression level outside what the format accepts.
    #[error("{format} compression level {level} is out of range (use {min} to {max})")]
    CompressionLevel {
        /// `gzip` or `zstd`.
        format: &'static str,
        /// The rejected level.
        level: i32,
        /// The lowest accepted level.
        min: i32,
        /// The highest accepted level.
        max: i32,
    },
    /// A compression format that layers cannot have (bzip2, xz).
    #[error("{format} is not a layer compression (use gzip or zstd)")]
    NotLayerCompression {
        /// The format's name.
        format: &'static str,
    },
    /// A media type has no equivalent in the image format being written (zstd layers in
    /// Docker schema2, an unknown layer type).
    #[error("media type {media_type} has no {format} equivalent")]
    NoEquivalentMediaType {
        /// The media type that cannot be converted.
        media_type: String,
        /// The format being written (`OCI` or `Docker schema2`).
        format: &'static str,
    },
}

impl Error {
    /// Builds an [`Error::Io`] from a closure-friendly triple.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// The message of an error and its sources on one line, joined by ": " (for warnings, retry
/// logs and fsck problems; the CLI prints errors it returns itself, with `{:#}`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What [`Error::NoPlatform`] says (boxed: the error stays small).
#[derive(Debug)]
pub struct MissingPlatform {
    /// The name it was asked by.
    pub reference: String,
    /// The wanted platform.
    pub platform: String,
    /// The platforms it has (`linux/amd64, linux/arm64`).
    pub available: String,
}
