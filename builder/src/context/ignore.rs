//! `.dockerignore` rules: the ignore file's syntax and moby's pattern matcher (patterns
//! compiled to `regex`, parent directories matching, last match wins, `!` exceptions).
//!
//! A pattern is cleaned like a path; `*` stops at `/`, `**` spans any number of
//! directories (also none), `?` is one character, `[...]` a class, `\` escapes. A path is
//! excluded when it or one of its parent directories matches and the last pattern that
//! applies is not an exception. Malformed patterns are errors when the rules are built.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::{glob, pathclean, ContextError};

/// One compiled `.dockerignore` pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern without its `!`.
    text: String,
    /// A `!` pattern: re-includes what earlier patterns excluded.
    exception: bool,
    how: MatchKind,
}

/// How a pattern is matched; the same split moby makes, since it decides edge cases such
/// as `**file` matching `dirfile`.
#[derive(Debug, Clone)]
enum MatchKind {
    /// No wildcard: the path equals the pattern.
    Exact,
    /// `prefix/**`: the path starts with `prefix/`.
    Prefix(String),
    /// `**suffix` with no other wildcard: the path ends with `suffix`.
    Suffix(String),
    Regex(Regex),
    /// A pattern that is valid glob syntax but has no regex (a reversed range such as
    /// `[z-a]`); like moby it fails when it is evaluated.
    Broken,
}

/// The patterns of a `.dockerignore`, compiled, in order.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

impl IgnoreRules {
    /// Compiles `patterns` in order: each is trimmed, empty ones are skipped, a leading `!`
    /// makes an exception. A bare `!` or a malformed glob is an error naming the pattern.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ContextError> {
        let mut compiled = Vec::with_capacity(patterns.len());
        for raw in patterns {
            compiled.extend(Pattern::compile(raw.as_ref())?);
        }
        Ok(Self { patterns: compiled })
    }

    /// Parses the text of a `.dockerignore` file and compiles its patterns; an error
    /// names the 1-based line.
    pub fn parse(content: &str) -> Result<Self, ContextError> {
        let mut compiled = Vec::new();
        for (line, raw) in parse_lines(content) {
            let pattern = Pattern::compile(&raw).map_err(|source| ContextError::IgnoreLine {
                line,
                source: Box::new(source),
            })?;
            compiled.extend(pattern);
        }
        Ok(Self { patterns: compiled })
    }

    /// No patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether any pattern is an exception (`!`).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Is the slash-separated context path `path` excluded? It is when it or a parent
    /// directory matches and the last pattern that applies is not an exception. The
    /// context root (`.`) is never excluded. (moby's `MatchesOrParentMatches`.)
    pub fn is_excluded(&self, path: &str) -> Result<bool, ContextError> {
        if self.patterns.is_empty() {
            return Ok(false);
        }
        let file = pathclean::clean(path);
        if file == "." {
            return Ok(false);
        }
        let parent = pathclean::dir(&file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            // An inclusion cannot change an already excluded path, nor an exception an
            // included one.
            if pattern.exception != matched {
                continue;
            }
            let mut hit = pattern.matches(&file)?;
            if !hit && parent != "." {
                for i in 0..parent_dirs.len() {
                    // moby ignores errors on parents; the file's own match reported it.
                    if pattern
                        .matches(&parent_dirs[..=i].join("/"))
                        .unwrap_or(false)
                    {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exception;
            }
        }
        Ok(matched)
    }

    /// Could an exception pattern match some path strictly below the directory `dir`?
    /// When it cannot, an excluded `dir` is pruned from a walk without reading it. The
    /// answer is conservative: a pattern is checked by its literal prefix only.
    pub fn exception_may_match_below(&self, dir: &str) -> bool {
        let dir_slash = format!("{}/", pathclean::clean(dir));
        self.patterns.iter().filter(|p| p.exception).any(|p| {
            let literal = literal_prefix(&p.text);
            literal.starts_with(&dir_slash) || dir_slash.starts_with(&literal)
        })
    }
}

impl Pattern {
    /// Compiles one pattern: trimmed (`None` when empty), cleaned, `!` split off.
    fn compile(raw: &str) -> Result<Option<Self>, ContextError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let cleaned = pathclean::clean(trimmed);
        let (exception, text) = match cleaned.strip_prefix('!') {
            Some("") => return Err(ContextError::BareExclamation),
            Some(rest) => (true, rest.to_string()),
            None => (false, cleaned),
        };
        if glob::validate(&text).is_err() {
            return Err(ContextError::BadPattern { pattern: text });
        }
        let how = compile(&text);
        Ok(Some(Self {
            text,
            exception,
            how,
        }))
    }

    fn matches(&self, path: &str) -> Result<bool, ContextError> {
        Ok(match &self.how {
            MatchKind::Exact => path == self.text,
            MatchKind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            MatchKind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|bare| path == bare)
            }
            MatchKind::Regex(re) => re.is_match(path),
            MatchKind::Broken => {
                return Err(ContextError::BadPattern {
                    pattern: self.text.clone(),
                })
            }
        })
    }
}

