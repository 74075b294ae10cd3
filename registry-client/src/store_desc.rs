//! Conversions between descriptors inside manifests ([`BlobRef`]) and the store's
//! `Descriptor` type, kept in one place so the store's type can change without touching
//! pull and push.

use std::str::FromStr;

use rbuild_store::{Descriptor, Digest};

use crate::manifest::BlobRef;
use crate::{Error, Result};

/// A store descriptor for a blob.
pub(crate) fn make(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor::new(media_type, digest, size)
}

/// The store descriptor for a manifest entry.
pub(crate) fn from_ref(what: &str, r: &BlobRef) -> Result<Descriptor> {
    let digest = Digest::from_str(&r.digest).map_err(|_| Error::InvalidDigest {
        what: what.to_string(),
        digest: r.digest.clone(),
    })?;
    let mut d = make(&r.media_type, digest, r.size);
    d.urls = r.urls.clone();
    Ok(d)
}

/// A store descriptor's media type.
pub(crate) fn media_type(d: &Descriptor) -> String {
    d.media_type.to_string()
}
