//! Exit codes: 0 ok, 1 build or registry failure, 2 usage error.

use std::fmt;

/// A mistake in how rbuild was called (bad flag value, missing file named on the command
/// line, a command that does not exist yet). Exits 2, as clap's own usage errors do.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The exit code for an error that reached `main`.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<UsageError>()) {
        2
    } else {
        1
    }
}

/// A closed stdout (`rbuild images | head -1`) is not a failure (ripgrep's rule): true when
/// any error in the chain is a broken pipe, including one serde_json wrapped while writing.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(BrokenPipe))
    })
}
