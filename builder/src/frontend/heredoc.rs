//! Heredocs: recognising `<<EOF`-style words and reading their bodies' attributes.

use std::sync::LazyLock;

use regex::Regex;

use super::error::ErrorKind;
use super::shell::Lexer;

static HEREDOC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)$").expect("static regex"));

/// One heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, quotes removed.
    pub name: String,
    /// The body lines, each with its newline, before any tab stripping.
    pub content: String,
    /// The file descriptor written before `<<` (0 when none).
    pub fd: u32,
    /// False when any part of the delimiter was quoted: the body is not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body (see [`chomp_heredoc`]).
    pub chomp: bool,
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Reads `word` as a heredoc redirection: `Ok(None)` when it is not one, an error when it
/// is one with unbalanced quotes.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ErrorKind> {
    let Some(caps) = HEREDOC.captures(word) else {
        return Ok(None);
    };
    let fd = caps[1].parse().unwrap_or(0);
    let chomp = &caps[2] == "-";
    let rest = &caps[3];
    if rest.is_empty() {
        return Ok(None);
    }
    let bad = |source| ErrorKind::BadHeredoc {
        word: word.to_string(),
        source,
    };
    let lex = Lexer::new('\\').skip_unset_env(true);
    let words = lex.expand_words(rest, &no_env).map_err(bad)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = lex
        .raw_quotes(true)
        .expand_words(rest, &no_env)
        .map_err(bad)?;
    let [raw_name] = raw.as_slice() else {
        return Ok(None);
    };
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        fd,
        expand: quotes(name) == quotes(raw_name),
        chomp,
    }))
}

/// The heredocs an instruction line opens, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ErrorKind> {
    let lex = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    let words = lex.expand_words(line, &no_env).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Removes leading tabs from every line (`<<-`).
pub fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}
