//! Entry points for the `fuzz/` crate: the manifest and index decoder over untrusted bytes.

use rbuild_store::Platform;

use crate::manifest::{parse, select, Parsed};

/// Parses `bytes` as a registry's manifest response would be (with `content_type` as its
/// `Content-Type`) and, for an index, picks `platform`'s entry, as a pull does. Returns
/// whether the document was accepted.
pub fn decode_manifest(bytes: &[u8], content_type: Option<&str>, platform: &Platform) -> bool {
    match parse("fuzz", bytes, content_type) {
        Ok((_, Parsed::Index(entries))) => select("fuzz", &entries, platform).is_ok(),
        Ok((_, Parsed::Image { .. })) => true,
        Err(_) => false,
    }
}
