//! rbuild's registry client: image references, auth (anonymous, basic, bearer, docker
//! credentials), pull into the store's blobs and push from them.
#![deny(missing_docs)]

mod error;

pub use error::Error;
