//! The OCI/Docker JSON documents the store reads and writes: descriptors, manifests,
//! the layout's `index.json`, media types, and canonical (sorted-key) serialization.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Compression, Platform};
use crate::{Digest, Error};

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
/// OCI non-distributable uncompressed layer.
pub const MEDIA_TYPE_OCI_LAYER_NONDIST: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable gzip layer.
pub const MEDIA_TYPE_OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable zstd layer.
pub const MEDIA_TYPE_OCI_LAYER_NONDIST_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// Docker foreign (non-distributable) gzip layer.
pub const MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker foreign (non-distributable) uncompressed layer.
pub const MEDIA_TYPE_DOCKER_LAYER_FOREIGN: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar";
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
    LayerType::parse(media_type)
        .map(|t| t.compression)
        .ok_or(())
}

// ---- Image formats: media types of OCI and Docker schema2 and the conversion between them.
// Self-contained on purpose: everything that maps one format's media types to the other's is
// here, so it can move with the image model.

/// A layer media type, read: its compression and whether it may be pushed (docker's
/// "foreign" and OCI's "non-distributable" layers are fetched from their `urls` and never
/// pushed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerType {
    /// `None`: a plain tar.
    pub compression: Option<Compression>,
    /// False for foreign / non-distributable layers.
    pub distributable: bool,
}

impl LayerType {
    /// The layer type of `media_type` (OCI or Docker, any compression, distributable or
    /// not); `None` when it is not a layer media type we know.
    pub fn parse(media_type: &str) -> Option<LayerType> {
        let (compression, distributable) = match media_type {
            MEDIA_TYPE_OCI_LAYER | MEDIA_TYPE_DOCKER_LAYER => (None, true),
            MEDIA_TYPE_OCI_LAYER_GZIP | MEDIA_TYPE_DOCKER_LAYER_GZIP => {
                (Some(Compression::Gzip), true)
            }
            MEDIA_TYPE_OCI_LAYER_ZSTD => (Some(Compression::Zstd), true),
            MEDIA_TYPE_OCI_LAYER_NONDIST | MEDIA_TYPE_DOCKER_LAYER_FOREIGN => (None, false),
            MEDIA_TYPE_OCI_LAYER_NONDIST_GZIP | MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP => {
                (Some(Compression::Gzip), false)
            }
            MEDIA_TYPE_OCI_LAYER_NONDIST_ZSTD => (Some(Compression::Zstd), false),
            _ => return None,
        };
        Some(LayerType {
            compression,
            distributable,
        })
    }

    /// This layer type's media type in `format`; `None` when the format has none (zstd in
    /// Docker schema2).
    pub fn media_type(self, format: ImageFormat) -> Option<&'static str> {
        Some(match (format, self.distributable, self.compression) {
            (ImageFormat::Oci, true, None) => MEDIA_TYPE_OCI_LAYER,
            (ImageFormat::Oci, true, Some(Compression::Gzip)) => MEDIA_TYPE_OCI_LAYER_GZIP,
            (ImageFormat::Oci, true, Some(Compression::Zstd)) => MEDIA_TYPE_OCI_LAYER_ZSTD,
            (ImageFormat::Oci, false, None) => MEDIA_TYPE_OCI_LAYER_NONDIST,
            (ImageFormat::Oci, false, Some(Compression::Gzip)) => MEDIA_TYPE_OCI_LAYER_NONDIST_GZIP,
            (ImageFormat::Oci, false, Some(Compression::Zstd)) => MEDIA_TYPE_OCI_LAYER_NONDIST_ZSTD,
            (ImageFormat::Docker, true, None) => MEDIA_TYPE_DOCKER_LAYER,
            (ImageFormat::Docker, true, Some(Compression::Gzip)) => MEDIA_TYPE_DOCKER_LAYER_GZIP,
            (ImageFormat::Docker, false, None) => MEDIA_TYPE_DOCKER_LAYER_FOREIGN,
            (ImageFormat::Docker, false, Some(Compression::Gzip)) => {
                MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP
            }
            (ImageFormat::Docker, _, Some(Compression::Zstd)) => return None,
            // Not layer compressions: `parse` never gives them.
            (_, _, Some(Compression::Bzip2 | Compression::Xz)) => return None,
        })
    }
}

