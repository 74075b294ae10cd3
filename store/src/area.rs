//! Named areas of the store's disk that other crates keep files in (cache mounts, context
//! stat caches, the registry mount-sources map), handed out as typed handles so that no
//! code outside the store joins a path under its root, and gc knows every area.

use std::path::{Path, PathBuf};

use crate::{Error, Result, Store};

/// An area of the store that holds another crate's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Area {
    /// `RUN --mount=type=cache` directories, one per cache id (`cache/mounts/`). Kept by
    /// `prune`, dropped by `prune --all` (as BuildKit's `prune --all` drops cache mounts).
    CacheMounts,
    /// The build context stat caches, one file per context directory (`cache/stat/`).
    /// Kept by `prune`, dropped by `prune --all`: they only save re-hashing.
    StatCache,
    /// Where blobs are known to live in registries (`registry/`), a hint for cross-repository
    /// mounts. Kept by every prune: a stale entry only costs a refused mount.
    RegistrySources,
}

impl Area {
    /// Every area, for gc and fsck.
    pub const ALL: [Area; 3] = [Area::CacheMounts, Area::StatCache, Area::RegistrySources];

    /// The area's directory relative to the store root.
    fn relative(self) -> &'static str {
        match self {
            Area::CacheMounts => "cache/mounts",
            Area::StatCache => "cache/stat",
            Area::RegistrySources => "registry",
        }
    }

    /// A short name (`cache-mounts`, `stat-cache`, `registry-sources`).
    pub fn name(self) -> &'static str {
        match self {
            Area::CacheMounts => "cache-mounts",
            Area::StatCache => "stat-cache",
            Area::RegistrySources => "registry-sources",
        }
    }

    /// Whether `prune --all` empties it.
    pub(crate) fn dropped_by_prune_all(self) -> bool {
        matches!(self, Area::CacheMounts | Area::StatCache)
    }
}

/// An area's directory, created when it was handed out.
#[derive(Clone, Debug)]
pub struct AreaDir {
    area: Area,
    path: PathBuf,
}

impl AreaDir {
    /// Which area this is.
    pub fn area(&self) -> Area {
        self.area
    }

    /// The directory (on the store's filesystem, so files can be renamed into it).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store {
    /// The directory of `area`, created when missing.
    pub fn area(&self, area: Area) -> Result<AreaDir> {
        let path = self.area_path(area);
        std::fs::create_dir_all(&path).map_err(Error::io("create directory", &path))?;
        Ok(AreaDir { area, path })
    }

    pub(crate) fn area_path(&self, area: Area) -> PathBuf {
        self.root().join(area.relative())
    }
}