/// The part of a pattern before its first glob metacharacter or escape.
fn literal_prefix(pattern: &str) -> String {
    let end = pattern.find(['*', '?', '[', '\\']).unwrap_or(pattern.len());
    pattern[..end].to_string()
}

/// Compiles a validated pattern the way moby does (same match kinds, same regex shapes),
/// except that classes are rebuilt from their parsed ranges and escapes become literals,
/// so Rust's regex syntax (nested classes, `\<`) cannot change their meaning.
fn compile(pattern: &str) -> MatchKind {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let chars: Vec<(usize, char)> = pattern.char_indices().collect();
    let mut pos = 0;
    let mut step = 0;
    while pos < chars.len() {
        let (offset, ch) = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos).map(|c| c.1) == Some('*') => {
                pos += 1;
                // `**/` is `**`.
                if chars.get(pos).map(|c| c.1) == Some('/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if step == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => {
                if let Some(&(_, next)) = chars.get(pos) {
                    pos += 1;
                    re.push_str(&regex::escape(&next.to_string()));
                    kind = Kind::Regex;
                } else {
                    re.push_str("\\\\");
                }
            }
            '[' => {
                kind = Kind::Regex;
                let Ok(glob::Class {
                    negated,
                    ranges,
                    len: used,
                }) = glob::parse_class(&pattern[offset + 1..])
                else {
                    return MatchKind::Broken;
                };
                if ranges.iter().any(|(lo, hi)| lo > hi) {
                    return MatchKind::Broken;
                }
                re.push('[');
                if negated {
                    re.push('^');
                }
                for (lo, hi) in ranges {
                    re.push_str(&regex::escape(&lo.to_string()));
                    if hi != lo {
                        re.push('-');
                        re.push_str(&regex::escape(&hi.to_string()));
                    }
                }
                re.push(']');
                let end = offset + 1 + used;
                while pos < chars.len() && chars[pos].0 < end {
                    pos += 1;
                }
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
        step += 1;
    }
    match kind {
        Kind::Exact => MatchKind::Exact,
        Kind::Prefix => MatchKind::Prefix(pattern[..pattern.len() - 2].to_string()),
        Kind::Suffix => MatchKind::Suffix(pattern[2..].to_string()),
        Kind::Regex => {
            re.push('$');
            match Regex::new(&re) {
                Ok(re) => MatchKind::Regex(re),
                Err(_) => MatchKind::Broken,
            }
        }
    }
}

/// Parses the text of a `.dockerignore` into its patterns, as moby's `ignorefile.ReadAll`:
/// a UTF-8 byte order mark is dropped; a line starting with `#` is a comment (only at the
/// very start of the line); lines are trimmed and empty ones dropped; the path is cleaned
/// and a leading `/` removed; a `!` prefix is kept in front.
pub fn parse_ignore_file(content: &str) -> Vec<String> {
    parse_lines(content).into_iter().map(|(_, p)| p).collect()
}

/// [`parse_ignore_file`] with the 1-based line of each pattern.
fn parse_lines(content: &str) -> Vec<(usize, String)> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut patterns = Vec::new();
    for (index, line) in content.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = pathclean::clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        let pattern = if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        };
        patterns.push((index + 1, pattern));
    }
    patterns
}

/// Finds the ignore file a build with this Dockerfile uses: `<Dockerfile>.dockerignore`
/// next to the Dockerfile when it exists, else `<context>/.dockerignore`, else none.
pub fn find_ignore_file(context_dir: &Path, dockerfile: Option<&Path>) -> Option<PathBuf> {
    if let Some(dockerfile) = dockerfile {
        let mut name = dockerfile.as_os_str().to_owned();
        name.push(".dockerignore");
        let specific = PathBuf::from(name);
        if specific.is_file() {
            return Some(specific);
        }
    }
    let general = context_dir.join(".dockerignore");
    general.is_file().then_some(general)
}

