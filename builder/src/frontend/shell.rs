//! Shell-word expansion and word splitting with the semantics of BuildKit's Dockerfile lexer.
//!
//! Handles `$V ${V} ${V:-x} ${V-x} ${V:+x} ${V+x} ${V:?m} ${V?m} ${V#p} ${V##p} ${V%p}
//! ${V%%p} ${V/p/r} ${V//p/r}`, single and double quotes, the active escape character, and
//! splitting of unquoted text and expansion results into words.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where variable values come from during an expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is not set (set-but-empty is `Some("")`).
    fn lookup(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn lookup(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Env for [(String, String)] {
    /// The last pair with that name wins, like a later `ENV` line.
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.as_slice().lookup(name)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A quote that is never closed.
    #[error("failed to process {word:?}: unexpected end of statement while looking for matching {quote}")]
    Unterminated {
        /// The word being expanded.
        word: String,
        /// `single-quote`, `double-quote` or the character looked for.
        quote: String,
    },
    /// `${` with no closing `}` (or `${V/p` with no second `/`).
    #[error("failed to process {word:?}: syntax error: missing '{missing}'")]
    Missing {
        /// The word being expanded.
        word: String,
        /// The character that is missing.
        missing: char,
    },
    /// `${}`, `${:x}` or `${{x}`.
    #[error("failed to process {word:?}: syntax error: bad substitution")]
    BadSubstitution {
        /// The word being expanded.
        word: String,
    },
    /// A modifier such as `${V=x}` that BuildKit does not support.
    #[error("failed to process {word:?}: unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier {
        /// The word being expanded.
        word: String,
        /// The modifier as written.
        modifier: String,
    },
    /// `${V?msg}` / `${V:?msg}` with `V` unset (or empty).
    #[error("failed to process {word:?}: {name}: {message}")]
    Required {
        /// The word being expanded.
        word: String,
        /// The variable.
        name: String,
        /// The message given, or the default one.
        message: String,
    },
    /// A pattern in `${V#p}`, `${V%p}` or `${V/p/r}` that cannot be used.
    #[error("failed to process {word:?}: invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The word being expanded.
        word: String,
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The full outcome of one expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The word after quote removal and expansion, without splitting.
    pub result: String,
    /// The same, split into words.
    pub words: Vec<String>,
    /// Variables referenced that were set.
    pub matched: BTreeSet<String>,
    /// Variables referenced that were not set.
    pub unmatched: BTreeSet<String>,
}

/// A shell-word lexer for one escape character and a set of modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with escape character `escape` (`\` or `` ` ``) and default modes.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Keeps quote characters in the result (they still group words).
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keeps escape characters in the result.
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Treats quotes as ordinary characters (used for heredoc bodies).
    pub fn skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Leaves references to unset variables as written.
    pub fn skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Expands `word`, returning the single word, the split words and the names it used.
    pub fn expand(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        let mut scan = Scan {
            lex: self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: self.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match scan.process_stop_on(None, self.raw_escapes) {
            Ok((result, words)) => Ok(Expansion {
                result,
                words,
                matched: scan.matched,
                unmatched: scan.unmatched,
            }),
            Err(fail) => Err(fail.into_error(word)),
        }
    }

    /// Expands `word` as one word (no splitting).
    pub fn expand_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        self.expand(word, env).map(|e| e.result)
    }

    /// Expands `word` and splits the result into words.
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        self.expand(word, env).map(|e| e.words)
    }
}

/// A failure before the word is known to the error.
enum Fail {
    Unterminated(String),
    Missing(char),
    BadSubstitution,
    UnsupportedModifier(String),
    Required(String, String),
    InvalidPattern(String, String),
}

impl Fail {
    fn into_error(self, word: &str) -> ExpandError {
        let word = word.to_string();
        match self {
            Fail::Unterminated(quote) => ExpandError::Unterminated { word, quote },
            Fail::Missing(missing) => ExpandError::Missing { word, missing },
            Fail::BadSubstitution => ExpandError::BadSubstitution { word },
            Fail::UnsupportedModifier(modifier) => {
                ExpandError::UnsupportedModifier { word, modifier }
            }
            Fail::Required(name, message) => ExpandError::Required {
                word,
                name,
                message,
            },
            Fail::InvalidPattern(pattern, reason) => ExpandError::InvalidPattern {
                word,
                pattern,
                reason,
            },
        }
    }
}

