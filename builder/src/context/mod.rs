//! The build context: `.dockerignore`, the walk of the context directory, source selection
//! for COPY/ADD, content digests and the stat cache that makes them cheap.

pub mod glob;
mod ignore;
pub mod pathclean;
mod walk;

use std::path::PathBuf;

pub use ignore::{find_ignore_file, load_ignore_rules, parse_ignore_file, IgnoreRules};
pub use walk::{ContextEntry, ContextFiles, EntryKind};

/// An error reading the build context or its ignore rules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// A filesystem operation in the context failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `.dockerignore` line that is only `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    BareExclamation,
    /// A malformed `.dockerignore` pattern such as `[a-b-c]`.
    #[error("syntax error in pattern \"{pattern}\"")]
    BadPattern {
        /// The cleaned pattern, without its `!`.
        pattern: String,
    },
    /// An ignore file whose patterns are wrong.
    #[error("invalid ignore file {}", path.display())]
    IgnoreFile {
        /// The ignore file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<ContextError>,
    },
    /// The context path is not a directory.
    #[error("build context {} is not a directory", path.display())]
    NotADirectory {
        /// The path given as context.
        path: PathBuf,
    },
}
