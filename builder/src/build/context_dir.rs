//! The build context as a directory on disk: the user's directory, or a tar from stdin
//! unpacked under the store's `tmp/`; the Dockerfile; and its `.dockerignore` rules.

use std::path::{Path, PathBuf};

use crate::context::{find_ignore_file, parse_ignore_file, ContextError, IgnoreRules, StatCache};

use super::ContextSource;
use crate::Error;

/// The context directory and its ignore rules.
pub struct ContextDir {
    /// The directory COPY reads from.
    pub root: PathBuf,
    /// Keeps an unpacked stdin context alive for the build.
    _tmp: Option<rbuild_store::TmpDir>,
    /// Content digests of context files by their metadata (persisted for a directory
    /// context under `<store>/cache/stat/`).
    pub stat_cache: std::sync::Arc<std::sync::Mutex<StatCache>>,
    /// Set once the Dockerfile is known (its own `<name>.dockerignore` wins).
    ignore: std::sync::OnceLock<std::sync::Arc<Ignore>>,
}

/// `.dockerignore` rules (the context module's matcher, moby's semantics) plus the
/// patterns they came from, so COPY `--exclude` can extend them.
#[derive(Debug, Default, Clone)]
pub struct Ignore {
    patterns: Vec<String>,
    rules: IgnoreRules,
}

impl Ignore {
    fn from_patterns(patterns: Vec<String>) -> Result<Ignore, ContextError> {
        let rules = IgnoreRules::new(&patterns)?;
        Ok(Ignore { patterns, rules })
    }

    /// These rules plus `patterns` (COPY `--exclude`), which exclude.
    pub fn with_patterns(&self, patterns: &[String]) -> Result<Ignore, ContextError> {
        let mut all = self.patterns.clone();
        all.extend(patterns.iter().cloned());
        Ignore::from_patterns(all)
    }

    /// Whether `rel` (relative to the context, `/`-separated) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        // Patterns were validated when compiled; a match error means no match.
        self.rules.is_excluded(rel).unwrap_or(false)
    }
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
                let cache_dir = store.root().join("cache/stat");
                let cache = match std::fs::create_dir_all(&cache_dir) {
                    Ok(()) => StatCache::open(&StatCache::path_for(&cache_dir, &root)),
                    // Without a place to keep it, the cache lives for this build only.
                    Err(_) => StatCache::in_memory(),
                };
                Ok(ContextDir {
                    root,
                    stat_cache: std::sync::Arc::new(std::sync::Mutex::new(cache)),
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
                    stat_cache: Default::default(),
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
        let ignore = match find_ignore_file(&self.root, Some(&path)) {
            None => Ignore::default(),
            Some(file) => {
                let text = tokio::fs::read(&file)
                    .await
                    .map_err(Error::io("read", &file))?;
                let text = String::from_utf8_lossy(&text);
                // Checked line by line first, so an error names the line.
                IgnoreRules::parse(&text).map_err(|source| ContextError::IgnoreFile {
                    path: file.clone(),
                    source: Box::new(source),
                })?;
                Ignore::from_patterns(parse_ignore_file(&text))?
            }
        };
        let _ = self.ignore.set(std::sync::Arc::new(ignore));
        Ok((name, text))
    }

    /// Writes the stat cache back (best effort: a lost cache only costs a re-read).
    pub fn save_stat_cache(&self) {
        if let Ok(mut c) = self.stat_cache.lock() {
            let _ = c.save();
        }
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
        let i = Ignore::from_patterns(parse_ignore_file(
            "# c\n*.log\n!keep.log\nsecret/\n**/tmp\n",
        ))
        .unwrap();
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("keep.log"));
        assert!(i.excluded("secret/x"));
        assert!(i.excluded("a/b/tmp/c"));
        assert!(!i.excluded("app.conf"));
        assert!(!i.excluded("d/a.log"));
        let more = i.with_patterns(&["app.conf".to_string()]).unwrap();
        assert!(more.excluded("app.conf"));
    }
}