/// Words being accumulated while scanning.
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct Scan<'a> {
    lex: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v)
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let out = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        out
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Fail> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            let special = match ch {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' if !self.lex.skip_process_quotes => Some(self.process_single_quote()?),
                '"' if !self.lex.skip_process_quotes => Some(self.process_double_quote()?),
                _ => None,
            };
            if let Some(tmp) = special {
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            self.next();
            if ch == self.lex.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                let Some(escaped) = self.next() else {
                    break;
                };
                words.add_raw_char(escaped);
                result.push(escaped);
            } else {
                words.add_char(ch);
                result.push(ch);
            }
        }
        match stop {
            Some(c) => Err(Fail::Unterminated(c.to_string())),
            None => Ok((result, words.finish())),
        }
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut out = "<<".to_string();
        while let Some(c) = self.peek().filter(|c| is_blank(*c)) {
            out.push(c);
            self.next();
        }
        out
    }

    fn process_single_quote(&mut self) -> Result<String, Fail> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(Fail::Unterminated("single-quote".into())),
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, Fail> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(Fail::Unterminated("double-quote".into())),
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                ch = n;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, Fail> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            let value = self.get_env(&name);
            return Ok(match value {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(Fail::Missing('}')),
            Some('{' | '}' | ':') => return Err(Fail::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut modifier: String = first.map(String::from).unwrap_or_else(|| "\u{fffd}".into());
        match first {
            Some('}') => {
                let value = self.get_env(&name);
                Ok(match value {
                    Some(v) => v,
                    None if self.lex.skip_unset_env => format!("${{{name}}}"),
                    None => String::new(),
                })
            }
            Some(c @ (':' | '+' | '-' | '?' | '#' | '%')) => {
                let mut null_is_unset = false;
                let mut op = Some(c);
                if c == ':' {
                    null_is_unset = true;
                    op = self.next();
                    modifier.extend(op);
                }
                let raw = matches!(op, Some('#' | '%'));
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(fail) => {
                        return Err(if self.peek().is_none() {
                            Fail::Missing('}')
                        } else {
                            fail
                        })
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset_or_null =
                    value.is_none() || (null_is_unset && value.as_deref() == Some(""));
                match op {
                    Some('-') => Ok(if unset_or_null {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    Some('+') => Ok(if unset_or_null { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(Fail::Required(
                            name,
                            if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            },
                        )),
                        Some(v) if null_is_unset && v.is_empty() => Err(Fail::Required(
                            name,
                            if word.is_empty() {
                                "is not allowed to be empty".into()
                            } else {
                                word
                            },
                        )),
                        Some(v) => Ok(v),
                    },
                    Some(o @ ('%' | '#')) if !null_is_unset => {
                        let value = value.unwrap_or_default();
                        let (pattern, greedy) = match word.strip_prefix(o) {
                            Some(rest) => (rest.to_string(), true),
                            None => (word, false),
                        };
                        if o == '%' {
                            trim_suffix(&pattern, &value, greedy)
                        } else {
                            trim_prefix(&pattern, &value, greedy)
                        }
                    }
                    _ => Err(Fail::UnsupportedModifier(modifier)),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((p, _)) => p,
                    Err(fail) => {
                        return Err(if self.peek().is_none() {
                            Fail::Missing('/')
                        } else {
                            fail
                        })
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((r, _)) => r,
                    Err(fail) => {
                        return Err(if self.peek().is_none() {
                            Fail::Missing('}')
                        } else {
                            fail
                        })
                    }
                };
                let value = self.get_env(&name);
                let Some(value) = value else {
                    if self.lex.skip_unset_env {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return replace(&pattern, "", &replacement, replace_all);
                };
                replace(&pattern, &value, &replacement, replace_all)
            }
            _ => Err(Fail::UnsupportedModifier(modifier)),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Converts a shell wildcard pattern (`*`, `?`, `\` escapes) into a regular expression.
fn pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<regex::Regex, Fail> {
    let invalid = |reason: String| Fail::InvalidPattern(pattern.to_string(), reason);
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(c @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(c);
                    }
                    Some(c) => return Err(invalid(format!("invalid escape '\\{c}'"))),
                    None => return Err(invalid("invalid escape at end of pattern".into())),
                }
            }
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    regex::Regex::new(&out).map_err(|e| invalid(e.to_string()))
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, Fail> {
    let re = pattern_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern, keeping each `\x` escape pair in order (`a\*c` gives `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            units.push([chars[i], chars[i + 1]].iter().collect());
            i += 2;
        } else {
            units.push(chars[i].to_string());
            i += 1;
        }
    }
    units.reverse();
    units.concat()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, Fail> {
    let reversed: String = value.chars().rev().collect();
    let out = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(out.chars().rev().collect())
}

fn replace(pattern: &str, value: &str, replacement: &str, all: bool) -> Result<String, Fail> {
    let re = pattern_regex(pattern, true, false)?;
    if all {
        return Ok(re.replace_all(value, replacement).into_owned());
    }
    Ok(match re.find(value) {
        Some(m) => format!(
            "{}{}{}",
            &value[..m.start()],
            replacement,
            &value[m.end()..]
        ),
        None => value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![("A".into(), "a b".into()), ("E".into(), String::new())]
    }

    #[test]
    fn expands_and_splits() {
        let lex = Lexer::new('\\');
        assert_eq!(lex.expand_word("x$A'$A'", &env()).unwrap(), "xa b$A");
        assert_eq!(
            lex.expand_words("x$A \"$A\"", &env()).unwrap(),
            ["xa", "b", "a b"]
        );
        assert_eq!(lex.expand_word("${E:-d}${E-d}", &env()).unwrap(), "d");
    }

    #[test]
    fn reports_matches() {
        let e = Lexer::new('\\').expand("$A ${B}", &env()).unwrap();
        assert!(e.matched.contains("A") && e.unmatched.contains("B"));
    }

    #[test]
    fn errors_name_the_word() {
        let err = Lexer::new('\\')
            .expand_word("${B:?nope}", &env())
            .unwrap_err();
        assert_eq!(err.to_string(), "failed to process \"${B:?nope}\": B: nope");
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        assert_eq!(lex.expand_word("a`$A\\", &env()).unwrap(), "a$A\\");
    }
}
