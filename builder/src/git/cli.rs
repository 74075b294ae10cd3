//! The system `git` binary: `ls-remote` resolves a ref to a commit (the cache key), then
//! init, fetch and checkout of that commit into a directory. Credentials come from the
//! environment and reach git through its environment, never its command line:
//! `GIT_AUTH_HEADER[.<host>]` (a whole `Authorization` value) or `GIT_AUTH_TOKEN[.<host>]`
//! (BuildKit's `x-access-token` basic auth) for HTTP(S); ssh (`git@host:`, `ssh://`) uses
//! the user's ssh setup and agent (`SSH_AUTH_SOCK`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use super::url::redact;
use super::{GitError, GitRef};

/// A ref resolved on the remote: the commit, and the full ref name to fetch it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The commit (hex object name).
    pub commit: String,
    /// `refs/heads/main`, `HEAD`...; `None` when the ref was a commit already.
    pub refname: Option<String>,
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn env_for_host(name: &str, host: &str) -> Option<String> {
    std::env::var(format!("{name}.{host}"))
        .or_else(|_| std::env::var(name))
        .ok()
        .filter(|v| !v.is_empty())
}

/// The `Authorization` header for an HTTP(S) remote, from the environment.
fn auth_header(host: &str) -> Option<String> {
    if let Some(header) = env_for_host("GIT_AUTH_HEADER", host) {
        return Some(format!("Authorization: {header}"));
    }
    let token = env_for_host("GIT_AUTH_TOKEN", host)?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    Some(format!("Authorization: basic {basic}"))
}

