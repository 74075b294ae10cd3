//! Git source URLs as BuildKit's Dockerfile frontend reads them (`dfgitutil.ParseGitRef`):
//! `https://host/repo.git#ref:subdir`, `git://`, `ssh://`, `user@host:repo.git`, and the
//! `?ref=&tag=&branch=&subdir=&checksum=&keep-git-dir=` query form.

use super::GitError;

/// A git repository, a ref in it and a directory of it, parsed from a source or context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    /// The repository, without fragment and query (what `git fetch` is given).
    pub remote: String,
    /// The host, for host-scoped credentials (`GIT_AUTH_TOKEN.<host>`).
    pub host: String,
    /// A branch, tag, full ref name or commit; empty means the remote's HEAD.
    pub reference: String,
    /// `checksum=` / `commit=`: the commit the ref must resolve to.
    pub checksum: Option<String>,
    /// The directory inside the repository (cleaned, relative, `""` for the root).
    pub subdir: String,
    /// `keep-git-dir=` in the query, when given.
    pub keep_git_dir: Option<bool>,
    /// Whether the remote speaks HTTP(S) (where `GIT_AUTH_TOKEN` applies).
    pub http: bool,
}

/// Parses `source` when it is a git URL: `Ok(None)` when it is not one (a plain
/// `http(s)://` URL, a path), an error when it is one that is malformed.
pub fn parse_git_ref(source: &str) -> Result<Option<GitRef>, GitError> {
    if source.starts_with("./") || source.starts_with("../") {
        return Ok(None);
    }
    if let Some((scheme, _)) = source.split_once("://") {
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "git" | "ssh") {
            return Ok(None);
        }
        let bad = |reason: String| GitError::BadUrl {
            url: source.to_string(),
            reason,
        };
        let url = url::Url::parse(source).map_err(|e| bad(e.to_string()))?;
        let http = matches!(scheme.as_str(), "http" | "https");
        // BuildKit: an HTTP(S) URL is a git repository only with the `.git` suffix.
        if http && !url.path().ends_with(".git") {
            return Ok(None);
        }
        let mut remote = url.clone();
        remote.set_fragment(None);
        remote.set_query(None);
        let host = url.host_str().unwrap_or_default().to_string();
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        return build(
            source,
            remote.to_string(),
            host,
            url.fragment(),
            &query,
            http,
        )
        .map(Some);
    }
    let Some(scp) = scp_style(source) else {
        return Ok(None);
    };
    let query: Vec<(String, String)> = scp
        .query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let remote = format!("{}@{}:{}", scp.user, scp.host, scp.path);
    build(
        source,
        remote,
        scp.host.to_string(),
        scp.fragment,
        &query,
        false,
    )
    .map(Some)
}

/// `remote` for messages: a password in the URL (`https://user:token@host/...`) masked.
pub fn redact(remote: &str) -> String {
    match url::Url::parse(remote) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("xxxxx"));
            u.to_string()
        }
        _ => remote.to_string(),
    }
}

/// `user@host:path[?query][#fragment]` (BuildKit's `sshutil` pattern).
struct ScpUrl<'a> {
    user: &'a str,
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

fn scp_style(s: &str) -> Option<ScpUrl<'_>> {
    let (user, rest) = s.split_once('@')?;
    let (host, rest) = rest.split_once(':')?;
    let user_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let host_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if user.is_empty()
        || !user.chars().all(user_ok)
        || host.is_empty()
        || !host.chars().all(host_ok)
    {
        return None;
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    Some(ScpUrl {
        user,
        host,
        path,
        query,
        fragment,
    })
}

/// `path.Join("/", subdir)` without the leading slash: `..` never leaves the repository.
fn clean_subdir(subdir: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in subdir.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn build(
    source: &str,
    remote: String,
    host: String,
    fragment: Option<&str>,
    query: &[(String, String)],
    http: bool,
) -> Result<GitRef, GitError> {
    let (reference, subdir) = match fragment {
        Some(f) if !f.is_empty() => {
            let (r, s) = f.split_once(':').unwrap_or((f, ""));
            (r.to_string(), clean_subdir(s))
        }
        _ => (String::new(), String::new()),
    };
    let mut git = GitRef {
        remote,
        host,
        reference,
        checksum: None,
        subdir,
        keep_git_dir: None,
        http,
    };
    apply_query(&mut git, query).map_err(|reason| GitError::BadUrl {
        url: source.to_string(),
        reason,
    })?;
    Ok(git)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        v => Err(format!("invalid {key} value: {v:?}")),
    }
}

/// Sets `slot` to `value`, refusing a different value already there.
fn set_once(slot: &mut String, value: &str, what: &str) -> Result<(), String> {
    if !slot.is_empty() && slot != value {
        return Err(format!("{what} conflicts: {slot:?} vs {value:?}"));
    }
    *slot = value.to_string();
    Ok(())
}

