//! The build context: `.dockerignore`, the walk of the context directory, source selection
//! for COPY/ADD, content digests and the stat cache that makes them cheap.

mod digest;
mod entry;
pub mod glob;
mod ignore;
pub mod pathclean;
mod select;
mod statcache;
mod table;
mod walk;

use std::path::PathBuf;

pub(crate) use digest::source_entries;
pub use digest::{digest_sources, hash_file, ContentDigest, SourceDigest};
pub use entry::{EntryKind, EntryStat};
pub use ignore::{find_ignore_file, load_ignore_rules, parse_ignore_file, IgnoreRules};
pub use select::{select_sources, SelectedSource};
pub use statcache::{StatCache, StatCacheStats};
pub use table::ContextEntry;
pub use walk::ContextFiles;

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
    /// A bad pattern in an ignore file, by line.
    #[error("line {line}")]
    IgnoreLine {
        /// 1-based line.
        line: usize,
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
    /// A wildcard source that matches nothing.
    #[error("no source files were specified (nothing matches {pattern:?})")]
    NoSourceFiles {
        /// The source argument.
        pattern: String,
    },
    /// A source path that is not in the context (or is excluded by `.dockerignore`).
    #[error("file not found in build context or excluded by .dockerignore: stat {path}")]
    SourceNotFound {
        /// The source argument.
        path: String,
    },
    /// A context whose relative paths take more than 4 GiB together.
    #[error("build context too large: its paths take more than 4 GiB")]
    TooLarge,
    /// A source that goes through too many symlinks.
    #[error("too many levels of symbolic links resolving {path}")]
    SymlinkLoop {
        /// The source argument.
        path: String,
    },
}