/// `git` with no prompt, C messages, credentials in its environment, killed if the
/// thread that waits for it dies.
fn git(g: &GitRef) -> Command {
    let mut c = Command::new("git");
    c.stdin(Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C");
    if g.http {
        if let Some(header) = auth_header(&g.host) {
            // Appended to any configuration the caller passes the same way.
            let n: usize = std::env::var("GIT_CONFIG_COUNT")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            c.env("GIT_CONFIG_COUNT", (n + 1).to_string())
                .env(format!("GIT_CONFIG_KEY_{n}"), "http.extraHeader")
                .env(format!("GIT_CONFIG_VALUE_{n}"), header);
        }
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c
}

/// Runs `cmd`, returning its stdout; a failure carries the end of its stderr.
fn run(mut cmd: Command, command: &'static str, remote: &str) -> Result<String, GitError> {
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => GitError::NotInstalled,
        _ => GitError::Spawn(e),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        return Err(GitError::Command {
            command,
            remote: redact(remote),
            status: out.status.to_string(),
            stderr: lines[lines.len().saturating_sub(3)..].join("; "),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Resolves `g.reference` (the remote's HEAD when empty) to a commit with `git
/// ls-remote`, as BuildKit does: a full ref name, else a branch, else a tag (peeled). A
/// commit id is taken as is. `checksum=` must match.
pub fn resolve_commit(g: &GitRef) -> Result<Resolved, GitError> {
    let reference = if g.reference.is_empty() {
        "HEAD"
    } else {
        &g.reference
    };
    let resolved = if is_commit_id(reference) {
        Resolved {
            commit: reference.to_ascii_lowercase(),
            refname: None,
        }
    } else {
        let mut cmd = git(g);
        cmd.args(["ls-remote", "--", &g.remote, reference])
            .arg(format!("{reference}^{{}}"));
        let listing = run(cmd, "ls-remote", &g.remote)?;
        pick_ref(&listing, reference).ok_or_else(|| GitError::RefNotFound {
            remote: redact(&g.remote),
            reference: reference.to_string(),
        })?
    };
    if let Some(expected) = &g.checksum {
        let expected = expected.to_ascii_lowercase();
        if expected.len() < 7 || !resolved.commit.starts_with(&expected) {
            return Err(GitError::ChecksumMismatch {
                remote: redact(&g.remote),
                reference: reference.to_string(),
                expected,
                actual: resolved.commit,
            });
        }
    }
    Ok(resolved)
}

/// Picks `reference` out of `git ls-remote` output: the exact name (`HEAD`, `refs/...`),
/// else `refs/heads/<ref>`, else `refs/tags/<ref>`; an annotated tag's peeled commit.
fn pick_ref(listing: &str, reference: &str) -> Option<Resolved> {
    let lines: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| lines.iter().find(|(_, n)| *n == name).map(|(c, _)| *c);
    let mut names = Vec::new();
    if reference == "HEAD" || reference.starts_with("refs/") {
        names.push(reference.to_string());
    }
    names.push(format!("refs/heads/{reference}"));
    names.push(format!("refs/tags/{reference}"));
    names.into_iter().find_map(|name| {
        let commit = find(&format!("{name}^{{}}")).or_else(|| find(&name))?;
        Some(Resolved {
            commit: commit.to_string(),
            refname: Some(name),
        })
    })
}

/// Fetches `resolved` from `g.remote` into the new directory `dir` and checks it out
/// (shallow where the server allows it); drops `.git` unless `keep_git_dir`. Returns the
/// directory to copy: `dir`, or its `g.subdir`.
pub fn checkout(
    g: &GitRef,
    resolved: &Resolved,
    dir: &Path,
    keep_git_dir: bool,
) -> Result<PathBuf, GitError> {
    let remote = g.remote.as_str();
    let mut cmd = git(g);
    cmd.args(["init", "-q", "--"]).arg(dir);
    run(cmd, "init", remote)?;
    let in_dir = |args: &[&str]| {
        let mut cmd = git(g);
        cmd.arg("-C").arg(dir).args(args);
        cmd
    };
    run(
        in_dir(&["remote", "add", "origin", remote]),
        "remote",
        remote,
    )?;
    let target = resolved.refname.as_deref().unwrap_or(&resolved.commit);
    let fetch = |depth: bool, what: &[&str]| {
        let mut args = vec!["fetch", "-q", "--no-tags"];
        if depth {
            args.push("--depth=1");
        }
        args.push("origin");
        args.extend(what);
        run(in_dir(&args), "fetch", remote)
    };
    // Dumb HTTP servers cannot serve shallow fetches, and some servers refuse to fetch a
    // commit by id: fall back to a full fetch, then to every branch and tag.
    fetch(true, &[target])
        .or_else(|_| fetch(false, &[target]))
        .or_else(|e| match resolved.refname {
            Some(_) => Err(e),
            None => fetch(
                false,
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            ),
        })?;
    let checkout = [
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "-q",
        "--detach",
        &resolved.commit,
    ];
    run(in_dir(&checkout), "checkout", remote)?;
    if !keep_git_dir {
        let git_dir = dir.join(".git");
        std::fs::remove_dir_all(&git_dir).map_err(|source| GitError::Io {
            op: "remove",
            path: git_dir,
            source,
        })?;
    }
    let tree = dir.join(&g.subdir);
    if !tree.is_dir() {
        return Err(GitError::NoSubdir {
            remote: redact(remote),
            commit: resolved.commit.clone(),
            subdir: g.subdir.clone(),
        });
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_picked_as_buildkit_does() {
        let listing = "\
1111111111111111111111111111111111111111\tHEAD
2222222222222222222222222222222222222222\trefs/heads/main
3333333333333333333333333333333333333333\trefs/tags/main
4444444444444444444444444444444444444444\trefs/tags/v1
5555555555555555555555555555555555555555\trefs/tags/v1^{}
";
        let commit = |r| pick_ref(listing, r).map(|r| r.commit[..1].to_string());
        assert_eq!(commit("HEAD").as_deref(), Some("1"));
        assert_eq!(commit("main").as_deref(), Some("2"));
        assert_eq!(commit("refs/tags/main").as_deref(), Some("3"));
        assert_eq!(commit("v1").as_deref(), Some("5"));
        assert_eq!(commit("nope"), None);
        assert_eq!(
            pick_ref(listing, "v1").unwrap().refname.as_deref(),
            Some("refs/tags/v1")
        );
    }

    #[test]
    fn auth_header_is_basic_with_x_access_token() {
        // The variable is host-scoped so that no other test sees it.
        std::env::set_var("GIT_AUTH_TOKEN.auth-test.invalid", "tok");
        assert_eq!(
            auth_header("auth-test.invalid").as_deref(),
            Some("Authorization: basic eC1hY2Nlc3MtdG9rZW46dG9r")
        );
        std::env::remove_var("GIT_AUTH_TOKEN.auth-test.invalid");
    }
}
