//! The Dockerfile frontend: text to AST (with spans) to typed stages and the step graph.

/// An error in a Dockerfile: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    /// The Dockerfile's name as the user gave it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}
