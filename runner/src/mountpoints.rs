//! Mountpoints made in a copied root for one step and removed after it, with their
//! parents' times put back, so that they never reach the layer (the overlay path gets
//! them from its stub layer instead).
//!
//! The runner makes them before the init starts and removes them after it exited, from
//! its own mount namespace, where nothing is mounted on them. The copying snapshotter's
//! differ ignores ctimes, so a directory whose entries came and went, with its times
//! restored, is unchanged.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::time::TimeSpec;

use crate::rootfs::mount_targets;
use crate::spec::SandboxSpec;
use crate::Error;

/// A directory's access and modification times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Times {
    atime: TimeSpec,
    mtime: TimeSpec,
}

impl Times {
    pub(crate) fn of(meta: &fs::Metadata) -> Times {
        Times {
            atime: TimeSpec::new(meta.atime(), meta.atime_nsec()),
            mtime: TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        }
    }

    /// Puts them back on `path` (best effort: the layer is only tidier for it).
    pub(crate) fn restore(self, path: &Path) {
        let _ = nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &self.atime,
            &self.mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }
}

/// One missing part of a mountpoint's path, made by [`Mountpoints::make`].
#[derive(Debug)]
struct Made {
    /// Entries created, top-most first.
    created: Vec<PathBuf>,
    /// The existing directory the top-most entry was made in.
    parent: PathBuf,
    /// Its times before.
    times: Times,
    /// Its mtime right after: if it is still that, the step did not touch it.
    mtime_after: (i64, i64),
}

/// The mountpoints made in one copied root.
#[derive(Debug, Default)]
pub(crate) struct Mountpoints {
    made: Vec<Made>,
}

impl Mountpoints {
    /// Makes in `root` every mountpoint of `spec` the root lacks. A path through a symlink
    /// or a file is left alone: the runner resolves it inside the root and fails as the
    /// overlay path would.
    pub(crate) fn make(root: &Path, spec: &SandboxSpec) -> Result<Mountpoints, Error> {
        let mut mountpoints = Mountpoints::default();
        for (target, file) in mount_targets(spec) {
            if let Some(made) = make_one(root, &target, file)? {
                mountpoints.made.push(made);
            }
        }
        Ok(mountpoints)
    }

    /// Removes what [`Mountpoints::make`] made, newest first, and puts each parent's times
    /// back unless the step changed the parent since (then its times are the step's). An
    /// entry the step wrote into stays: it is the step's.
    pub(crate) fn remove(self) {
        for made in self.made.into_iter().rev() {
            let untouched = fs::symlink_metadata(&made.parent)
                .is_ok_and(|meta| (meta.mtime(), meta.mtime_nsec()) == made.mtime_after);
            let mut all_gone = true;
            for path in made.created.iter().rev() {
                let removed = match fs::symlink_metadata(path) {
                    Ok(meta) if meta.is_dir() => fs::remove_dir(path),
                    Ok(_) => fs::remove_file(path),
                    Err(err) => Err(err),
                };
                all_gone &= removed.is_ok();
            }
            if untouched && all_gone {
                made.times.restore(&made.parent);
            }
        }
    }
}

/// Makes the missing part of `target` (absolute, inside `root`); `file`: its last
/// component is a file.
fn make_one(root: &Path, target: &str, file: bool) -> Result<Option<Made>, Error> {
    let parts: Vec<&std::ffi::OsStr> = Path::new(target)
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut at = root.to_path_buf();
    for (i, name) in parts.iter().enumerate() {
        let next = at.join(name);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.is_dir() && !meta.file_type().is_symlink() => at = next,
            Ok(_) => return Ok(None),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let failed = |path: &Path| {
                    let path = path.to_path_buf();
                    move |source| Error::Create { path, source }
                };
                let before = fs::symlink_metadata(&at).map_err(failed(&at))?;
                let mut created = Vec::new();
                let mut path = at.clone();
                for (j, name) in parts[i..].iter().enumerate() {
                    path.push(name);
                    let last = i + j + 1 == parts.len();
                    if last && file {
                        fs::write(&path, b"").map_err(failed(&path))?;
                    } else {
                        fs::create_dir(&path).map_err(failed(&path))?;
                    }
                    created.push(path.clone());
                }
                let after = fs::symlink_metadata(&at).map_err(failed(&at))?;
                return Ok(Some(Made {
                    created,
                    parent: at,
                    times: Times::of(&before),
                    mtime_after: (after.mtime(), after.mtime_nsec()),
                }));
            }
            Err(source) => return Err(Error::Create { path: next, source }),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ExtraMount;

    fn mtime(path: &Path) -> (i64, i64) {
        let meta = fs::symlink_metadata(path).unwrap();
        (meta.mtime(), meta.mtime_nsec())
    }

    #[test]
    fn missing_mountpoints_come_and_go_without_a_trace() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir(root.join("proc")).unwrap();
        fs::create_dir(root.join("etc")).unwrap();
        fs::write(root.join("etc/hosts"), b"image's\n").unwrap();
        let old = Times {
            atime: TimeSpec::new(1_000_000, 0),
            mtime: TimeSpec::new(1_000_000, 0),
        };
        for dir in [root.to_path_buf(), root.join("etc")] {
            old.restore(&dir);
        }
        let mut spec = SandboxSpec::new(
            Vec::new(),
            root.to_path_buf(),
            root.join("work"),
            vec!["true".into()],
        );
        spec.mounts.push(ExtraMount::Tmpfs {
            target: "/var/cache/apt".into(),
            size: None,
        });
        let made = Mountpoints::make(root, &spec).unwrap();
        for path in [
            "dev",
            "sys",
            "etc/resolv.conf",
            "etc/hostname",
            "var/cache/apt",
        ] {
            assert!(root.join(path).exists(), "{path} made");
        }
        assert!(root.join("etc/resolv.conf").is_file());
        made.remove();
        let mut left: Vec<String> = fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["etc", "proc"]);
        assert_eq!(fs::read(root.join("etc/hosts")).unwrap(), b"image's\n");
        assert!(!root.join("etc/resolv.conf").exists());
        assert_eq!(mtime(root), (1_000_000, 0));
        assert_eq!(mtime(&root.join("etc")), (1_000_000, 0));
    }

    #[test]
    fn what_the_step_wrote_into_stays_with_its_times() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let spec = SandboxSpec::new(
            Vec::new(),
            root.to_path_buf(),
            root.join("work"),
            vec!["true".into()],
        );
        let made = Mountpoints::make(root, &spec).unwrap();
        fs::write(root.join("etc/motd"), b"the step's\n").unwrap();
        made.remove();
        assert_eq!(fs::read(root.join("etc/motd")).unwrap(), b"the step's\n");
        assert!(!root.join("etc/hosts").exists());
        assert!(!root.join("proc").exists());
    }
}
