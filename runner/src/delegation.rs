//! Whether a rootless build can limit its steps: a cgroup v2 subtree delegated to it (its
//! own cgroup writable, with the controllers it needs), and moving the build into a leaf of
//! that subtree so that the steps' cgroups can get controllers beside it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::spec::Limits;

/// Where the cgroup filesystem is mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// The delegated cgroup the steps' cgroups go in, once [`delegate`] entered it.
static DELEGATED: OnceLock<PathBuf> = OnceLock::new();

/// The delegated cgroup the steps' cgroups go in, if [`delegate`] found one.
pub(crate) fn delegated_parent() -> Option<&'static Path> {
    DELEGATED.get().map(PathBuf::as_path)
}

/// Why a rootless build cannot apply cgroup limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoDelegation {
    /// Controllers are on cgroup v1 hierarchies (v1 or hybrid), which are never delegated.
    CgroupV1 {
        /// Whether a unified (v2) hierarchy exists beside them.
        hybrid: bool,
    },
    /// `/proc/self/cgroup` could not be read or names no cgroup v2 path.
    Unknown(String),
    /// The build's own cgroup (or a file in it) is not writable by it.
    NotWritable(PathBuf),
    /// The build's cgroup lacks controllers the limits need.
    MissingControllers {
        /// The build's cgroup.
        cgroup: PathBuf,
        /// The missing controllers.
        missing: Vec<&'static str>,
    },
    /// Moving the build into a leaf or enabling the controllers failed.
    Refused {
        /// What was written.
        path: PathBuf,
        /// The error.
        why: String,
    },
}

impl fmt::Display for NoDelegation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoDelegation::CgroupV1 { hybrid: true } => {
                f.write_str("hybrid cgroups here: the controllers are on cgroup v1")
            }
            NoDelegation::CgroupV1 { hybrid: false } => f.write_str("cgroup v1 here"),
            NoDelegation::Unknown(why) => write!(f, "its cgroup is unknown: {why}"),
            NoDelegation::NotWritable(path) => {
                write!(f, "{} is not writable by this user", path.display())
            }
            NoDelegation::MissingControllers { cgroup, missing } => write!(
                f,
                "{} has no {} controller delegated",
                cgroup.display(),
                missing.join(", ")
            ),
            NoDelegation::Refused { path, why } => {
                write!(f, "writing {} failed: {why}", path.display())
            }
        }
    }
}

/// The controllers `limits` need, by their cgroup v2 names.
fn wanted(limits: &Limits) -> Vec<&'static str> {
    [
        (limits.wants_memory(), "memory"),
        (limits.wants_cpu(), "cpu"),
        (limits.wants_cpuset(), "cpuset"),
        (limits.pids.is_some(), "pids"),
    ]
    .into_iter()
    .filter_map(|(want, name)| want.then_some(name))
    .collect()
}

/// The build's delegated cgroup under the cgroup filesystem at `root`, given the text of
/// `/proc/self/cgroup`: cgroup v2 only, the cgroup and its `cgroup.procs` and
/// `cgroup.subtree_control` writable, `wanted` in its `cgroup.controllers`.
fn find(root: &Path, self_cgroup: &str, wanted: &[&'static str]) -> Result<PathBuf, NoDelegation> {
    let unified = self_cgroup.lines().find_map(|l| l.strip_prefix("0::"));
    let v1 = self_cgroup
        .lines()
        .any(|l| l.split(':').nth(1).is_some_and(|c| !c.is_empty()));
    if v1 || !root.join("cgroup.controllers").exists() {
        return Err(NoDelegation::CgroupV1 {
            hybrid: unified.is_some(),
        });
    }
    let own = unified.ok_or_else(|| NoDelegation::Unknown("no 0:: line".into()))?;
    let dir = root.join(own.trim().trim_start_matches('/'));
    for path in [
        dir.clone(),
        dir.join("cgroup.procs"),
        dir.join("cgroup.subtree_control"),
    ] {
        if nix::unistd::access(&path, nix::unistd::AccessFlags::W_OK).is_err() {
            return Err(NoDelegation::NotWritable(path));
        }
    }
    let available = fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| NoDelegation::Unknown(format!("{}: {e}", dir.display())))?;
    let missing: Vec<&'static str> = wanted
        .iter()
        .filter(|c| !available.split_whitespace().any(|a| a == **c))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(NoDelegation::MissingControllers {
            cgroup: dir,
            missing,
        });
    }
    Ok(dir)
}

/// The leaf of a delegated cgroup that its processes move into. Never swept as a stale
/// step cgroup (`rbuild-<pid>-<n>`): processes other than rbuild's may live in it.
const LEAF: &str = "rbuild-init";

