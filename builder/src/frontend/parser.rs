//! Dockerfile text to AST: physical lines to instructions (continuations, comments,
//! directives, heredoc bodies), each node keeping its line range and original text.

use super::directives::{Directive, DirectiveParser};
use super::error::{ErrorKind, ParseError};
use super::heredoc::{heredocs_from_line, Heredoc};
use super::json::{parse_json_array, parse_words, split_whitespace_n, JsonArray};

/// One instruction as parsed, before any typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`...).
    pub keyword: String,
    /// Flags (`--from=x`, `--link`) in source order, as written.
    pub flags: Vec<String>,
    /// Arguments: see the dump format (exec-form elements, one shell-form string,
    /// ENV/LABEL triples, words).
    pub args: Vec<String>,
    /// The instruction inside `ONBUILD`.
    pub inner: Option<Box<Node>>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// Heredocs opened on this instruction, with their bodies.
    pub heredocs: Vec<Heredoc>,
    /// First line (1-based).
    pub start_line: usize,
    /// Last line, heredoc bodies included.
    pub end_line: usize,
    /// The instruction text with continuations joined.
    pub original: String,
    /// Comment lines right before the instruction.
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword in upper case.
    pub fn name(&self) -> String {
        self.keyword.to_ascii_uppercase()
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The file name used in errors.
    pub file: String,
    /// Instructions in file order.
    pub children: Vec<Node>,
    /// The escape character in effect.
    pub escape: char,
    /// Parser directives at the top.
    pub directives: Vec<Directive>,
    /// The first lines of instructions with an empty continuation line (the
    /// NoEmptyContinuation check).
    pub empty_continuations: Vec<usize>,
    /// The physical lines, for error excerpts.
    pub lines: Vec<String>,
}

impl Document {
    /// A located error at `line` (1-based), column `column`.
    pub fn error(&self, line: usize, column: usize, kind: ErrorKind) -> ParseError {
        located(&self.file, &self.lines, line, column, kind)
    }
}

fn located(
    file: &str,
    lines: &[String],
    line: usize,
    column: usize,
    kind: ErrorKind,
) -> ParseError {
    let text = line
        .checked_sub(1)
        .and_then(|i| lines.get(i))
        .map(|l| l.trim_end_matches(['\r', '\n']).to_string())
        .unwrap_or_default();
    ParseError {
        file: file.to_string(),
        line: line.max(1),
        column: column.max(1),
        source_line: text,
        kind: Box::new(kind),
    }
}

struct State {
    escape: char,
    directives: DirectiveParser,
}

impl State {
    fn directive(&mut self, line: &str) -> Result<(), ErrorKind> {
        if let Some(d) = self.directives.parse_line(line)? {
            if d.name == "escape" {
                let value = d.value.clone();
                self.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return Err(ErrorKind::InvalidEscape(value)),
                };
            }
        }
        Ok(())
    }

    /// Removes a trailing continuation (escape, then blanks); says whether the line ends.
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        let trimmed = line.trim_end_matches([' ', '\t']);
        if let Some(before) = trimmed.strip_suffix(self.escape) {
            if before.is_empty() || !before.ends_with(self.escape) {
                return (before.to_string(), false);
            }
        }
        (line.to_string(), true)
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_end_matches(['\r', '\n'])
        .trim_start()
        .starts_with('#')
}

/// Trims the newline (and left blanks), feeds the directive parser, drops comment text.
fn process_line(state: &mut State, raw: &str, strip_left: bool) -> Result<String, ErrorKind> {
    let mut token = raw.trim_end_matches(['\r', '\n']);
    if strip_left {
        token = token.trim_start();
    }
    state.directive(token)?;
    Ok(if is_comment(token) {
        String::new()
    } else {
        token.to_string()
    })
}

/// Parses Dockerfile bytes (`file` names it in errors).
pub fn parse(file: &str, input: &[u8]) -> Result<Document, ParseError> {
    let text = String::from_utf8_lossy(input);
    let lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let err = |line: usize, column: usize, kind| located(file, &lines, line, column, kind);
    let mut state = State {
        escape: '\\',
        directives: DirectiveParser::new(0),
    };
    let mut children = Vec::new();
    let mut empty_continuations = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut idx = 0;
    while idx < lines.len() {
        let mut raw = lines[idx].as_str();
        if idx == 0 {
            raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        }
        idx += 1;
        let line_no = idx;
        if is_comment(raw) {
            let c = raw.trim_start().trim_start_matches('#').trim();
            comments.push(c.to_string());
        }
        let processed = process_line(&mut state, raw, true).map_err(|k| err(line_no, 1, k))?;
        let start_line = line_no;
        let (mut line, mut end) = state.trim_continuation(&processed);
        if end && line.is_empty() {
            continue;
        }
        let mut empty_continuation = false;
        while !end && idx < lines.len() {
            let raw = lines[idx].as_str();
            idx += 1;
            let processed = process_line(&mut state, raw, false).map_err(|k| err(idx, 1, k))?;
            if is_comment(raw) {
                continue;
            }
            if processed.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (cont, e) = state.trim_continuation(&processed);
            end = e;
            line.push_str(&cont);
        }
        if empty_continuation {
            empty_continuations.push(start_line);
        }
        let mut node = node_from_line(&line, state.escape).map_err(|k| err(start_line, 1, k))?;
        if can_contain_heredoc(&node) && line.contains("<<") {
            let docs = heredocs_from_line(&line).map_err(|k| err(start_line, 1, k))?;
            for mut doc in docs {
                let mut terminated = false;
                while idx < lines.len() {
                    let raw = lines[idx].as_str();
                    idx += 1;
                    let mut possible = raw.trim_end_matches(['\r', '\n']);
                    if doc.chomp {
                        possible = possible.trim_start_matches('\t');
                    }
                    if possible == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(raw);
                }
                if !terminated {
                    let name = doc.name.clone();
                    return Err(err(start_line, 1, ErrorKind::UnterminatedHeredoc { name }));
                }
                node.heredocs.push(doc);
            }
        }
        node.start_line = start_line;
        node.end_line = idx;
        if let Some(inner) = node.inner.as_mut() {
            inner.start_line = start_line;
            inner.end_line = idx;
        }
        node.comments = std::mem::take(&mut comments);
        children.push(node);
    }
    if children.is_empty() {
        return Err(err(lines.len(), 1, ErrorKind::NoInstructions));
    }
    Ok(Document {
        file: file.to_string(),
        children,
        escape: state.escape,
        directives: state.directives.parsed().to_vec(),
        empty_continuations,
        lines,
    })
}

