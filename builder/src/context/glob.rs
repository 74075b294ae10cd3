//! Go's `filepath.Match` on Unix: the glob syntax Docker validates `.dockerignore` patterns
//! with and resolves wildcard COPY/ADD sources with.
//!
//! `*` matches any run of non-`/` characters, `?` one non-`/` character (a Unicode scalar),
//! `[...]` a character class (`^` negates, `lo-hi` ranges, `\` escapes), `\c` the character
//! `c`. A malformed pattern is an error even when the name does not match.

/// The pattern is malformed (Go's `filepath.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPattern;

/// Reports whether `name` matches the shell pattern `pattern`, as Go's `filepath.Match`.
pub fn matches(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest unless it holds a separator.
            return Ok(!name.contains(&b'/'));
        }
        let first = match_chunk(chunk, name);
        if let Ok(Some(tail)) = first {
            if tail.is_empty() || !pattern.is_empty() {
                name = tail;
                continue;
            }
        }
        first?;
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                match match_chunk(chunk, &name[i + 1..])? {
                    Some(tail) if pattern.is_empty() && !tail.is_empty() => {}
                    Some(tail) => {
                        name = tail;
                        continue 'chunks;
                    }
                    None => {}
                }
                i += 1;
            }
        }
        // No match: still check the rest of the pattern is well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Checks that `pattern` is well formed.
pub fn validate(pattern: &str) -> Result<(), BadPattern> {
    matches(pattern, ".").map(|_| ())
}

/// Reports whether `pattern` holds an unescaped glob metacharacter (`*`, `?`, `[`).
pub fn has_wildcards(pattern: &str) -> bool {
    let mut bytes = pattern.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                bytes.next();
            }
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
    }
    false
}

/// Removes glob escapes: `\c` becomes `c`.
pub fn unescape(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Splits off leading stars and the chunk up to the next star outside a class.
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Decodes the first character of `bytes` (U+FFFD and length 1 for invalid UTF-8).
fn decode(bytes: &[u8]) -> (char, usize) {
    let end = bytes.len().min(4);
    for len in 1..=end {
        if let Ok(s) = std::str::from_utf8(&bytes[..len]) {
            if let Some(c) = s.chars().next() {
                return (c, len);
            }
        }
    }
    (char::REPLACEMENT_CHARACTER, 1)
}

/// Matches `chunk` at the start of `s`; `Some(rest of s)` on success. After a mismatch the
/// chunk is still scanned to report malformed syntax.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, BadPattern> {
    let mut failed = false;
    while let Some(&first) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match first {
            b'[' => {
                let mut r = '\0';
                if !failed {
                    let (c, n) = decode(s);
                    r = c;
                    s = &s[n..];
                }
                let (class, rest) = class_ranges(&chunk[1..])?;
                chunk = rest;
                let matched = class.ranges.iter().any(|&(lo, hi)| lo <= r && r <= hi);
                if matched == class.negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if first == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(BadPattern);
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// Reads one (possibly escaped) character of a class; it must not be the class's end.
fn class_char(chunk: &[u8]) -> Result<(char, &[u8]), BadPattern> {
    let mut chunk = match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(_) => chunk,
    };
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err(BadPattern);
        }
    }
    let (c, n) = decode(chunk);
    if c == char::REPLACEMENT_CHARACTER && n == 1 {
        return Err(BadPattern);
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((c, rest))
}

/// A character class `[...]`, parsed.
pub(crate) struct Class {
    /// `[^...]`.
    pub negated: bool,
    /// Inclusive `(lo, hi)` ranges.
    pub ranges: Vec<(char, char)>,
    /// Bytes of the pattern the class used after its `[`.
    pub len: usize,
}

/// Parses one character class; `pattern` starts just after the `[`.
pub(crate) fn parse_class(pattern: &str) -> Result<Class, BadPattern> {
    class_ranges(pattern.as_bytes()).map(|(class, _)| class)
}

/// The class that `pattern` starts with (just after its `[`), and the rest of the pattern
/// after its `]`.
fn class_ranges(pattern: &[u8]) -> Result<(Class, &[u8]), BadPattern> {
    let mut chunk = pattern;
    let negated = chunk.first() == Some(&b'^');
    if negated {
        chunk = &chunk[1..];
    }
    let mut ranges = Vec::new();
    loop {
        if chunk.first() == Some(&b']') && !ranges.is_empty() {
            let rest = &chunk[1..];
            let len = pattern.len() - rest.len();
            return Ok((
                Class {
                    negated,
                    ranges,
                    len,
                },
                rest,
            ));
        }
        let (lo, rest) = class_char(chunk)?;
        chunk = rest;
        let mut hi = lo;
        if chunk.first() == Some(&b'-') {
            let (h, rest) = class_char(&chunk[1..])?;
            hi = h;
            chunk = rest;
        }
        ranges.push((lo, hi));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match_table() {
        let ok = |p: &str, n: &str| matches(p, n).unwrap_or_else(|_| panic!("{p} is bad"));
        assert!(ok("abc", "abc"));
        assert!(ok("*", "abc"));
        assert!(ok("*c", "abc"));
        assert!(!ok("a*", "ab/c"));
        assert!(ok("a*/b", "abc/b"));
        assert!(!ok("a*/b", "a/c/b"));
        assert!(ok("a*b*c*d*e*/f", "axbxcxdxe/f"));
        assert!(!ok("a*b?c*x", "abxbbxdbxebxczzy"));
        assert!(ok("ab[c]", "abc"));
        assert!(!ok("ab[^c]", "abc"));
        assert!(ok("a\\*b", "a*b"));
        assert!(!ok("a\\*b", "ab"));
        assert!(ok("a?b", "a☺b"));
        assert!(ok("a[^a]b", "a☺b"));
        assert!(!ok("a???b", "a☺b"));
        assert!(ok("[a-ζ]*", "α"));
        assert!(!ok("a?b", "a/b"));
        assert!(ok("[\\-x]", "-"));
        assert!(ok("*x", "xxx"));
        assert!(ok("[\\]a]", "]"));
        for bad in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[",
        ] {
            assert_eq!(matches(bad, "a"), Err(BadPattern), "{bad}");
        }
    }

    #[test]
    fn wildcards_and_unescape() {
        assert!(has_wildcards("*.txt"));
        assert!(has_wildcards("dir/[a-c]x"));
        assert!(!has_wildcards("a\\*b"));
        assert!(!has_wildcards("app.conf"));
        assert_eq!(unescape("a\\*b"), "a*b");
    }
}
