//! The Dockerfile frontend: text to AST (with spans) to typed stages and the step graph.

pub mod directives;
pub mod dump;
mod error;
pub mod heredoc;
pub mod json;
pub mod parser;
pub mod shell;

pub use error::{ErrorKind, ParseError};
pub use heredoc::Heredoc;
pub use parser::{parse, Document, Node};
pub use shell::{Env, ExpandError, Expansion, Lexer};
