//! rbuild's build engine: the Dockerfile frontend, the build context, cache keys, and the
//! solver that runs each step against the store, the runner and registries.
#![deny(missing_docs)]

pub mod context;
pub mod copy;
mod error;
pub mod events;
pub mod frontend;
pub mod git;
pub mod solver;

pub use error::{Error, RunFailure};
pub use solver::{
    build, BuildOptions, Built, ContextSource, NetworkMode, SecretSource, SshError, SshSource,
};
