//! The registry client's error type.

use std::path::PathBuf;

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A manifest names a blob by something that is not a digest.
    #[error("{what}: manifest names an invalid digest {digest:?}")]
    InvalidDigest {
        /// Which manifest.
        what: String,
        /// The text in the digest's place.
        digest: String,
    },
    /// A layer that push meant to compress has no compressed form (a bug, reported rather
    /// than pushed wrong).
    #[error("{what}: layer {layer} was not compressed")]
    LayerNotCompressed {
        /// Which image.
        what: String,
        /// The layer's digest.
        layer: String,
    },
    /// A reference or platform that does not parse.
    #[error(transparent)]
    Parse(#[from] rbuild_store::ParseError),
    /// The connection to the registry failed (after retries).
    #[error("{method} {url} failed{}", timeout_hint(source))]
    Connection {
        /// HTTP method.
        method: String,
        /// The URL (never carries credentials).
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with a status we cannot go on from.
    #[error("{method} {url}: registry answered {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        /// HTTP method.
        method: String,
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error code and message, if it sent any.
        detail: Option<String>,
    },
    /// The registry refused our credentials (or we had none).
    #[error("{registry}: authentication required or refused for {scope}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// The access that was refused (`repository:x:pull`, or `registry`).
        scope: String,
    },
    /// The image or blob does not exist in the registry.
    #[error("{what} not found in the registry")]
    NotFound {
        /// The reference or digest.
        what: String,
    },
    /// The token endpoint answered something we cannot use.
    #[error("token endpoint {realm}: {reason}")]
    Token {
        /// The realm URL.
        realm: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `WWW-Authenticate` challenge we cannot parse.
    #[error("{registry}: unsupported authentication challenge {challenge:?}")]
    Challenge {
        /// Registry host.
        registry: String,
        /// The challenge header.
        challenge: String,
    },
    /// Reading credentials failed (config.json, auth.json or a credential helper).
    #[error("cannot read credentials for {registry}: {reason}")]
    Credentials {
        /// Registry host.
        registry: String,
        /// What failed (never includes secrets).
        reason: String,
    },
    /// A manifest, index or config larger than we accept.
    #[error("{what} is larger than {limit} bytes; refusing it")]
    TooLarge {
        /// Reference or digest.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A manifest or index that does not parse.
    #[error("invalid manifest {what}")]
    InvalidManifest {
        /// Reference or digest.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest media type we do not handle (e.g. schema 1).
    #[error("{what}: unsupported manifest media type {media_type:?}")]
    UnsupportedMediaType {
        /// Reference or digest.
        what: String,
        /// The media type.
        media_type: String,
    },
    /// No manifest of an index matches the wanted platform.
    #[error("{what}: no manifest for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        /// The reference.
        what: String,
        /// The wanted platform.
        platform: String,
        /// The platforms the index has.
        available: String,
    },
    /// Bytes from the registry whose digest is not the one asked for.
    #[error("{what}: content digest is {actual}, expected {expected}")]
    DigestMismatch {
        /// Reference or URL.
        what: String,
        /// The digest we asked for.
        expected: String,
        /// The digest of what we got.
        actual: String,
    },
    /// A transfer that ended before all bytes arrived.
    #[error("{what}: connection ended after {got} of {expected} bytes")]
    Truncated {
        /// The blob.
        what: String,
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// A store operation failed.
    #[error("store: {what}")]
    Store {
        /// What we were doing.
        what: String,
        /// The store's error.
        #[source]
        source: rbuild_store::Error,
    },
    /// No image of that name in the local store.
    #[error("no image {name:?} in the store")]
    ImageNotInStore {
        /// The name.
        name: String,
    },
    /// A file we read or write.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file of ours or docker's that does not parse.
    #[error("{}: invalid JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A CA certificate that does not load.
    #[error("{}: invalid CA certificate", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be configured.
    #[error("cannot set up the HTTP client for {registry}")]
    ClientSetup {
        /// Registry host.
        registry: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// A blocking task (store or credential I/O) panicked or was cancelled.
    #[error("background task failed")]
    Task(#[source] tokio::task::JoinError),
    /// A blob to upload is neither in the store nor in any registry repository the store
    /// knows to hold it.
    #[error("blob {digest} is not in the store and no known registry repository holds it")]
    BlobNotLocal {
        /// The blob.
        digest: String,
    },
    /// A manifest that is not the kind asked for (an index where an image manifest was
    /// expected, a config of another media type).
    #[error("{what}: {reason}")]
    UnexpectedManifest {
        /// The reference.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry refused a manifest in both OCI and Docker media types.
    #[error("{reference}: registry refused the manifest ({detail})")]
    ManifestRefused {
        /// The destination.
        reference: String,
        /// The registry's error.
        detail: String,
    },
}

impl Error {
    /// True when the registry said the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when the registry refused the credentials.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
    }

    /// True for failures worth trying again (connection errors, 5xx, 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connection { .. } | Error::Truncated { .. } => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(rbuild_store::Error) -> Error {
        let what = what.into();
        move |source| Error::Store { what, source }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// What to add to a connection error that was a timeout: which setting bounds it.
fn timeout_hint(source: &reqwest::Error) -> &'static str {
    if source.is_timeout() {
        ": the registry did not answer in time (raise --registry-timeout or RBUILD_REGISTRY_TIMEOUT)"
    } else {
        ""
    }
}
