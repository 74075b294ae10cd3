//! The frontend's error: what is wrong with a Dockerfile, and where.

use super::shell::ExpandError;

/// An error in a Dockerfile: the file, the 1-based line and column, that line's text, and
/// what is wrong.
#[derive(Debug)]
pub struct ParseError {
    /// The Dockerfile's name as the user gave it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The text of that line (empty when there is none, e.g. an empty file).
    pub source_line: String,
    /// What is wrong.
    pub kind: Box<ErrorKind>,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.kind)?;
        f.write_str(&excerpt(self.line, self.column, &self.source_line))
    }
}

impl std::error::Error for ParseError {
    /// The kind's own cause (e.g. why a word cannot be expanded); the kind itself is
    /// already part of the message.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.kind)
    }
}

fn excerpt(line: usize, column: usize, text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    let pad = " ".repeat(column.saturating_sub(1));
    format!("\n{line:>5} | {text}\n      | {pad}^")
}

/// What is wrong with a Dockerfile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing but comments, directives and blank lines.
    #[error("file with no instructions")]
    NoInstructions,
    /// `# escape=` with something other than `\` or `` ` ``.
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscape(String),
    /// A parser directive given twice.
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    /// A JSON array holding something other than strings.
    #[error("{instruction}: not a JSON array of strings")]
    NotStringArray {
        /// The instruction keyword.
        instruction: String,
    },
    /// `ENV name` / `LABEL name` without a value.
    #[error("{instruction} must have two arguments")]
    MissingValue {
        /// The instruction keyword.
        instruction: String,
    },
    /// A `key=value` list with a word lacking `=`.
    #[error("syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    MissingEquals {
        /// The word without `=`.
        word: String,
    },
    /// A heredoc whose delimiter line never comes.
    #[error("unterminated heredoc {name:?}")]
    UnterminatedHeredoc {
        /// The delimiter looked for.
        name: String,
    },
    /// A heredoc delimiter that cannot be read (unbalanced quotes).
    #[error("invalid heredoc delimiter {word:?}")]
    BadHeredoc {
        /// The word as written.
        word: String,
        /// The lexer's complaint.
        #[source]
        source: ExpandError,
    },
    /// A keyword that is not a Dockerfile instruction.
    #[error("unknown instruction {name:?}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    UnknownInstruction {
        /// The word as written.
        name: String,
        /// The closest instruction, when one is close.
        suggestion: Option<String>,
    },
    /// Too few (or too many) arguments.
    #[error("{instruction} requires {expected}")]
    Arguments {
        /// The instruction keyword.
        instruction: String,
        /// e.g. `at least two arguments`.
        expected: String,
    },
    /// A flag the instruction does not know.
    #[error("unknown flag: --{flag} for {instruction}")]
    UnknownFlag {
        /// The instruction keyword.
        instruction: String,
        /// The flag name.
        flag: String,
    },
    /// A flag with a bad or missing value, or given twice.
    #[error("flag --{flag}: {problem}")]
    BadFlag {
        /// The flag name.
        flag: String,
        /// What is wrong.
        problem: String,
    },
    /// A word that cannot be expanded.
    #[error("cannot expand")]
    Expand(#[source] ExpandError),
    /// An instruction other than ARG before the first FROM.
    #[error("{instruction} cannot come before the first FROM")]
    BeforeFrom {
        /// The instruction keyword.
        instruction: String,
    },
    /// A Dockerfile without any FROM.
    #[error("no build stage: a Dockerfile needs at least one FROM")]
    NoStage,
    /// A stage name used twice.
    #[error("duplicate stage name {0:?}")]
    DuplicateStage(String),
    /// A stage name that is not a valid name.
    #[error("invalid stage name {0:?}: must start with a letter and contain only letters, digits, '-', '_' and '.'")]
    InvalidStageName(String),
    /// A stage used before it is defined, or by itself.
    #[error("stage {name:?} cannot be used here: it is not defined before this stage")]
    ForwardStage {
        /// The stage named.
        name: String,
    },
    /// `--target` naming no stage.
    #[error("target stage {0:?} could not be found")]
    UnknownTarget(String),
    /// A value that is not valid for what it sets (signal, duration, mount option...).
    #[error("invalid {what}: {value:?}")]
    InvalidValue {
        /// What the value is for.
        what: String,
        /// The value.
        value: String,
    },
}
