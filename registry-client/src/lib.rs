//! rbuild's registry client: auth (anonymous, basic, bearer; docker credentials), pull into
//! the store's blobs and push from them. References and platforms are the store's model.
//!
//! ```no_run
//! # async fn f(store: rbuild_store::Store) -> Result<(), rbuild_registry::Error> {
//! use std::sync::Arc;
//! use rbuild_registry::{Client, ClientOptions, NoProgress};
//! use rbuild_store::{LayerCompression, Reference};
//!
//! let client = Client::new(ClientOptions::default());
//! let base = Reference::parse("busybox")?; // docker.io/library/busybox:latest
//! let pulled = client.pull(&store, &base, None, Arc::new(NoProgress)).await?;
//! let dest = Reference::parse("registry.example.com/me/busybox:1")?;
//! let pushed = client
//!     .push(
//!         &store,
//!         &base.to_string(),
//!         &dest,
//!         LayerCompression::default(),
//!         rbuild_store::ImageFormat::Oci,
//!         Arc::new(NoProgress),
//!     )
//!     .await?;
//! println!("{}: digest: {} size: {}", pulled.reference, pushed.digest, pushed.size);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod auth;
mod body;
mod client;
mod compress_upload;
mod credentials;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod lazy;
mod local;
mod manifest;
mod progress;
mod pull;
mod push;
mod push_index;
mod reference;
mod secret;
mod transport;
mod upload;

pub use client::Client;
pub use credentials::{docker_config_path, lookup as lookup_credential, remove_login, store_login};
pub use error::Error;
pub use lazy::ImageHead;
pub use local::LocalStore;
pub use manifest::MAX_MANIFEST_SIZE;
pub use progress::{NoProgress, Outcome, Progress};
pub use pull::PulledImage;
pub use push::PushedImage;
pub use reference::normalize_registry;
pub use secret::{Credential, Secret};
pub use transport::{
    default_cert_dirs, is_loopback, ClientOptions, CredentialSource, Retry, RetryLog, UploadMode,
    DEFAULT_TIMEOUT,
};

/// The registry client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
