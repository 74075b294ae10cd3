//! Fuzzes the manifest and index decoders: the registry client's wire parsing and
//! platform selection, and the store's `Manifest`/`Index` with the OCI <-> Docker
//! conversion; none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_store::{canonical_json, ImageConfig, ImageFormat, Index, Manifest, Platform};

fuzz_target!(|data: &[u8]| {
    let platform: Platform = "linux/arm64/v8".parse().expect("a valid platform");
    for content_type in [
        None,
        Some("application/vnd.oci.image.index.v1+json; charset=x"),
    ] {
        let _ = rbuild_registry::fuzzing::decode_manifest(data, content_type, &platform);
    }
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let _ = canonical_json(&m);
        for format in [ImageFormat::Oci, ImageFormat::Docker] {
            let _ = format.convert(&m);
        }
    }
    if let Ok(i) = serde_json::from_slice::<Index>(data) {
        let _ = canonical_json(&i);
        for entry in &i.manifests {
            if let Some(p) = &entry.platform {
                let _ = platform.matches(p);
                let _ = p.to_string().parse::<Platform>();
            }
        }
    }
    if let Ok(c) = ImageConfig::parse(data) {
        let _ = c.to_json();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<Platform>();
    }
});
