//! Manifest and index media types, the parts of them pull and push read, platforms and
//! platform selection.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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
    pub platform: Option<PlatformJson>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Where a non-distributable (foreign) layer is fetched from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl BlobRef {
    /// An index entry that is not an image: BuildKit's attestation manifests (provenance,
    /// SBOM), which carry the platform `unknown/unknown` and a `vnd.docker.reference.type`
    /// annotation.
    pub(crate) fn is_attestation(&self) -> bool {
        self.annotations
            .get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
            || self
                .platform
                .as_ref()
                .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
    }
}

/// The platform object of an index entry.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct PlatformJson {
    /// `architecture`.
    pub architecture: String,
    /// `os`.
    pub os: String,
    /// `variant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
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

/// A platform: `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v7`, `v8`, ...
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine (linux/amd64 on x86_64).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }

    fn matches(&self, p: &PlatformJson) -> bool {
        if p.os != self.os || p.architecture != self.architecture {
            return false;
        }
        let normalize = |v: Option<&str>| -> Option<String> {
            match (self.architecture.as_str(), v) {
                // arm64 images usually omit the (only) variant v8.
                ("arm64", None) => Some("v8".into()),
                (_, v) => v.map(String::from),
            }
        };
        match &self.variant {
            None => true,
            Some(_) => normalize(self.variant.as_deref()) == normalize(p.variant.as_deref()),
        }
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::InvalidPlatform {
            platform: s.to_string(),
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: match parts[1].to_ascii_lowercase().as_str() {
                "x86_64" | "x86-64" => "amd64".into(),
                "aarch64" => "arm64".into(),
                a => a.into(),
            },
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Picks the index entry for `platform`: the first image manifest that matches, skipping
/// attestation manifests.
pub(crate) fn select<'a>(
    what: &str,
    entries: &'a [BlobRef],
    platform: &Platform,
) -> Result<&'a BlobRef> {
    entries
        .iter()
        .filter(|e| matches!(e.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST))
        .filter(|e| !e.is_attestation())
        .find(|e| e.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .ok_or_else(|| Error::NoMatchingPlatform {
            what: what.to_string(),
            platform: platform.to_string(),
            available: entries
                .iter()
                .filter(|e| !e.is_attestation())
                .filter_map(|e| e.platform.as_ref())
                .map(|p| match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>) -> BlobRef {
        BlobRef {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", arch.len()),
            size: 1,
            platform: Some(PlatformJson {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(String::from),
            }),
            annotations: BTreeMap::new(),
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
        assert!(!got.is_attestation());
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
        assert!("linux".parse::<Platform>().is_err());
        assert_eq!(Platform::host().to_string(), "linux/amd64");
    }
}