/// BuildKit's `loadQuery`: each key at most once; `tag=`/`branch=` become full ref names.
fn apply_query(git: &mut GitRef, query: &[(String, String)]) -> Result<(), String> {
    let (mut tag, mut branch) = (String::new(), String::new());
    for (i, (k, v)) in query.iter().enumerate() {
        if query[..i].iter().any(|(seen, _)| seen == k) {
            return Err(format!("query {k:?} has multiple values"));
        }
        let flag = matches!(
            k.as_str(),
            "submodules" | "keep-git-dir" | "fetch-by-commit"
        );
        if v.is_empty() && !flag {
            return Err(format!("query {k:?} has no value"));
        }
        match k.as_str() {
            "ref" => set_once(&mut git.reference, v, "ref")?,
            "tag" => tag = v.clone(),
            "branch" => branch = v.clone(),
            "subdir" => {
                let v = clean_subdir(v);
                set_once(&mut git.subdir, &v, "subdir")?;
            }
            "checksum" | "commit" => git.checksum = Some(v.clone()),
            "keep-git-dir" => git.keep_git_dir = Some(parse_bool(k, v)?),
            // Submodules are never fetched; asking for them is an error.
            "submodules" => {
                if parse_bool(k, v)? {
                    return Err("submodules are not supported".into());
                }
            }
            "fetch-by-commit" => {
                parse_bool(k, v)?;
            }
            "mtime" if v == "checkout" => {}
            "mtime" => return Err(format!("unsupported mtime value: {v:?}")),
            _ => return Err(format!("unexpected query {k:?}")),
        }
    }
    if !tag.is_empty() {
        if !tag.starts_with("refs/tags/") {
            tag = format!("refs/tags/{tag}");
        }
        set_once(&mut git.reference, &tag, "ref")?;
    }
    if !branch.is_empty() {
        if !tag.is_empty() {
            return Err("branch conflicts with tag".into());
        }
        if !branch.starts_with("refs/heads/") {
            branch = format!("refs/heads/{branch}");
        }
        set_once(&mut git.reference, &branch, "ref")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> GitRef {
        parse_git_ref(s).unwrap().unwrap()
    }

    #[test]
    fn fragment_form() {
        let g = parse("https://example.com/foo/bar.git#baz/qux:quux/quuz");
        assert_eq!(g.remote, "https://example.com/foo/bar.git");
        assert_eq!(g.reference, "baz/qux");
        assert_eq!(g.subdir, "quux/quuz");
        assert!(g.http);
        let g = parse("git://127.0.0.1:9418/r.git#v1:../a/./b/");
        assert_eq!(g.remote, "git://127.0.0.1:9418/r.git");
        assert_eq!((g.reference.as_str(), g.subdir.as_str()), ("v1", "a/b"));
        assert!(!g.http);
    }

    #[test]
    fn scp_form() {
        let g = parse("git@example.com:foo/bar.git#main:sub");
        assert_eq!(g.remote, "git@example.com:foo/bar.git");
        assert_eq!(g.host, "example.com");
        assert_eq!((g.reference.as_str(), g.subdir.as_str()), ("main", "sub"));
    }

    #[test]
    fn query_form() {
        let g = parse("https://h/r.git?ref=main&subdir=docs&keep-git-dir=true");
        assert_eq!(g.remote, "https://h/r.git");
        assert_eq!(g.reference, "main");
        assert_eq!(g.subdir, "docs");
        assert_eq!(g.keep_git_dir, Some(true));
        assert_eq!(parse("https://h/r.git?tag=v1").reference, "refs/tags/v1");
        assert_eq!(parse("git@h:r.git?branch=b").reference, "refs/heads/b");
        assert_eq!(
            parse("https://h/r.git?keep-git-dir").keep_git_dir,
            Some(true)
        );
        for bad in [
            "https://h/r.git?ref=a#b",
            "https://h/r.git?ref=a&ref=a",
            "https://h/r.git?subdir=",
            "https://h/r.git?nope=1",
            "https://h/r.git?tag=a&branch=b",
            "https://h/r.git?keep-git-dir=maybe",
        ] {
            assert!(parse_git_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_masked_in_messages() {
        assert_eq!(redact("https://u:tok@h/r.git"), "https://u:xxxxx@h/r.git");
        assert_eq!(redact("git@h:r.git"), "git@h:r.git");
    }

    #[test]
    fn not_git() {
        for s in [
            "https://h/file.tar.gz",
            "http://h/repo",
            "./a@b:c",
            "dir/file",
            "ftp://h/r.git",
            "a b@h:c",
        ] {
            assert_eq!(parse_git_ref(s).unwrap(), None, "{s}");
        }
    }
}
