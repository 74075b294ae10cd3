//! `--build-context NAME=VALUE`: what a named context is (a directory, an image, an image
//! in an OCI layout directory, a git repository, a tarball URL), parsed with buildx's
//! syntax, and opened for one build.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_store::Digest;

use super::context_dir::ContextDir;
use super::ContextSource;
use crate::Error;

/// One `--build-context` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory: its files (after its own `.dockerignore`), as the main context.
    Dir(PathBuf),
    /// `docker-image://REF`: an image, from the store or pulled.
    Image(String),
    /// A git repository URL (BuildKit's forms: `https://host/repo.git#ref:subdir`,
    /// `git@host:repo.git`, `git://`, the query form): its commit checked out, read as the
    /// main context is.
    Git(String),
    /// `http(s)://...`: a tar archive (plain or compressed), downloaded and unpacked as
    /// `rbuild build -` unpacks a context from stdin.
    Url(String),
    /// `oci-layout://PATH[:TAG|@DIGEST]`: an image of an OCI image layout directory.
    OciLayout {
        /// The layout directory.
        path: PathBuf,
        /// `:TAG` (`latest` when neither is given).
        tag: Option<String>,
        /// `@sha256:...`.
        digest: Option<Digest>,
    },
}

impl NamedContext {
    /// Parses a `--build-context` value (what follows `NAME=`).
    pub fn parse(value: &str) -> Result<NamedContext, Error> {
        let bad = |reason: &'static str| Error::BadBuildContext {
            value: value.to_string(),
            reason,
        };
        if let Some(reference) = value.strip_prefix("docker-image://") {
            if reference.is_empty() {
                return Err(bad("docker-image:// needs an image reference"));
            }
            return Ok(NamedContext::Image(reference.to_string()));
        }
        if let Some(rest) = value.strip_prefix("oci-layout://") {
            return parse_layout(rest).ok_or_else(|| {
                bad("want oci-layout://PATH[:TAG|@sha256:DIGEST] with a non-empty PATH")
            });
        }
        if crate::git::parse_git_ref(value)?.is_some() {
            return Ok(NamedContext::Git(value.to_string()));
        }
        if value.starts_with("http://") || value.starts_with("https://") {
            return Ok(NamedContext::Url(value.to_string()));
        }
        if value.contains("://") {
            return Err(bad(
                "unknown scheme: want a directory, docker-image://REF or oci-layout://PATH",
            ));
        }
        if value.is_empty() {
            return Err(bad("empty: want a directory"));
        }
        Ok(NamedContext::Dir(PathBuf::from(value)))
    }
}

fn parse_layout(rest: &str) -> Option<NamedContext> {
    let (path, tag, digest) = match rest.rsplit_once('@') {
        Some((p, d)) => (p, None, Some(d.parse::<Digest>().ok()?)),
        None => match rest.rsplit_once(':') {
            Some((p, t)) if !t.is_empty() && !t.contains('/') => (p, Some(t.to_string()), None),
            _ => (rest, None, None),
        },
    };
    if path.is_empty() {
        return None;
    }
    let tag = match (&tag, &digest) {
        (None, None) => Some("latest".to_string()),
        _ => tag,
    };
    Some(NamedContext::OciLayout {
        path: PathBuf::from(path),
        tag,
        digest,
    })
}

/// A named context as one build holds it.
pub enum OpenedContext {
    /// A directory (or a downloaded tarball, unpacked, or a git checkout), opened as the
    /// main context is.
    Dir(ContextDir),
    /// An image reference.
    Image(String),
    /// An image of an OCI layout directory, loaded on first use.
    OciLayout {
        /// The layout directory.
        path: PathBuf,
        /// The tag asked for.
        tag: Option<String>,
        /// The digest asked for.
        digest: Option<Digest>,
    },
}

