//! Parser directives (`# escape=`, `# syntax=`, `# check=`) at the top of a Dockerfile.

use std::sync::LazyLock;

use regex::Regex;

use super::error::ErrorKind;

static HASH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$")
        .expect("static regex")
});
static SLASHES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^//[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$")
        .expect("static regex")
});

const KNOWN: [&str; 3] = ["escape", "syntax", "check"];

/// One parser directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The name, lower case.
    pub name: String,
    /// Everything after `=`, trimmed.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// Reads directive lines until the first line that is not a known directive.
#[derive(Debug)]
pub struct DirectiveParser {
    slashes: bool,
    skip_shebang: bool,
    line: usize,
    done: bool,
    parsed: Vec<Directive>,
}

impl DirectiveParser {
    /// A parser for `#` directives, counting lines from `first_line`.
    pub fn new(first_line: usize) -> Self {
        Self {
            slashes: false,
            skip_shebang: false,
            line: first_line,
            done: false,
            parsed: Vec::new(),
        }
    }

    /// The directives seen so far.
    pub fn parsed(&self) -> &[Directive] {
        &self.parsed
    }

    /// Feeds one line (without its newline); returns the directive it holds, if any.
    pub fn parse_line(&mut self, line: &str) -> Result<Option<&Directive>, ErrorKind> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        if self.skip_shebang && self.line == 1 && line.starts_with("#!") {
            return Ok(None);
        }
        let re = if self.slashes { &SLASHES } else { &HASH };
        let Some(caps) = re.captures(line) else {
            self.done = true;
            return Ok(None);
        };
        let name = caps[1].to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.parsed.iter().any(|d| d.name == name) {
            return Err(ErrorKind::DuplicateDirective(name));
        }
        self.parsed.push(Directive {
            name,
            value: caps[2].to_string(),
            line: self.line,
        });
        Ok(self.parsed.last())
    }

    /// Parses every directive at the top of `text`.
    pub fn parse_all(mut self, text: &str) -> Result<Vec<Directive>, ErrorKind> {
        for line in text.lines() {
            if self.done {
                break;
            }
            self.parse_line(line)?;
        }
        Ok(self.parsed)
    }
}

/// A directive found by [`find_directive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDirective {
    /// The first word of the value (e.g. the frontend reference of `syntax`).
    pub value: String,
    /// The whole value as written.
    pub cmdline: String,
    /// 1-based line.
    pub line: usize,
}

/// Finds directive `key` at the top of a Dockerfile, skipping a byte order mark and a `#!`
/// line. With `any_format`, `// key=value` and a JSON first line `{"key": ...}` count too
/// (BuildKit accepts those for `syntax` only).
pub fn find_directive(key: &str, text: &str, any_format: bool) -> Option<FoundDirective> {
    let mut text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut first_line = 0;
    if text.starts_with("#!") {
        text = text.split_once('\n').map(|(_, rest)| rest).unwrap_or("");
        first_line = 1;
    }
    let found = |d: &Directive| FoundDirective {
        value: d.value.split(' ').next().unwrap_or_default().to_string(),
        cmdline: d.value.clone(),
        line: d.line,
    };
    if let Ok(ds) = DirectiveParser::new(first_line).parse_all(text) {
        if let Some(d) = ds.iter().find(|d| d.name == key) {
            return Some(found(d));
        }
    }
    if !any_format {
        return None;
    }
    let mut slashes = DirectiveParser::new(first_line);
    slashes.slashes = true;
    if let Ok(ds) = slashes.parse_all(text) {
        if let Some(d) = ds.iter().find(|d| d.name == key) {
            return Some(found(d));
        }
    }
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let value = json.get(key)?.as_str()?.to_string();
    Some(FoundDirective {
        value: value.clone(),
        cmdline: value,
        line: first_line + 1,
    })
}

/// The `syntax` directive (frontend image reference), in any of its accepted forms.
pub fn detect_syntax(text: &str) -> Option<FoundDirective> {
    find_directive("syntax", text, true)
}