/// Moves the processes of `dir` (this one, and e.g. a non-root user's outer rbuild or
/// shell) into its leaf [`LEAF`] (cgroup v2 lets a cgroup give its children controllers
/// only while it holds no process itself) and enables `wanted` for the children of `dir`,
/// where the steps' cgroups then go.
fn enter(dir: &Path, wanted: &[&'static str]) -> Result<(), NoDelegation> {
    let refused = |path: PathBuf| {
        move |e: std::io::Error| NoDelegation::Refused {
            path,
            why: e.to_string(),
        }
    };
    let enable = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let control = dir.join("cgroup.subtree_control");
    if fs::write(&control, &enable).is_ok() {
        return Ok(());
    }
    let leaf = dir.join(LEAF);
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refused(leaf)(e)),
    }
    let procs = dir.join("cgroup.procs");
    let pids = fs::read_to_string(&procs).map_err(refused(procs))?;
    let to = leaf.join("cgroup.procs");
    for pid in pids.split_whitespace() {
        match fs::write(&to, pid) {
            Ok(()) => {}
            // Gone meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(refused(to)(e)),
        }
    }
    fs::write(&control, &enable).map_err(refused(control))
}

/// Finds the build's delegated cgroup v2 subtree and enters it, so that the steps'
/// cgroups (with `limits`) can be made there; called once per build, before any step.
/// `Err` says why limits cannot be applied (for the warning that drops them).
pub fn delegate(limits: &Limits) -> Result<(), NoDelegation> {
    let wanted = wanted(limits);
    if let Some(dir) = DELEGATED.get() {
        return enter(dir, &wanted);
    }
    let dir = find(Path::new(ROOT), &self_cgroup()?, &wanted)?;
    enter(&dir, &wanted)?;
    let _ = DELEGATED.set(dir);
    Ok(())
}

fn self_cgroup() -> Result<String, NoDelegation> {
    fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| NoDelegation::Unknown(format!("/proc/self/cgroup: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory laid out like a cgroup2 mount with the build in `/user/build`.
    fn cgroupfs(controllers: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let own = root.path().join("user/build");
        fs::create_dir_all(&own).unwrap();
        fs::write(own.join("cgroup.controllers"), controllers).unwrap();
        fs::write(own.join("cgroup.procs"), "").unwrap();
        fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        root
    }

    const MEMORY: [&str; 1] = ["memory"];

    #[test]
    fn a_delegated_v2_cgroup_with_the_controllers_is_used() {
        let root = cgroupfs("cpu memory\n");
        let dir = find(root.path(), "0::/user/build\n", &MEMORY).unwrap();
        assert_eq!(dir, root.path().join("user/build"));
        enter(&dir, &["memory", "cpu"]).unwrap();
        let control = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
        assert_eq!(control, "+memory +cpu");
        assert!(!dir.join(LEAF).exists(), "an empty cgroup needs no leaf");
    }

    #[test]
    fn hybrid_and_v1_cgroups_are_never_delegated() {
        let root = cgroupfs("memory\n");
        let hybrid = "12:memory:/user.slice\n1:name=systemd:/user.slice\n0::/user/build\n";
        assert_eq!(
            find(root.path(), hybrid, &MEMORY),
            Err(NoDelegation::CgroupV1 { hybrid: true })
        );
        let v1 = "12:memory:/user.slice\n1:name=systemd:/user.slice\n";
        assert_eq!(
            find(root.path(), v1, &MEMORY),
            Err(NoDelegation::CgroupV1 { hybrid: false })
        );
        let err = find(root.path(), hybrid, &MEMORY).unwrap_err().to_string();
        assert!(err.contains("hybrid cgroups"), "{err}");
    }

    #[test]
    fn missing_controllers_are_named() {
        let root = cgroupfs("pids\n");
        let err = find(root.path(), "0::/user/build\n", &["memory", "cpu"]).unwrap_err();
        assert_eq!(
            err,
            NoDelegation::MissingControllers {
                cgroup: root.path().join("user/build"),
                missing: vec!["memory", "cpu"],
            }
        );
        assert!(err
            .to_string()
            .ends_with("has no memory, cpu controller delegated"));
    }

    #[test]
    fn a_cgroup_that_is_not_there_is_not_writable() {
        let root = cgroupfs("memory\n");
        let err = find(root.path(), "0::/elsewhere\n", &MEMORY).unwrap_err();
        assert_eq!(
            err,
            NoDelegation::NotWritable(root.path().join("elsewhere"))
        );
    }
}
