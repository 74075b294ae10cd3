//! Where blobs are known to live in registries (`<root>/registry/sources.json`), so that a
//! push can mount a blob from another repository of the same registry instead of uploading.
//!
//! The record is a hint: a stale entry only costs a mount that the registry answers with
//! an upload session, and concurrent writers may lose each other's entries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// digest → set of `registry/repository` names.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sources {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    blobs: BTreeMap<String, BTreeSet<String>>,
}

impl Sources {
    fn path(root: &Path) -> PathBuf {
        root.join("registry").join("sources.json")
    }

    /// Reads the record; a missing or unreadable file is an empty record.
    pub(crate) fn load(root: &Path) -> Sources {
        std::fs::read(Self::path(root))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Repositories of `registry` known to hold `digest`.
    pub(crate) fn repositories<'a>(
        &'a self,
        registry: &'a str,
        digest: &str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("{registry}/");
        self.blobs
            .get(digest)
            .into_iter()
            .flatten()
            .filter_map(move |name| name.strip_prefix(&prefix))
    }

    /// Notes that `registry/repository` holds `digest`.
    pub(crate) fn add(&mut self, digest: &str, registry: &str, repository: &str) {
        self.blobs
            .entry(digest.to_string())
            .or_default()
            .insert(format!("{registry}/{repository}"));
    }

    /// Merges `self` into the record on disk and writes it atomically.
    pub(crate) fn save(&self, root: &Path) -> Result<()> {
        let mut merged = Sources::load(root);
        for (digest, names) in &self.blobs {
            merged
                .blobs
                .entry(digest.clone())
                .or_default()
                .extend(names.iter().cloned());
        }
        merged.version = 1;
        let path = Self::path(root);
        let dir = root.join("registry");
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let bytes = serde_json::to_vec(&merged).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        let tmp = dir.join(format!(".sources.json.{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(Error::io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Sources::default();
        a.add("sha256:1", "r:5000", "lib/base");
        a.save(dir.path()).unwrap();
        let mut b = Sources::default();
        b.add("sha256:1", "r:5000", "app");
        b.add("sha256:1", "other:1", "x");
        b.save(dir.path()).unwrap();
        let s = Sources::load(dir.path());
        let repos: Vec<&str> = s.repositories("r:5000", "sha256:1").collect();
        assert_eq!(repos, vec!["app", "lib/base"]);
    }
}
