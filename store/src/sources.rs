//! Where blobs are known to live in registries (`sources.json` in
//! [`Area::RegistrySources`]), so that a push can mount a blob from another repository of
//! the same registry instead of uploading.
//!
//! For a push the record is a hint: a stale entry only costs a mount that the registry
//! answers with an upload session. For an image resolved lazily (a build with a remote
//! cache) it is where a layer that is not in `blobs/` is fetched from, so writers merge
//! under the store's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::fsutil::write_atomic;
use crate::{Area, Error, Result, Store};

/// digest → set of `registry/repository` names.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct MountSources {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    blobs: BTreeMap<String, BTreeSet<String>>,
}

impl MountSources {
    fn path(dir: &Path) -> PathBuf {
        dir.join("sources.json")
    }

    /// Reads the record in `dir`; a missing or unreadable file is an empty record.
    fn load(dir: &Path) -> MountSources {
        std::fs::read(Self::path(dir))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Repositories of `registry` known to hold `digest`.
    pub fn repositories<'a>(
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

    /// Every `(registry, repository)` known to hold `digest`, in name order.
    pub fn holders<'a>(&'a self, digest: &str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.blobs
            .get(digest)
            .into_iter()
            .flatten()
            .filter_map(|name| name.split_once('/'))
    }

    /// Notes that `registry/repository` holds `digest`.
    pub fn add(&mut self, digest: &str, registry: &str, repository: &str) {
        self.blobs
            .entry(digest.to_string())
            .or_default()
            .insert(format!("{registry}/{repository}"));
    }

    /// Merges `self` into the record in `dir` and writes it atomically (via `scratch`).
    fn save(&self, dir: &Path, scratch: &Path) -> Result<()> {
        let mut merged = MountSources::load(dir);
        for (digest, names) in &self.blobs {
            merged
                .blobs
                .entry(digest.clone())
                .or_default()
                .extend(names.iter().cloned());
        }
        merged.version = 1;
        let path = Self::path(dir);
        let bytes = serde_json::to_vec(&merged).map_err(|source| Error::Json {
            what: "registry sources",
            path: path.clone(),
            source,
        })?;
        write_atomic(scratch, &path, &bytes)
    }
}

impl Store {
    /// The record of which registry repositories hold which blobs (empty when there is none
    /// or it is unreadable: it is a hint).
    pub fn mount_sources(&self) -> Result<MountSources> {
        Ok(MountSources::load(self.area(Area::RegistrySources)?.path()))
    }

    /// Merges `sources` into the record on disk, under the store's lock: concurrent writers
    /// keep each other's entries (a lazily resolved layer is fetched from where they say).
    pub fn save_mount_sources(&self, sources: &MountSources) -> Result<()> {
        let dir = self.area(Area::RegistrySources)?;
        let _lock = self.lock()?;
        sources.save(dir.path(), self.scratch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut a = MountSources::default();
        a.add("sha256:1", "r:5000", "lib/base");
        store.save_mount_sources(&a).unwrap();
        let mut b = MountSources::default();
        b.add("sha256:1", "r:5000", "app");
        b.add("sha256:1", "other:1", "x");
        store.save_mount_sources(&b).unwrap();
        let s = store.mount_sources().unwrap();
        let repos: Vec<&str> = s.repositories("r:5000", "sha256:1").collect();
        assert_eq!(repos, vec!["app", "lib/base"]);
    }
}
