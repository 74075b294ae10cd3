//! Minimal docker-style normalization of user-given image names
//! (`busybox` → `docker.io/library/busybox:latest`).

use crate::{Error, Result};

/// Normalizes an image name like docker: adds `docker.io/` when the first component is not
/// a registry (no `.` or `:` and not `localhost`), `library/` for single-component Docker Hub
/// names, and `:latest` when there is neither tag nor digest. Repository names must be
/// lowercase; tags `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn normalize_reference(name: &str) -> Result<String> {
    let bad = |reason| Error::InvalidReference {
        reference: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    if let Some(d) = digest {
        d.parse::<crate::Digest>()
            .map_err(|_| bad("invalid digest"))?;
    }
    // A tag is after the last ':' that comes after the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(bad("invalid tag"));
        }
    }
    if repo.is_empty() {
        return Err(bad("empty repository"));
    }
    let (domain, path) = match repo.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), repo.to_owned()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io".to_owned()
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    for component in path.split('/') {
        let ok = !component.is_empty()
            && component
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && component.as_bytes()[0].is_ascii_alphanumeric()
            && component.as_bytes()[component.len() - 1].is_ascii_alphanumeric();
        if !ok {
            return Err(bad("repository components must be lowercase [a-z0-9._-] starting and ending alphanumeric"));
        }
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::normalize_reference as n;

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(n("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36").unwrap(), "docker.io/library/busybox:1.36");
        assert_eq!(n("user/app").unwrap(), "docker.io/user/app:latest");
        assert_eq!(n("127.0.0.1:5000/a/b:v1").unwrap(), "127.0.0.1:5000/a/b:v1");
        assert_eq!(n("127.0.0.1:5000/a").unwrap(), "127.0.0.1:5000/a:latest");
        assert_eq!(n("localhost/x").unwrap(), "localhost/x:latest");
        assert_eq!(
            n("index.docker.io/library/alpine").unwrap(),
            "docker.io/library/alpine:latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&format!("alpine@{d}")).unwrap(),
            format!("docker.io/library/alpine@{d}")
        );
        assert!(n("Busybox").is_err());
        assert!(n("a/b:").is_err());
        assert!(n("").is_err());
        assert!(n("a//b").is_err());
        assert!(n("alpine@sha256:zz").is_err());
    }
}
