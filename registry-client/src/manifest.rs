//! Manifest and index media types, the parts of them pull and push read, platform
//! selection from an index, and the OCI → Docker schema2 media type rewrite.

use rbuild_store::Platform;
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::{Error, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header for manifest requests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest, index or config we accept (hostile registries cannot make us buffer more).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// A descriptor as it appears inside a manifest or index.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlobRef {
    /// Media type.
    pub media_type: String,
    /// Digest (validated when used).
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest or index, as much as we need of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnyManifest {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<BlobRef>,
    #[serde(default)]
    pub layers: Vec<BlobRef>,
    #[serde(default)]
    pub manifests: Vec<BlobRef>,
}

/// What a fetched manifest document is.
pub(crate) enum Parsed {
    Index(Vec<BlobRef>),
    Image {
        config: BlobRef,
        layers: Vec<BlobRef>,
    },
}

/// Parses manifest bytes; `content_type` is the response's `Content-Type`.
pub(crate) fn parse(
    what: &str,
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<(String, Parsed)> {
    let m: AnyManifest =
        serde_json::from_slice(bytes).map_err(|source| Error::InvalidManifest {
            what: what.to_string(),
            source,
        })?;
    let media_type = m
        .media_type
        .clone()
        .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()))
        .unwrap_or_else(|| {
            if m.manifests.is_empty() {
                OCI_MANIFEST.to_string()
            } else {
                OCI_INDEX.to_string()
            }
        });
    let unsupported = || Error::UnsupportedMediaType {
        what: what.to_string(),
        media_type: media_type.clone(),
    };
    if m.schema_version != 2 {
        return Err(unsupported());
    }
    let parsed = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => Parsed::Index(m.manifests),
        OCI_MANIFEST | DOCKER_MANIFEST => Parsed::Image {
            config: m.config.ok_or_else(unsupported)?,
            layers: m.layers,
        },
        _ => return Err(unsupported()),
    };
    Ok((media_type, parsed))
}

/// Picks the index entry for `platform`: the first image manifest that matches.
pub(crate) fn select<'a>(
    what: &str,
    entries: &'a [BlobRef],
    platform: &Platform,
) -> Result<&'a BlobRef> {
    entries
        .iter()
        .filter(|e| matches!(e.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST))
        .find(|e| e.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .ok_or_else(|| Error::NoMatchingPlatform {
            what: what.to_string(),
            platform: platform.to_string(),
            available: entries
                .iter()
                .filter_map(|e| e.platform.as_ref())
                .filter(|p| !p.is_unknown())
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The Docker schema2 media type for an OCI one, if there is one.
pub(crate) fn docker_media_type(oci: &str) -> Option<&'static str> {
    Some(match oci {
        OCI_MANIFEST | DOCKER_MANIFEST => DOCKER_MANIFEST,
        OCI_CONFIG | DOCKER_CONFIG => DOCKER_CONFIG,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        }
        "application/vnd.oci.image.layer.v1.tar" => "application/vnd.docker.image.rootfs.diff.tar",
        _ => return None,
    })
}

/// Rewrites an OCI manifest (as JSON) to Docker schema2 media types; `None` when a layer
/// has no Docker equivalent (zstd).
pub(crate) fn to_docker(manifest: &serde_json::Value) -> Option<serde_json::Value> {
    let mut m = manifest.clone();
    let obj = m.as_object_mut()?;
    obj.insert("mediaType".into(), DOCKER_MANIFEST.into());
    let config = obj.get_mut("config")?.as_object_mut()?;
    let ct = config.get("mediaType")?.as_str()?;
    config.insert("mediaType".into(), docker_media_type(ct)?.into());
    for layer in obj.get_mut("layers")?.as_array_mut()? {
        let l = layer.as_object_mut()?;
        let t = l.get("mediaType")?.as_str()?;
        l.insert("mediaType".into(), docker_media_type(t)?.into());
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>) -> BlobRef {
        BlobRef {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", arch.len()),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(String::from),
                os_version: None,
                os_features: Vec::new(),
            }),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn selects_platform() {
        let entries = vec![
            entry("arm", Some("v7")),
            entry("amd64", None),
            entry("arm64", None),
        ];
        let p: Platform = "linux/amd64".parse().unwrap();
        assert_eq!(
            select("x", &entries, &p)
                .unwrap()
                .platform
                .as_ref()
                .unwrap()
                .architecture,
            "amd64"
        );
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(
            select("x", &entries, &p)
                .unwrap()
                .platform
                .as_ref()
                .unwrap()
                .architecture,
            "arm64"
        );
        let p: Platform = "linux/arm/v6".parse().unwrap();
        let err = select("x", &entries, &p).unwrap_err().to_string();
        assert!(err.contains("linux/arm/v7"), "{err}");
    }

    #[test]
    fn docker_rewrite_refuses_zstd() {
        let m = serde_json::json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
            "config":{"mediaType":OCI_CONFIG,"digest":"sha256:a","size":1},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:b","size":2}]});
        let d = to_docker(&m).unwrap();
        assert_eq!(
            d["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(d["config"]["mediaType"], DOCKER_CONFIG);
        let mut z = m.clone();
        z["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into();
        assert!(to_docker(&z).is_none());
    }
}
