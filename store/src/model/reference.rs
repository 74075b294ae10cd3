//! Image references, normalised with docker's rules (`busybox` →
//! `docker.io/library/busybox:latest`): the one normaliser every crate uses.

use std::fmt;
use std::str::FromStr;

use super::ParseError;
use crate::Digest;

/// The registry a reference without a registry host belongs to.
pub const DOCKER_HUB: &str = "docker.io";

/// A normalised image reference: registry host, repository path and a tag and/or digest.
///
/// A reference with neither tag nor digest gets the tag `latest`, as docker does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Reference, ParseError> {
        let bad = |reason: &'static str| ParseError::Reference {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest = Digest::from_str(d).map_err(|_| bad("invalid digest"))?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        // The tag is after the last ':' that comes after the last '/', so that a
        // registry port (`host:5000/x`) is not taken for a tag.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(&name_tag[at + 1..]))
            }
            None => (name_tag, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            // docker's splitDockerDomain: a first component with `.`, `:` or an upper-case
            // letter, or `localhost`, is a registry host.
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_host(&registry) {
            return Err(bad("invalid registry host"));
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.len() > 255 {
            return Err(bad("repository name longer than 255 characters"));
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(bad("invalid repository name"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host as written (`docker.io`, `127.0.0.1:5000`, `ghcr.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`library/busybox`, `project/app`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to put after `/manifests/`: the digest if there is one, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository at `digest` (tag dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            tag: None,
            ..self.clone()
        }
    }
}

impl FromStr for Reference {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    tag.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, docker's path component rule.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("user/app:1"), "docker.io/user/app:1");
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app:v2"), "localhost:5000/app:v2");
        assert_eq!(norm("127.0.0.1:5000/a/b/c"), "127.0.0.1:5000/a/b/c:latest");
        assert_eq!(norm("ghcr.io/o/r:t"), "ghcr.io/o/r:t");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(norm(&format!("h.io/x:t@{d}")), format!("h.io/x:t@{d}"));
    }

    #[test]
    fn splits_parts() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.manifest_ref(), "latest");
        let r = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.name(), "127.0.0.1:5000/app");
    }

    #[test]
    fn rejects_bad_references() {
        for s in [
            "",
            "upper/CASE",
            "docker.io/Upper",
            "a//b",
            "a:bad tag",
            "x@sha256:zz",
            "-a",
            "a/",
            "a:",
        ] {
            assert!(Reference::parse(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn upper_case_first_component_is_a_host_as_in_docker() {
        assert_eq!(norm("Host/app"), "Host/app:latest");
        assert_eq!(
            norm("index.docker.io/library/alpine"),
            "docker.io/library/alpine:latest"
        );
    }
}
