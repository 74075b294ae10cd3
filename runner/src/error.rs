//! The runner's error type.

/// Everything that can go wrong while setting up or running a sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Starting the sandbox child failed.
    #[error("cannot start the sandbox")]
    Spawn(#[source] std::io::Error),
}
