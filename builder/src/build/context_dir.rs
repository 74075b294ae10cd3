//! The build context as a directory on disk: the user's directory, or a tar from stdin
//! unpacked under the store's `tmp/`; the Dockerfile; and its `.dockerignore` rules.

use std::path::{Path, PathBuf};

use regex::Regex;

use super::ContextSource;
use crate::Error;

/// The context directory and its ignore rules.
pub struct ContextDir {
    /// The directory COPY reads from.
    pub root: PathBuf,
    /// Keeps an unpacked stdin context alive for the build.
    _tmp: Option<rbuild_store::TmpDir>,
    /// Set once the Dockerfile is known (its own `<name>.dockerignore` wins).
    ignore: std::sync::OnceLock<std::sync::Arc<Ignore>>,
}

/// `.dockerignore` patterns, moby's semantics: the last matching pattern decides, `!`
/// re-includes, a pattern matches a path or any of its parents.
#[derive(Debug, Default, Clone)]
pub struct Ignore {
    rules: Vec<(Regex, bool)>,
}

impl Ignore {
    /// These rules plus `patterns` (COPY `--exclude`), which exclude.
    pub fn with_patterns(&self, patterns: &[String]) -> Ignore {
        let mut out = self.clone();
        out.rules.extend(Ignore::parse(&patterns.join("\n")).rules);
        out
    }

    fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let cleaned = super::rootfs::clean(pat);
            let pat = cleaned.to_string_lossy();
            if pat.is_empty() {
                continue;
            }
            if let Some(re) = glob_regex(&pat) {
                rules.push((re, negate));
            }
        }
        Ignore { rules }
    }

    /// Whether `rel` (relative to the context, `/`-separated) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut out = false;
        for (re, negate) in &self.rules {
            // A pattern matching a parent directory excludes everything under it.
            let mut hit = re.is_match(rel);
            if !hit && !negate {
                let mut p = rel;
                while let Some((parent, _)) = p.rsplit_once('/') {
                    if re.is_match(parent) {
                        hit = true;
                        break;
                    }
                    p = parent;
                }
            }
            if hit {
                out = !negate;
            }
        }
        out
    }
}

/// A filepath.Match-style glob with `**` as in moby's patternmatcher.
fn glob_regex(pat: &str) -> Option<Regex> {
    let mut re = String::from("^");
    let chars: Vec<char> = pat.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                    re.push_str("(.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                let end = chars[i..].iter().position(|&c| c == ']')?;
                let class: String = chars[i + 1..i + end].iter().collect();
                re.push('[');
                re.push_str(&class.replace('!', "^"));
                re.push(']');
                i += end;
            }
            '\\' => {
                i += 1;
                re.push_str(&regex::escape(&chars.get(i)?.to_string()));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re).ok()
}

impl ContextDir {
    /// Opens the context: a directory as it is, a tar unpacked into the store's tmp/.
    pub async fn open(
        store: &rbuild_store::Store,
        source: &ContextSource,
    ) -> Result<ContextDir, Error> {
        match source {
            ContextSource::Dir(dir) => {
                let root = std::fs::canonicalize(dir).map_err(Error::io("open context", dir))?;
                Ok(ContextDir {
                    root,
                    _tmp: None,
                    ignore: Default::default(),
                })
            }
            ContextSource::Tar(bytes) => {
                let store = store.clone();
                let bytes = bytes.clone();
                let tmp =
                    tokio::task::spawn_blocking(move || -> Result<rbuild_store::TmpDir, Error> {
                        let tmp = store
                            .tmp_dir()
                            .map_err(Error::store("create a directory for the context"))?;
                        let mut archive = tar::Archive::new(std::io::Cursor::new(bytes));
                        archive.set_preserve_permissions(true);
                        archive
                            .unpack(tmp.path())
                            .map_err(Error::io("unpack the context tar into", tmp.path()))?;
                        Ok(tmp)
                    })
                    .await
                    .map_err(Error::Task)??;
                Ok(ContextDir {
                    root: tmp.path().to_path_buf(),
                    _tmp: Some(tmp),
                    ignore: Default::default(),
                })
            }
        }
    }

    /// Reads the Dockerfile: `-f` as given (relative to the working directory, as docker
    /// does; to the context for a stdin context), else `Dockerfile` in the context. Loads
    /// `<Dockerfile>.dockerignore` beside it, else the context's `.dockerignore`.
    pub async fn read_dockerfile(&self, file: Option<&Path>) -> Result<(String, Vec<u8>), Error> {
        let path = match file {
            Some(f) if self._tmp.is_some() && f.is_relative() => self.root.join(f),
            Some(f) => f.to_path_buf(),
            None => self.root.join("Dockerfile"),
        };
        let text = tokio::fs::read(&path)
            .await
            .map_err(|source| Error::ReadDockerfile {
                path: path.display().to_string(),
                source,
            })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".to_string());
        let own = path.with_file_name(format!("{name}.dockerignore"));
        let ignore_text = match tokio::fs::read_to_string(&own).await {
            Ok(t) => Some(t),
            Err(_) => tokio::fs::read_to_string(self.root.join(".dockerignore"))
                .await
                .ok(),
        };
        let _ = self.ignore.set(std::sync::Arc::new(
            ignore_text.map(|t| Ignore::parse(&t)).unwrap_or_default(),
        ));
        Ok((name, text))
    }

    /// The ignore rules (none before the Dockerfile is read).
    pub fn ignore_rules(&self) -> std::sync::Arc<Ignore> {
        self.ignore.get().cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let i = Ignore::parse("# c\n*.log\n!keep.log\nsecret/\n**/tmp\n");
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("keep.log"));
        assert!(i.excluded("secret/x"));
        assert!(i.excluded("a/b/tmp/c"));
        assert!(!i.excluded("app.conf"));
        assert!(!i.excluded("d/a.log"));
    }
}
