//! The builder's error type.

use crate::context::ContextError;
use crate::copy::CopyError;
use crate::frontend::ParseError;

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
    /// A Dockerfile that does not parse or makes no sense.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The build context cannot be read.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The files of a COPY or ADD cannot be written.
    #[error(transparent)]
    Copy(#[from] CopyError),
}
