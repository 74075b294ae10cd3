//! The OCI/Docker JSON documents the store reads and writes: descriptors, manifests,
//! the layout's `index.json`, media types, and canonical (sorted-key) serialization.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Compression, Platform};
use crate::Digest;

/// OCI image manifest.
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// The annotation holding a tag in `index.json` (what `skopeo oci:<dir>:<name>` matches).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor. Serializes canonically (annotations are a `BTreeMap`; empty or
/// absent optional fields are omitted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Annotations (a tag lives in `org.opencontainers.image.ref.name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The platform, for entries of an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Alternate download locations (foreign layers); kept for round trips.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// A descriptor with no annotations, platform or urls.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
            urls: Vec::new(),
        }
    }
}

/// An image manifest (OCI or Docker schema2; both have this shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type (optional in OCI, present in Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// Manifest annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (the layout's `index.json`, or a multi-platform index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The entries.
    pub manifests: Vec<Descriptor>,
    /// Index annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Serializes `value` as compact JSON with every object's keys sorted (goes through
/// `serde_json::Value`, whose maps are ordered), so equal values give equal bytes.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    serde_json::to_vec(&v)
}

/// What a layer media type says about its compression: `Ok(None)` = uncompressed,
/// `Err(())` = not a layer type we know.
pub(crate) fn layer_compression(media_type: &str) -> Result<Option<Compression>, ()> {
    match media_type {
        MEDIA_TYPE_OCI_LAYER | MEDIA_TYPE_DOCKER_LAYER => Ok(None),
        MEDIA_TYPE_OCI_LAYER_GZIP | MEDIA_TYPE_DOCKER_LAYER_GZIP => Ok(Some(Compression::Gzip)),
        MEDIA_TYPE_OCI_LAYER_ZSTD => Ok(Some(Compression::Zstd)),
        "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(None),
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            Ok(Some(Compression::Gzip))
        }
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Ok(Some(Compression::Zstd))
        }
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_omits_empties() {
        let mut d = Descriptor::new(MEDIA_TYPE_OCI_LAYER, Digest::of(b"x"), 1);
        d.annotations.insert("z".into(), "1".into());
        d.annotations.insert("a".into(), "2".into());
        let text = String::from_utf8(canonical_json(&d).unwrap()).unwrap();
        assert!(
            text.starts_with("{\"annotations\":{\"a\":\"2\",\"z\":\"1\"},\"digest\""),
            "{text}"
        );
        assert!(!text.contains("platform"));
        assert!(!text.contains("urls"));
        let value: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[3]},"HEALTHCHECK":{"Test":["CMD"]}}"#)
                .unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&value).unwrap()).unwrap(),
            r#"{"HEALTHCHECK":{"Test":["CMD"]},"a":{"x":[3],"y":2},"b":1}"#
        );
    }
}
