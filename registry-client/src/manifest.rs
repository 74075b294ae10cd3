//! Manifest and index media types, the parts of them pull and push read, and platform
//! selection from an index.

use rbuild_store::{Descriptor, Platform};
use serde::Deserialize;

use crate::{Error, Result};

// The media type names live in the store (`rbuild_store::MEDIA_TYPE_*`, with the OCI <->
// Docker conversion, `rbuild_store::ImageFormat`); these are short local names for them.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = rbuild_store::MEDIA_TYPE_OCI_MANIFEST;
/// OCI image index.
pub const OCI_INDEX: &str = rbuild_store::MEDIA_TYPE_OCI_INDEX;
/// Docker schema2 manifest.
pub const DOCKER_MANIFEST: &str = rbuild_store::MEDIA_TYPE_DOCKER_MANIFEST;
/// Docker manifest list.
pub const DOCKER_LIST: &str = rbuild_store::MEDIA_TYPE_DOCKER_MANIFEST_LIST;

/// The `Accept` header for manifest requests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest, index or config we accept (hostile registries cannot make us buffer more).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// An index entry that is not an image: BuildKit's attestation manifests (provenance,
/// SBOM), which carry the platform `unknown/unknown` and a `vnd.docker.reference.type`
/// annotation.
pub(crate) fn is_attestation(entry: &Descriptor) -> bool {
    entry
        .annotations
        .get("vnd.docker.reference.type")
        .is_some_and(|t| t == "attestation-manifest")
        || entry.platform.as_ref().is_some_and(Platform::is_unknown)
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
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// What a fetched manifest document is.
pub(crate) enum Parsed {
    Index(Vec<Descriptor>),
    Image {
        config: Box<Descriptor>,
        layers: Vec<Descriptor>,
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
            config: Box::new(m.config.ok_or_else(unsupported)?),
            layers: m.layers,
        },
        _ => return Err(unsupported()),
    };
    Ok((media_type, parsed))
}

/// Picks the index entry for `platform`: the first image manifest that matches, skipping
/// attestation manifests.
pub(crate) fn select<'a>(
    what: &str,
    entries: &'a [Descriptor],
    platform: &Platform,
) -> Result<&'a Descriptor> {
    entries
        .iter()
        .filter(|e| matches!(e.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST))
        .filter(|e| !is_attestation(e))
        .find(|e| e.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .ok_or_else(|| Error::NoMatchingPlatform {
            what: what.to_string(),
            platform: platform.to_string(),
            available: entries
                .iter()
                .filter(|e| !is_attestation(e))
                .filter_map(|e| e.platform.as_ref())
                .map(|p| p.normalized().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: rbuild_store::Digest::of(arch.as_bytes()),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(String::from),
                os_version: None,
                os_features: Vec::new(),
            }),
            annotations: Default::default(),
            urls: Vec::new(),
        }
    }

    #[test]
    fn attestation_entries_are_skipped_and_not_listed() {
        let mut att = entry("unknown", None);
        att.platform.as_mut().unwrap().os = "unknown".into();
        att.annotations.insert(
            "vnd.docker.reference.type".into(),
            "attestation-manifest".into(),
        );
        let entries = vec![att.clone(), entry("arm64", None)];
        let p: Platform = "linux/amd64".parse().unwrap();
        let err = select("x", &entries, &p).unwrap_err().to_string();
        assert!(
            err.contains("linux/arm64") && !err.contains("unknown"),
            "{err}"
        );
        // Even one claiming the asked platform is not an image.
        let mut fake = entry("amd64", None);
        fake.annotations = att.annotations.clone();
        let entries = vec![fake, entry("amd64", Some("v1"))];
        let got = select("x", &entries, &p).unwrap();
        assert!(!is_attestation(got));
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
}
