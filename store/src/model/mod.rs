//! The image model every crate shares: platforms, image references, compression formats,
//! the image config ([`config`]), and (in [`oci`]) media types, descriptors, manifests,
//! indexes and canonical JSON.
//!
//! Each concept has exactly one type here; the builder, the registry client and the CLI
//! use these and define no second one.

mod compression;
pub mod config;
pub mod oci;
mod platform;
mod reference;

pub use compression::Compression;
pub use config::ImageConfig;
pub use platform::Platform;
pub use reference::{Reference, DOCKER_HUB};

/// A name, platform or format string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An image reference that is not a valid docker reference.
    #[error("invalid reference {reference:?}: {reason}")]
    Reference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A platform that is not `os/arch[/variant]`.
    #[error("invalid platform {platform:?}: expected os/arch[/variant]")]
    Platform {
        /// The platform as given.
        platform: String,
    },
    /// A compression name that is not one we know.
    #[error("unknown compression {name:?} (want gzip or zstd)")]
    Compression {
        /// The name as given.
        name: String,
    },
}
