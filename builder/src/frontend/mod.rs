//! The Dockerfile frontend: text to AST (with spans) to typed stages and the step graph.

pub mod directives;
pub mod dump;
mod error;
mod flags;
pub mod heredoc;
pub mod instructions;
pub mod json;
pub mod parser;
pub mod shell;
pub mod stages;
#[cfg(test)]
mod tests;

pub use error::{ErrorKind, ParseError};
pub use heredoc::Heredoc;
pub use instructions::{Instruction, ShellOrExec};
pub use parser::{parse, Document, Node};
pub use shell::{Env, ExpandError, Expansion, Lexer};
pub use stages::{Base, Location, Platform, Scope, Stage, Step, StepGraph};
