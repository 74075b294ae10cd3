//! The builder's error type.

/// Everything that can go wrong in a build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Dockerfile that cannot be read.
    #[error("cannot read {path}")]
    ReadDockerfile {
        /// The Dockerfile's path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