/// Opens every named context: directories must exist (their `.dockerignore` applies).
pub async fn open_all(
    store: &rbuild_store::Store,
    contexts: &[(String, NamedContext)],
) -> Result<BTreeMap<String, OpenedContext>, Error> {
    let mut opened = BTreeMap::new();
    for (name, context) in contexts {
        let o = match context {
            NamedContext::Dir(dir) => {
                let d = ContextDir::open(store, &ContextSource::Dir(dir.clone())).await?;
                d.use_own_ignore_file().await?;
                OpenedContext::Dir(d)
            }
            NamedContext::Git(url) => {
                let d = ContextDir::open(store, &ContextSource::Git(url.clone())).await?;
                d.use_own_ignore_file().await?;
                OpenedContext::Dir(d)
            }
            NamedContext::Url(url) => OpenedContext::Dir(download(store, url).await?),
            NamedContext::Image(r) => OpenedContext::Image(r.clone()),
            NamedContext::OciLayout { path, tag, digest } => OpenedContext::OciLayout {
                path: path.clone(),
                tag: tag.clone(),
                digest: digest.clone(),
            },
        };
        opened.insert(name.to_ascii_lowercase(), o);
    }
    Ok(opened)
}

/// Downloads a tarball context and unpacks it under the store's `tmp/` (kept for the
/// build), with the stdin context's safety and size rules.
async fn download(store: &rbuild_store::Store, url: &str) -> Result<ContextDir, Error> {
    let scratch = store
        .tmp_dir()
        .map_err(Error::store("create a directory for a download"))?;
    let client = reqwest::Client::new();
    let fetched = crate::copy::fetch_url(&client, url, scratch.path(), None).await?;
    let bytes = tokio::fs::read(&fetched.path)
        .await
        .map_err(Error::io("read the download", &fetched.path))?;
    ContextDir::open(store, &ContextSource::Tar(bytes)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_forms() {
        assert_eq!(
            NamedContext::parse("docker-image://alpine:3.20").unwrap(),
            NamedContext::Image("alpine:3.20".into())
        );
        assert_eq!(
            NamedContext::parse("https://example.invalid/ctx.tar.gz").unwrap(),
            NamedContext::Url("https://example.invalid/ctx.tar.gz".into())
        );
        assert_eq!(
            NamedContext::parse("../lib").unwrap(),
            NamedContext::Dir("../lib".into())
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            NamedContext::parse(&format!("oci-layout:///l@{d}")).unwrap(),
            NamedContext::OciLayout {
                path: "/l".into(),
                tag: None,
                digest: Some(d.parse().unwrap())
            }
        );
        assert_eq!(
            NamedContext::parse("oci-layout://out/l:v1").unwrap(),
            NamedContext::OciLayout {
                path: "out/l".into(),
                tag: Some("v1".into()),
                digest: None
            }
        );
        assert_eq!(
            NamedContext::parse("oci-layout://out/l").unwrap(),
            NamedContext::OciLayout {
                path: "out/l".into(),
                tag: Some("latest".into()),
                digest: None
            }
        );
    }

    #[test]
    fn git_urls_are_git_contexts_and_plain_paths_and_tarballs_are_not() {
        for git in [
            "https://example.invalid/repo.git#main",
            "https://example.invalid/repo.git#v1:sub",
            "git@example.invalid:team/repo.git",
            "git://example.invalid/repo.git",
        ] {
            assert_eq!(
                NamedContext::parse(git).unwrap(),
                NamedContext::Git(git.to_string()),
                "{git}"
            );
        }
        assert_eq!(
            NamedContext::parse("lib").unwrap(),
            NamedContext::Dir("lib".into())
        );
        assert_eq!(
            NamedContext::parse("../lib").unwrap(),
            NamedContext::Dir("../lib".into())
        );
        assert!(matches!(
            NamedContext::parse("https://example.invalid/ctx.tar.gz").unwrap(),
            NamedContext::Url(_)
        ));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in [
            "docker-image://",
            "oci-layout://",
            "oci-layout:///l@sha256:zz",
            "ftp://x/y",
            "",
        ] {
            assert!(
                matches!(NamedContext::parse(bad), Err(Error::BadBuildContext { .. })),
                "{bad}"
            );
        }
    }
}
