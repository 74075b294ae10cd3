//! rbuild's build engine: the Dockerfile frontend, the build context, cache keys, and the
//! solver that runs each step against the store, the runner and registries.
#![deny(missing_docs)]

pub mod build;
pub mod context;
pub mod copy;
mod error;
pub mod events;
pub mod frontend;

pub use build::{build, BuildOptions, Built, ContextSource, NetworkMode, SecretSource};
pub use error::{Error, RunFailure};
