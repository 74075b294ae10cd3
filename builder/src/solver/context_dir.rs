//! The build context as the engine holds it for one build: the user's directory, or a stdin
//! stream unpacked or a git repository checked out under the store's `tmp/` (kept alive for
//! the build), the Dockerfile, and the context module's parts over it: ignore rules, the
//! walked files, the stat cache.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::context_stream::{context_from_stream, StreamContext};
use crate::context::{load_ignore_rules, ContextFiles, IgnoreRules, StatCache};
use crate::copy::DEFAULT_ARCHIVE_LIMIT;

use super::ContextSource;
use crate::Error;

/// The context directory, its ignore rules, its walk and its stat cache.
pub struct ContextDir {
    /// The directory COPY reads from.
    pub root: PathBuf,
    /// Keeps an unpacked stdin context alive for the build.
    _tmp: Option<rbuild_store::TmpDir>,
    /// A stdin stream that was a Dockerfile rather than a tar.
    stdin_dockerfile: Option<PathBuf>,
    /// Content digests of context files by their metadata (persisted for a directory
    /// context under `<store>/cache/stat/`).
    pub stat_cache: Arc<Mutex<StatCache>>,
    /// Set once the Dockerfile is known (its own `<name>.dockerignore` wins).
    ignore: OnceLock<IgnoreRules>,
    /// The context walked with the ignore rules, on first use.
    files: OnceLock<Arc<ContextFiles>>,
}

impl ContextDir {
    /// Opens the context: a directory as it is, a stdin stream unpacked into the store's
    /// tmp/ (a tar, or a lone Dockerfile).
    pub async fn open(
        store: &rbuild_store::Store,
        source: &ContextSource,
    ) -> Result<ContextDir, Error> {
        match source {
            ContextSource::Dir(dir) => {
                let root = std::fs::canonicalize(dir).map_err(Error::io("open context", dir))?;
                let cache = match store.area(rbuild_store::Area::StatCache) {
                    Ok(area) => {
                        StatCache::open_in_background(&StatCache::path_for(area.path(), &root))
                    }
                    // Without a place to keep it, the cache lives for this build only.
                    Err(_) => StatCache::in_memory(),
                };
                Ok(ContextDir {
                    root,
                    _tmp: None,
                    stdin_dockerfile: None,
                    stat_cache: Arc::new(Mutex::new(cache)),
                    ignore: OnceLock::new(),
                    files: OnceLock::new(),
                })
            }
            ContextSource::Git(url) => Self::open_git(store, url).await,
            ContextSource::Tar(bytes) => {
                let store = store.clone();
                let bytes = bytes.clone();
                let (tmp, kind) = tokio::task::spawn_blocking(
                    move || -> Result<(rbuild_store::TmpDir, StreamContext), Error> {
                        let tmp = store
                            .tmp_dir()
                            .map_err(Error::store("create a directory for the context"))?;
                        let kind = context_from_stream(
                            std::io::Cursor::new(bytes),
                            tmp.path(),
                            DEFAULT_ARCHIVE_LIMIT,
                        )?;
                        Ok((tmp, kind))
                    },
                )
                .await
                .map_err(Error::Task)??;
                Ok(ContextDir {
                    root: tmp.path().to_path_buf(),
                    _tmp: Some(tmp),
                    stdin_dockerfile: match kind {
                        StreamContext::Archive => None,
                        StreamContext::Dockerfile(path) => Some(path),
                    },
                    stat_cache: Default::default(),
                    ignore: OnceLock::new(),
                    files: OnceLock::new(),
                })
            }
        }
    }

    /// A git context: the URL's commit checked out into the store's tmp/ (without `.git`
    /// unless the URL says `keep-git-dir=true`); the root is its subdirectory.
    async fn open_git(store: &rbuild_store::Store, url: &str) -> Result<ContextDir, Error> {
        let Some(git) = crate::git::parse_git_ref(url)? else {
            return Err(crate::git::GitError::BadUrl {
                url: url.to_string(),
                reason: "not a git repository URL".into(),
            }
            .into());
        };
        let tmp = store
            .tmp_dir()
            .map_err(Error::store("create a directory for the context"))?;
        let dir = tmp.path().join("context");
        let root = tokio::task::spawn_blocking(move || {
            let resolved = crate::git::resolve_commit(&git)?;
            crate::git::checkout(&git, &resolved, &dir, git.keep_git_dir.unwrap_or(false))
        })
        .await
        .map_err(Error::Task)??;
        Ok(ContextDir {
            root,
            _tmp: Some(tmp),
            stdin_dockerfile: None,
            stat_cache: Default::default(),
            ignore: OnceLock::new(),
            files: OnceLock::new(),
        })
    }

    /// Reads the Dockerfile: `text` when given (`-f -`, read from stdin by the caller; the
    /// context's `.dockerignore` applies), else `-f` as given (relative to the working
    /// directory, as docker does; to the context for a stdin context), else `Dockerfile` in
    /// the context (or the stdin stream itself). Loads `<Dockerfile>.dockerignore` beside
    /// it, else the context's `.dockerignore`.
    pub async fn read_dockerfile(
        &self,
        file: Option<&Path>,
        text: Option<&[u8]>,
    ) -> Result<(String, Vec<u8>), Error> {
        if let Some(text) = text {
            let root = self.root.clone();
            let rules = tokio::task::spawn_blocking(move || load_ignore_rules(&root, None))
                .await
                .map_err(Error::Task)??;
            let _ = self.ignore.set(rules);
            return Ok(("Dockerfile".to_string(), text.to_vec()));
        }
        let path = match file {
            Some(f) if self._tmp.is_some() && f.is_relative() => self.root.join(f),
            Some(f) => f.to_path_buf(),
            None => self
                .stdin_dockerfile
                .clone()
                .unwrap_or_else(|| self.root.join("Dockerfile")),
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
        let (root, dockerfile) = (self.root.clone(), path.clone());
        let rules =
            tokio::task::spawn_blocking(move || load_ignore_rules(&root, Some(&dockerfile)))
                .await
                .map_err(Error::Task)??;
        let _ = self.ignore.set(rules);
        Ok((name, text))
    }

    /// Whether `.dockerignore` excludes `path` (relative to the context root).
    pub fn is_ignored(&self, path: &str) -> bool {
        self.ignore
            .get()
            .is_some_and(|rules| rules.is_excluded(path).unwrap_or(false))
    }

    /// Loads the directory's own `.dockerignore` (a named context has no Dockerfile).
    pub async fn use_own_ignore_file(&self) -> Result<(), Error> {
        let root = self.root.clone();
        let rules = tokio::task::spawn_blocking(move || load_ignore_rules(&root, None))
            .await
            .map_err(Error::Task)??;
        let _ = self.ignore.set(rules);
        Ok(())
    }

    /// The context's files after `.dockerignore`, walked once per build.
    pub async fn files(&self) -> Result<Arc<ContextFiles>, Error> {
        if let Some(files) = self.files.get() {
            return Ok(files.clone());
        }
        let rules = self.ignore.get().cloned().unwrap_or_default();
        let root = self.root.clone();
        let walked = tokio::task::spawn_blocking(move || ContextFiles::walk(&root, &rules))
            .await
            .map_err(Error::Task)??;
        Ok(self.files.get_or_init(|| Arc::new(walked)).clone())
    }

    /// Writes the stat cache back (best effort: a lost cache only costs a re-read).
    pub fn save_stat_cache(&self) {
        if let Ok(mut c) = self.stat_cache.lock() {
            let _ = c.save();
        }
    }
}