/// Whether `media_type` names a layer that must never be pushed (docker's foreign layers,
/// OCI's non-distributable ones).
pub fn is_nondistributable(media_type: &str) -> bool {
    LayerType::parse(media_type).is_some_and(|t| !t.distributable)
}

/// The manifest format of an image rbuild writes: OCI (the default) or Docker schema2
/// (what old Harbor and Quay versions need). Both describe the same blobs: converting
/// changes media types only, never a digest of a layer or config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// OCI image manifest, config and layer media types.
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2 media types.
    Docker,
}

impl ImageFormat {
    /// How messages name the format (`OCI`, `Docker schema2`).
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Oci => "OCI",
            ImageFormat::Docker => "Docker schema2",
        }
    }

    /// The image manifest media type.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => MEDIA_TYPE_OCI_MANIFEST,
            ImageFormat::Docker => MEDIA_TYPE_DOCKER_MANIFEST,
        }
    }

    /// The image config media type.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => MEDIA_TYPE_OCI_CONFIG,
            ImageFormat::Docker => MEDIA_TYPE_DOCKER_CONFIG,
        }
    }

    /// The multi-platform index media type.
    pub fn index_media_type(self) -> &'static str {
        match self {
            ImageFormat::Oci => MEDIA_TYPE_OCI_INDEX,
            ImageFormat::Docker => MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        }
    }

    /// The format an image manifest media type belongs to; `None` for anything else.
    pub fn of_manifest(media_type: &str) -> Option<ImageFormat> {
        match media_type {
            MEDIA_TYPE_OCI_MANIFEST => Some(ImageFormat::Oci),
            MEDIA_TYPE_DOCKER_MANIFEST => Some(ImageFormat::Docker),
            _ => None,
        }
    }

    /// `media_type` (a layer's, OCI or Docker) in this format: the same kind of layer
    /// (compression, distributable or not).
    pub fn layer_media_type(self, media_type: &str) -> Result<&'static str, Error> {
        LayerType::parse(media_type)
            .and_then(|t| t.media_type(self))
            .ok_or_else(|| Error::NoEquivalentMediaType {
                media_type: media_type.to_owned(),
                format: self.name(),
            })
    }

    /// `media_type` (a config's) in this format. Docker's and OCI's configs are the same
    /// JSON (docker's fields the OCI spec lacks, `Healthcheck`, `Shell`, `OnBuild`, are kept
    /// as they are): only the descriptor's media type changes.
    pub fn config_media_type_of(self, media_type: &str) -> Result<&'static str, Error> {
        match media_type {
            MEDIA_TYPE_OCI_CONFIG | MEDIA_TYPE_DOCKER_CONFIG => Ok(self.config_media_type()),
            other => Err(Error::NoEquivalentMediaType {
                media_type: other.to_owned(),
                format: self.name(),
            }),
        }
    }

    /// `manifest` in this format: manifest, config and layer media types rewritten; digests,
    /// sizes, `urls` and annotations kept. `None` when it already is in this format (its
    /// bytes, and so its digest, can be kept).
    pub fn convert(self, manifest: &Manifest) -> Result<Option<Manifest>, Error> {
        let mut out = manifest.clone();
        out.media_type = Some(self.manifest_media_type().to_owned());
        out.config.media_type = self
            .config_media_type_of(&manifest.config.media_type)?
            .to_owned();
        for layer in &mut out.layers {
            layer.media_type = self.layer_media_type(&layer.media_type)?.to_owned();
        }
        if self == ImageFormat::Docker {
            // Docker schema2 has no manifest annotations.
            out.annotations.clear();
        }
        Ok((out != *manifest).then_some(out))
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

#[cfg(test)]
mod format_tests {
    use super::*;

    fn manifest(media_type: Option<&str>, config: &str, layers: &[&str]) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: media_type.map(String::from),
            config: Descriptor::new(config, Digest::of(b"config"), 6),
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, t)| Descriptor::new(*t, Digest::of(&[i as u8]), i as u64 + 1))
                .collect(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn docker_layers_become_oci_with_the_same_digests() {
        let mut m = manifest(
            Some(MEDIA_TYPE_DOCKER_MANIFEST),
            MEDIA_TYPE_DOCKER_CONFIG,
            &[
                MEDIA_TYPE_DOCKER_LAYER_GZIP,
                MEDIA_TYPE_DOCKER_LAYER,
                MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP,
            ],
        );
        m.layers[2].urls = vec!["https://example.invalid/layer".into()];
        let oci = ImageFormat::Oci.convert(&m).unwrap().expect("changed");
        assert_eq!(oci.media_type.as_deref(), Some(MEDIA_TYPE_OCI_MANIFEST));
        assert_eq!(oci.config.media_type, MEDIA_TYPE_OCI_CONFIG);
        let types: Vec<&str> = oci.layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(
            types,
            [
                MEDIA_TYPE_OCI_LAYER_GZIP,
                MEDIA_TYPE_OCI_LAYER,
                MEDIA_TYPE_OCI_LAYER_NONDIST_GZIP
            ]
        );
        for (a, b) in oci.layers.iter().zip(&m.layers) {
            assert_eq!((&a.digest, a.size, &a.urls), (&b.digest, b.size, &b.urls));
        }
        assert_eq!(oci.config.digest, m.config.digest);
        // And back: the same manifest.
        assert_eq!(ImageFormat::Docker.convert(&oci).unwrap(), Some(m.clone()));
        // Already in the format: nothing to change, the bytes can be kept.
        assert_eq!(ImageFormat::Docker.convert(&m).unwrap(), None);
        assert_eq!(ImageFormat::Oci.convert(&oci).unwrap(), None);
    }

    #[test]
    fn zstd_and_unknown_types_have_no_docker_equivalent() {
        let m = manifest(
            Some(MEDIA_TYPE_OCI_MANIFEST),
            MEDIA_TYPE_OCI_CONFIG,
            &[MEDIA_TYPE_OCI_LAYER_ZSTD],
        );
        let err = ImageFormat::Docker.convert(&m).unwrap_err().to_string();
        assert_eq!(
            err,
            "media type application/vnd.oci.image.layer.v1.tar+zstd has no Docker schema2 equivalent"
        );
        assert!(ImageFormat::Oci.convert(&m).unwrap().is_none());
        let odd = manifest(None, MEDIA_TYPE_OCI_CONFIG, &["application/x-odd"]);
        assert!(ImageFormat::Oci.convert(&odd).is_err());
        // A manifest without mediaType gets one.
        let bare = manifest(None, MEDIA_TYPE_OCI_CONFIG, &[MEDIA_TYPE_OCI_LAYER]);
        assert_eq!(
            ImageFormat::Oci
                .convert(&bare)
                .unwrap()
                .unwrap()
                .media_type
                .as_deref(),
            Some(MEDIA_TYPE_OCI_MANIFEST)
        );
    }

    #[test]
    fn layer_types_read_compression_and_distributability() {
        assert!(is_nondistributable(MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP));
        assert!(is_nondistributable(MEDIA_TYPE_OCI_LAYER_NONDIST_ZSTD));
        assert!(!is_nondistributable(MEDIA_TYPE_DOCKER_LAYER_GZIP));
        assert_eq!(
            LayerType::parse(MEDIA_TYPE_OCI_LAYER_NONDIST_ZSTD),
            Some(LayerType {
                compression: Some(Compression::Zstd),
                distributable: false
            })
        );
        assert_eq!(LayerType::parse(MEDIA_TYPE_OCI_CONFIG), None);
    }
}