/// Reads the ignore rules for a build (see [`find_ignore_file`]); no file means no rules.
pub fn load_ignore_rules(
    context_dir: &Path,
    dockerfile: Option<&Path>,
) -> Result<IgnoreRules, ContextError> {
    let Some(path) = find_ignore_file(context_dir, dockerfile) else {
        return Ok(IgnoreRules::default());
    };
    let bytes = std::fs::read(&path).map_err(|source| ContextError::Io {
        op: "read",
        path: path.clone(),
        source,
    })?;
    IgnoreRules::parse(&String::from_utf8_lossy(&bytes)).map_err(|source| {
        ContextError::IgnoreFile {
            path,
            source: Box::new(source),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(path: &str, patterns: &[&str]) -> bool {
        IgnoreRules::new(patterns)
            .unwrap()
            .is_excluded(path)
            .unwrap()
    }

    #[test]
    fn anchored_at_root_unlike_gitignore() {
        assert!(!excluded("a/foo", &["foo"]));
        assert!(!excluded("docs/README.md", &["*.md"]));
        assert!(excluded("foo", &["foo/"]));
        assert!(!excluded("src/x/y.go", &["**", "!src"]));
        assert!(excluded("dir/file", &["**file"]));
    }

    #[test]
    fn exceptions_and_order() {
        assert!(!excluded("docs/README.md", &["docs", "!docs/README.md"]));
        assert!(excluded("fileutils.go", &["!fileutils.go", "*.go"]));
        assert!(!excluded(".", &["**"]));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            IgnoreRules::new(&["!"]),
            Err(ContextError::BareExclamation)
        ));
        assert!(IgnoreRules::new(&["[a-b-c]"]).is_err());
        let reversed = IgnoreRules::new(&["[z-a]"]).unwrap();
        assert!(reversed.is_excluded("x").is_err());
    }

    #[test]
    fn nested_class_syntax_is_literal() {
        assert!(excluded("[", &["[[]"]));
        assert!(excluded("a&&b", &["a[&][&]b"]));
    }

    #[test]
    fn prune_check() {
        let rules = IgnoreRules::new(&["dir", "!dir/e*", "!x/**/y"]).unwrap();
        assert!(rules.exception_may_match_below("dir"));
        assert!(rules.exception_may_match_below("x/a"));
        assert!(!rules.exception_may_match_below("other"));
        let rules = IgnoreRules::new(&["dir", "!**/*.cc"]).unwrap();
        assert!(rules.exception_may_match_below("dir/deep"));
    }

    #[test]
    fn ignore_file_syntax() {
        let got = parse_ignore_file("\u{feff}# c\n  #x\n/abs\r\n! /inv/../p\n\n!\n./a//b/");
        assert_eq!(got, ["#x", "abs", "!p", "!", "a/b"]);
    }

    #[test]
    fn dockerfile_specific_ignore_file_wins() {
        let context = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(context.path().join(".dockerignore"), "general\n").unwrap();
        // `-f` may name a Dockerfile outside the context.
        let dockerfile = elsewhere.path().join("app.Dockerfile");
        std::fs::write(&dockerfile, "FROM scratch\n").unwrap();
        let rules = load_ignore_rules(context.path(), Some(&dockerfile)).unwrap();
        assert!(rules.is_excluded("general").unwrap());

        std::fs::write(
            elsewhere.path().join("app.Dockerfile.dockerignore"),
            "specific\n",
        )
        .unwrap();
        let rules = load_ignore_rules(context.path(), Some(&dockerfile)).unwrap();
        assert!(rules.is_excluded("specific").unwrap());
        assert!(!rules.is_excluded("general").unwrap());

        std::fs::write(context.path().join(".dockerignore"), "ok\n[z\n").unwrap();
        let err = load_ignore_rules(context.path(), None).unwrap_err();
        assert!(matches!(err, ContextError::IgnoreFile { .. }), "{err}");
        let ContextError::IgnoreFile { source, .. } = err else {
            unreachable!()
        };
        assert_eq!(source.to_string(), "line 2");
        assert!(load_ignore_rules(elsewhere.path(), None)
            .unwrap()
            .is_empty());
    }
}
