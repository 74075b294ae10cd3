//! rbuild's sandbox: runs one process in fresh namespaces over an overlayfs root,
//! with limits, and reports its exit status. Knows nothing about images.
#![deny(missing_docs)]

mod error;

pub use error::Error;

/// The hidden first argument that makes the `rbuild` binary act as the sandbox child.
pub const INIT_ARG: &str = "sandbox-init";

/// Entry point of the re-executed sandbox child; returns the process exit code.
pub fn sandbox_init_main() -> u8 {
    eprintln!("rbuild: the sandbox is not implemented yet");
    125
}
