//! Platforms (`linux/arm64/v8`): parsing, formatting, normalising and matching with
//! containerd's rules, and the JSON object of an index entry.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ParseError;

/// A platform: an index entry's `platform` object, a `--platform` value, a stage's target.
///
/// Values made by [`Platform::from_str`], [`Platform::host`] and [`Platform::normalized`]
/// are normalised as containerd does: `x86_64` → `amd64`, `aarch64` → `arm64`, `arm64/v8`
/// → `arm64` (v8 is arm64's only baseline, so it is left out), `arm` → `arm/v7`, `armhf` →
/// `arm/v7`, `armel` → `arm/v6`, `i386` → `386`. Values read from JSON keep what the
/// document says; [`Platform::matches`] normalises both sides.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

impl Platform {
    /// A normalised platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            variant: variant.map(str::to_owned),
            os_version: None,
            os_features: Vec::new(),
        }
        .normalized()
    }

    /// The machine rbuild runs on.
    pub fn host() -> Platform {
        Platform::new(std::env::consts::OS, std::env::consts::ARCH, None)
    }

    /// The variant, or `""` when there is none (as the `*VARIANT` build args want it).
    pub fn variant_str(&self) -> &str {
        self.variant.as_deref().unwrap_or("")
    }

    /// Whether this is the `unknown/unknown` platform BuildKit gives attestation manifests.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" && self.architecture == "unknown"
    }

    /// This platform with containerd's normalisation applied (see the type's doc).
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            other => other.to_owned(),
        };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.as_deref().map(str::to_ascii_lowercase);
        let (architecture, variant) = match (arch.as_str(), variant.as_deref()) {
            ("i386" | "x86", v) => ("386", v.map(str::to_owned)),
            ("x86_64" | "x86-64" | "amd64", Some("v1")) => ("amd64", None),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.map(str::to_owned)),
            ("aarch64" | "arm64", Some("8" | "v8" | "v8.0") | None) => ("arm64", None),
            ("aarch64" | "arm64", v) => ("arm64", v.map(str::to_owned)),
            ("armhf", _) => ("arm", Some("v7".to_owned())),
            ("armel", _) => ("arm", Some("v6".to_owned())),
            ("arm", None | Some("" | "7")) => ("arm", Some("v7".to_owned())),
            ("arm", Some(v @ ("5" | "6" | "8"))) => ("arm", Some(format!("v{v}"))),
            ("powerpc64le" | "ppc64le", v) => ("ppc64le", v.map(str::to_owned)),
            (other, v) => (other, v.map(str::to_owned)),
        };
        Platform {
            architecture: architecture.to_owned(),
            os,
            variant: variant.filter(|v| !v.is_empty()),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
    }

    /// Whether an image for `candidate` is what this platform asks for: os and architecture
    /// equal after normalisation, and the variant too when this platform names one.
    pub fn matches(&self, candidate: &Platform) -> bool {
        let (want, have) = (self.normalized(), candidate.normalized());
        want.os == have.os
            && want.architecture == have.architecture
            && (self.variant.is_none() || want.variant == have.variant)
    }
}

impl FromStr for Platform {
    type Err = ParseError;

    /// Parses `os/arch[/variant]` and normalises it.
    fn from_str(s: &str) -> Result<Platform, ParseError> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(ParseError::Platform {
                platform: s.to_owned(),
            });
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn normalises_like_containerd() {
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armel").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/i386").to_string(), "linux/386");
        assert_eq!(p("Linux/AMD64").to_string(), "linux/amd64");
        assert_eq!(Platform::host().to_string(), "linux/amd64");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
    }

    #[test]
    fn matches_index_entries_as_written() {
        let entry = |arch: &str, variant: Option<&str>| Platform {
            architecture: arch.to_owned(),
            os: "linux".to_owned(),
            variant: variant.map(str::to_owned),
            os_version: None,
            os_features: Vec::new(),
        };
        assert!(p("linux/arm64").matches(&entry("arm64", Some("v8"))));
        assert!(p("linux/arm64/v8").matches(&entry("arm64", None)));
        assert!(p("linux/arm").matches(&entry("arm", None)));
        assert!(p("linux/arm/v7").matches(&entry("arm", Some("v7"))));
        assert!(!p("linux/arm/v6").matches(&entry("arm", Some("v7"))));
        assert!(!p("linux/amd64").matches(&entry("arm64", None)));
        assert!(entry("unknown", None).os == "linux");
        let attestation = Platform {
            os: "unknown".into(),
            ..entry("unknown", None)
        };
        assert!(attestation.is_unknown());
        assert!(!p("linux/amd64").matches(&attestation));
    }
}
