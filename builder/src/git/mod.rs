//! Git sources (ADD of a git URL, a git URL as the build context): URL parsing with
//! BuildKit's rules, and fetching one commit with the system `git` binary.

mod cli;
mod url;

pub use cli::{checkout, resolve_commit, Resolved};
pub use url::{parse_git_ref, GitRef};

/// An error resolving or fetching a git source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// A git URL that does not parse.
    #[error("invalid git URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as written.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No `git` binary on `PATH`.
    #[error(
        "git sources need the git binary, which is not on PATH: install git (apt-get install git)"
    )]
    NotInstalled,
    /// A `git` command could not be started.
    #[error("cannot run git")]
    Spawn(#[source] std::io::Error),
    /// A `git` command failed.
    #[error("git {command} {remote} failed ({status}): {stderr}")]
    Command {
        /// The git subcommand.
        command: &'static str,
        /// The repository.
        remote: String,
        /// How it exited.
        status: String,
        /// The last lines of its error output.
        stderr: String,
    },
    /// The ref is not in the repository.
    #[error("ref {reference:?} not found in {remote}")]
    RefNotFound {
        /// The repository.
        remote: String,
        /// The ref asked for.
        reference: String,
    },
    /// `checksum=` names another commit than the ref resolves to.
    #[error("{remote}#{reference} is commit {actual}, not the expected {expected}")]
    ChecksumMismatch {
        /// The repository.
        remote: String,
        /// The ref.
        reference: String,
        /// `checksum=`.
        expected: String,
        /// What the ref resolved to.
        actual: String,
    },
    /// The subdirectory is not a directory of the commit.
    #[error("{subdir:?} is not a directory in {remote} at {commit}")]
    NoSubdir {
        /// The repository.
        remote: String,
        /// The commit.
        commit: String,
        /// The subdirectory asked for.
        subdir: String,
    },
    /// A filesystem operation on the checkout failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