fn can_contain_heredoc(node: &Node) -> bool {
    let node = match &node.inner {
        Some(inner) if node.keyword.eq_ignore_ascii_case("onbuild") => inner,
        _ => node,
    };
    let k = node.keyword.to_ascii_lowercase();
    matches!(k.as_str(), "add" | "copy" | "run") && !node.json
}

/// Splits a joined instruction line into keyword, flags and arguments.
pub(crate) fn node_from_line(line: &str, escape: char) -> Result<Node, ErrorKind> {
    let parts = split_whitespace_n(line.trim(), 2);
    let keyword = parts[0].clone();
    let (rest, flags) = match parts.get(1) {
        Some(rest) => {
            let (rest, flags) = extract_flags(rest);
            (rest.trim().to_string(), flags)
        }
        None => (String::new(), Vec::new()),
    };
    let mut node = Node {
        keyword: keyword.clone(),
        flags,
        args: Vec::new(),
        inner: None,
        json: false,
        heredocs: Vec::new(),
        start_line: 0,
        end_line: 0,
        original: line.to_string(),
        comments: Vec::new(),
    };
    let lower = keyword.to_ascii_lowercase();
    let not_strings = || ErrorKind::NotStringArray {
        instruction: keyword.to_ascii_uppercase(),
    };
    match lower.as_str() {
        "add" | "copy" | "volume" => match parse_json_array(&rest) {
            JsonArray::Strings(v) => {
                node.args = v;
                node.json = true;
            }
            JsonArray::NotStrings => return Err(not_strings()),
            JsonArray::NotJson => node.args = whitespace_delimited(&rest),
        },
        "cmd" | "entrypoint" | "run" | "shell" => {
            (node.args, node.json) = maybe_json(&rest).ok_or_else(not_strings)?;
        }
        "arg" => node.args = parse_words(&rest, escape),
        "env" | "label" => node.args = name_values(&rest, &keyword, escape)?,
        "expose" | "from" => node.args = whitespace_delimited(&rest),
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.args = vec![rest];
            }
        }
        "healthcheck" => {
            let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if sep > 0 {
                let cmd = rest[sep..].trim_start();
                let (args, json) = maybe_json(cmd).ok_or_else(not_strings)?;
                node.args.push(rest[..sep].to_string());
                node.args.extend(args);
                node.json = json;
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                node.inner = Some(Box::new(node_from_line(&rest, escape)?));
            }
        }
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

/// Exec form when `rest` is a JSON array of strings, else one shell-form argument;
/// `None` for a JSON array of non-strings.
fn maybe_json(rest: &str) -> Option<(Vec<String>, bool)> {
    if rest.is_empty() {
        return Some((Vec::new(), false));
    }
    match parse_json_array(rest) {
        JsonArray::Strings(v) => Some((v, true)),
        JsonArray::NotStrings => None,
        JsonArray::NotJson => Some((vec![rest.to_string()], false)),
    }
}

fn whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_whitespace_n(rest, 0)
}

/// ENV/LABEL: `key value` (old form) or `k=v k2=v2`, as `key, value, marker` triples.
fn name_values(rest: &str, keyword: &str, escape: char) -> Result<Vec<String>, ErrorKind> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let parts = split_whitespace_n(rest, 2);
        let [key, value] = parts.as_slice() else {
            return Err(ErrorKind::MissingValue {
                instruction: keyword.to_ascii_uppercase(),
            });
        };
        return Ok(vec![key.clone(), value.clone(), String::new()]);
    }
    let mut out = Vec::new();
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(ErrorKind::MissingEquals { word });
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// Leading `--flag[=value]` words; returns the rest of the line and the flags.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let is_space = |c: u8| matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0);
    let rest_from = |pos: usize| String::from_utf8_lossy(&b[pos..]).into_owned();
    let finish = |w: &[u8]| String::from_utf8_lossy(w).into_owned();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<u8> = Vec::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= b.len() {
        let at_end = pos == b.len();
        let mut ch = if at_end { 0 } else { b[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (rest_from(pos), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != b"--" && (blank_ok || !word.is_empty()) {
                words.push(finish(&word));
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if word == b"--" {
                    return (rest_from(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(finish(&word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if ch == b'\\' {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = b[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if ch == b'\\' {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = b[pos];
        }
        word.push(ch);
        pos += 1;
    }
    (String::new(), words)
}
