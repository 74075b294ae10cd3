//! The builder's error type.

use std::path::PathBuf;

use crate::context::ContextError;
use crate::copy::CopyError;
use crate::frontend::{ExpandError, ParseError};
use crate::git::GitError;

/// A RUN whose command failed.
#[derive(Debug)]
pub struct RunFailure {
    /// The Dockerfile's name.
    pub file: String,
    /// The step's first line.
    pub line: usize,
    /// The instruction as written (shortened).
    pub instruction: String,
    /// The argv joined with spaces.
    pub command: String,
    /// `exit code: 2`, `killed by signal 9`, `out of memory`.
    pub status: String,
    /// The last lines of its output.
    pub tail: Vec<String>,
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: process \"{}\" did not complete successfully: {}",
            self.file, self.line, self.instruction, self.command, self.status
        )
    }
}

/// Everything that can go wrong in a build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Dockerfile that cannot be read.
    #[error("cannot read {path}")]
    ReadDockerfile {
        /// The Dockerfile's path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A Dockerfile that does not parse or makes no sense.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The build context cannot be read.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A step failed; the cause says how. Printed as `Dockerfile:7: COPY a /b`.
    #[error("{file}:{line}: {instruction}")]
    Step {
        /// The Dockerfile's name.
        file: String,
        /// The step's first line.
        line: usize,
        /// The instruction as written (shortened).
        instruction: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// A RUN command exited with an error: BuildKit's wording.
    #[error("{0}")]
    RunFailed(Box<RunFailure>),
    /// A variable expansion failed.
    #[error("cannot expand variables")]
    Expand(#[from] ExpandError),
    /// A filesystem operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error("store: cannot {what}")]
    Store {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: rbuild_store::Error,
    },
    /// A registry operation failed.
    #[error("cannot get {reference}")]
    Registry {
        /// The image reference.
        reference: String,
        /// The cause.
        #[source]
        source: rbuild_registry::Error,
    },
    /// The sandbox could not run a step.
    #[error("cannot run the step in a sandbox")]
    Sandbox(#[source] rbuild_runner::Error),
    /// `USER` / `--chown` names a user the image does not have.
    #[error("cannot resolve user {spec:?}")]
    User {
        /// The spec as written.
        spec: String,
        /// The cause.
        #[source]
        source: rbuild_runner::Error,
    },
    /// An image config that is not valid JSON of the expected shape.
    #[error("invalid image config of {what}")]
    Config {
        /// Which image.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A COPY/ADD source that does not exist.
    #[error("{source_path}: not found")]
    SourceNotFound {
        /// The source as written (after expansion).
        source_path: String,
    },
    /// A COPY/ADD source path that leaves the build context.
    #[error("{source_path}: outside of the build context")]
    OutsideContext {
        /// The source as written.
        source_path: String,
    },
    /// A bad flag value (`--chmod=abc`, `--mount=type=x`...).
    #[error("invalid {flag} {value:?}: {reason}")]
    InvalidFlag {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// Why it is wrong.
        reason: &'static str,
    },
    /// A `# check=` directive (or `BUILDKIT_DOCKERFILE_CHECK`) that does not parse.
    #[error("{file}:{line}: {source}")]
    CheckDirective {
        /// The Dockerfile.
        file: String,
        /// The directive's line (0 for the build arg).
        line: usize,
        /// What is wrong.
        #[source]
        source: crate::frontend::checks::CheckConfigError,
    },
    /// Build checks warned and `# check=error=true` makes that fatal.
    #[error(
        "{count} build check warning(s), and the Dockerfile's check=error=true makes them errors"
    )]
    ChecksFailed {
        /// How many warnings.
        count: usize,
    },
    /// A `--build-context` value rbuild cannot use.
    #[error("invalid --build-context {value:?}: {reason}")]
    BadBuildContext {
        /// The value after `NAME=`.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A named context used where its kind cannot be (a directory as a RUN mount source).
    #[error("build context {name:?} is a directory: {reason}")]
    ContextKind {
        /// The context's name.
        name: String,
        /// What is not possible with it.
        reason: &'static str,
    },
    /// `RUN --mount=type=secret,id=x` without a matching `--secret id=x`.
    #[error("secret {id} not provided (give it with --secret id={id},src=FILE)")]
    SecretMissing {
        /// The secret id.
        id: String,
    },
    /// An image name that is not a valid reference.
    #[error(transparent)]
    Reference(rbuild_store::ParseError),
    /// A `--platform` or `FROM --platform` value that does not parse.
    #[error(transparent)]
    Platform(rbuild_store::ParseError),
    /// A base image without an image for the platform a stage is built for.
    #[error("base {base} has no {platform} image; it has {available}")]
    BaseLacksPlatform {
        /// The base as written.
        base: String,
        /// The stage's platform.
        platform: String,
        /// The platforms the base has (`linux/amd64, linux/arm64`).
        available: String,
    },
    /// A RUN step for a foreign architecture on a host that cannot run its binaries.
    #[error(transparent)]
    Emulation(#[from] crate::solver::emulation::EmulationError),
    /// A background task of the build panicked or was cancelled.
    #[error("a build task failed")]
    Task(#[source] tokio::task::JoinError),
    /// A `--cache-to` that could not be written (without `ignore-error=true`).
    #[error("cannot export the build cache to {cache}")]
    CacheExport {
        /// The cache as named on the command line.
        cache: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A layer of an imported cache record is not what the record says (its blob cannot be
    /// fetched, has another digest, or unpacks to another diffID): the build runs again
    /// without that cache.
    #[error("layer {layer} of cache {cache} is unusable")]
    CachedLayer {
        /// The cache as named on the command line.
        cache: String,
        /// The layer blob.
        layer: rbuild_store::Digest,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// The files of a COPY or ADD cannot be written.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// A git source (ADD of a git URL, a git context) cannot be resolved or fetched.
    #[error(transparent)]
    Git(#[from] GitError),
    /// `ADD --keep-git-dir` contradicting the URL's `keep-git-dir=`.
    #[error("inconsistent keep-git-dir configuration in {url}")]
    KeepGitDirConflict {
        /// The git URL.
        url: String,
    },
    /// `--ssh` forwarding for `RUN --mount=type=ssh` failed.
    #[error(transparent)]
    Ssh(#[from] crate::solver::SshError),
    /// A git URL given to COPY (only ADD fetches repositories).
    #[error("source can't be a git ref for COPY: {url} (use ADD)")]
    GitForCopy {
        /// The git URL.
        url: String,
    },
}

impl Error {
    /// The cache whose layer made the build fail, wherever in the chain the
    /// [`Error::CachedLayer`] is (a step wraps it).
    pub fn unusable_cache(&self) -> Option<&str> {
        let mut e: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = e {
            // A boxed source (`Step`'s) is a `Box<Error>` as `dyn Error`.
            let ours = err
                .downcast_ref::<Error>()
                .or_else(|| err.downcast_ref::<Box<Error>>().map(|b| &**b));
            match ours {
                Some(Error::CachedLayer { cache, .. }) => return Some(cache),
                Some(ours) => e = std::error::Error::source(ours),
                None => e = err.source(),
            }
        }
        None
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(rbuild_store::Error) -> Error {
        let what = what.into();
        move |source| Error::Store { what, source }
    }

    /// The last lines of a failed RUN's output, for the CLI to show.
    pub fn output_tail(&self) -> Option<&[String]> {
        match self {
            Error::RunFailed(f) => Some(&f.tail),
            Error::Step { source, .. } => source.output_tail(),
            _ => None,
        }
    }
}
