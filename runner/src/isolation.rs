//! Which isolation a RUN step gets (`--isolation`), and the cheap probe that picks the
//! strongest one the kernel allows here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// How RUN steps are isolated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// Root with CAP_SYS_ADMIN: mount, pid, uts, ipc and cgroup namespaces over overlayfs.
    #[default]
    Namespaces,
    /// A non-root user, or root without CAP_SYS_ADMIN (a container): the command
    /// re-executed in a user namespace where it is root (/etc/subuid ranges, or every id
    /// onto itself), then namespaces over overlayfs (`userxattr`) inside it, or on a copied
    /// root where overlayfs refuses an upper dir on the store's filesystem.
    Rootless,
    /// No namespaces: the step is `chroot`ed into a copy of its root filesystem. Processes,
    /// network, hostname, IPC and mounts are the host's.
    Chroot,
}

impl Isolation {
    /// The flag's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Namespaces => "namespaces",
            Isolation::Rootless => "rootless",
            Isolation::Chroot => "chroot",
        }
    }

    /// What this mode leaves shared with the host, for the one line a build prints.
    pub fn not_isolated(self) -> Option<&'static str> {
        match self {
            Isolation::Chroot => Some(
                "RUN steps share the host's processes, network, hostname, IPC and mounts; \
                 no /proc, /sys or /etc/hosts is provided; only the root directory is changed",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isolation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "namespaces" => Ok(Isolation::Namespaces),
            "rootless" => Ok(Isolation::Rootless),
            "chroot" => Ok(Isolation::Chroot),
            other => Err(Error::UnknownIsolation {
                name: other.to_string(),
            }),
        }
    }
}

/// What the probe found, and the isolation it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The strongest isolation that works here.
    pub isolation: Isolation,
    /// Why, in a few words (`no CAP_SYS_ADMIN`).
    pub reason: String,
}

const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_ADMIN: u32 = 21;

/// The effective capability mask of this process (`CapEff` in /proc/self/status).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let hex = line.strip_prefix("CapEff:")?.trim();
                u64::from_str_radix(hex, 16).ok()
            })
        })
        .unwrap_or(0)
}

fn has_cap(mask: u64, cap: u32) -> bool {
    mask & (1 << cap) != 0
}

/// Tries, in a forked child that exits at once, the namespaces and the private mount a RUN
/// step needs. `Err` carries the errno of the first refusal (a seccomp profile's EPERM).
fn trial_unshare() -> Result<(), std::io::Error> {
    trial(|| {
        let flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWCGROUP;
        // SAFETY: raw syscalls with constant, NUL-terminated arguments, in the forked child.
        unsafe {
            if libc::unshare(flags) != 0 {
                return *libc::__errno_location();
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            let none = std::ptr::null();
            if libc::mount(none, c"/".as_ptr(), none, private, none.cast()) != 0 {
                return *libc::__errno_location();
            }
        }
        0
    })
}

/// Tries, in a forked child that exits at once, a user namespace with the mount and pid
/// namespaces inside it (what rootless isolation needs; a seccomp profile may refuse it).
fn trial_user_namespace() -> Result<(), std::io::Error> {
    trial(|| {
        // SAFETY: raw syscalls with constant arguments, in the forked child.
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return *libc::__errno_location();
            }
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID) != 0 {
                return *libc::__errno_location();
            }
        }
        0
    })
}

/// Tries, in a forked child with its own mount namespace that exits at once, an overlay
/// whose upper and work dirs are in `scratch` (an empty directory on the store's
/// filesystem), with the options the runner uses (`userxattr` in a user namespace). `Err`
/// carries the errno of the refusal: EINVAL where the filesystem is itself an overlay (a
/// container's root) and the overlay is mounted in a user namespace. The mount dies with
/// the child's namespace; the caller removes `scratch`.
pub fn probe_overlay_upper(scratch: &std::path::Path, userxattr: bool) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let dir = |name: &str| -> std::io::Result<std::path::PathBuf> {
        let path = scratch.join(name);
        std::fs::create_dir(&path)?;
        Ok(path)
    };
    let (lower, upper, work, target) = (dir("l")?, dir("u")?, dir("w")?, dir("m")?);
    std::fs::write(lower.join("f"), b"")?;
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    for (key, value) in crate::rootfs::overlay_options(userxattr) {
        data.push_str(&format!(",{key}={value}"));
    }
    if userxattr {
        data.push_str(",userxattr");
    }
    let invalid = |e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let data = std::ffi::CString::new(data).map_err(invalid)?;
    let target = std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(invalid)?;
    // The child gets raw pointers only: it must not free (or allocate) anything, since
    // another thread of this process may have held the allocator's lock at the fork.
    let (data, target) = (data.as_ptr(), target.as_ptr());
    trial(move || {
        let none = std::ptr::null();
        // SAFETY: raw syscalls with NUL-terminated arguments made before the fork, in the
        // forked child.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return *libc::__errno_location();
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(none, c"/".as_ptr(), none, private, none.cast()) != 0 {
                return *libc::__errno_location();
            }
            let overlay = c"overlay".as_ptr();
            if libc::mount(overlay, target, overlay, 0, data.cast()) != 0 {
                return *libc::__errno_location();
            }
        }
        0
    })
}

/// Runs `probe` in a forked child and returns its errno (0: success) as a result.
fn trial(probe: impl FnOnce() -> i32) -> Result<(), std::io::Error> {
    // SAFETY: the child only runs `probe` (raw, async-signal-safe syscalls) and `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: _exit ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(probe()) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
        None => Err(std::io::Error::from_raw_os_error(libc::EPERM)),
    }
}

/// The mapping to re-execute this process under ([`crate::reexec_in_user_namespace`]) when
/// builds here are rootless: a non-root user's ranges, or for root without CAP_SYS_ADMIN
/// where a user namespace can be made, every id onto itself. `None`: no user namespace
/// (root with CAP_SYS_ADMIN, already inside one, or none allowed).
pub fn rootless_mapping() -> Result<Option<crate::IdMapping>, Error> {
    if crate::in_rootless_namespace() {
        return Ok(None);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return crate::id_mapping().map(Some);
    }
    if has_cap(effective_caps(), CAP_SYS_ADMIN) || trial_user_namespace().is_err() {
        return Ok(None);
    }
    Ok(Some(crate::IdMapping::identity()))
}

/// Finds the strongest isolation that works in this process: namespaces for root with
/// CAP_SYS_ADMIN where `unshare` is allowed; rootless for a non-root user, or for root
/// where a user namespace can be made (a container); else chroot.
pub fn detect() -> Result<Detected, Error> {
    let caps = effective_caps();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if crate::in_rootless_namespace() {
        return Ok(Detected {
            isolation: Isolation::Rootless,
            reason: format!(
                "no CAP_SYS_ADMIN; {}",
                std::env::var(crate::USERNS_ENV).unwrap_or_default()
            ),
        });
    }
    if !root {
        let mapping = crate::id_mapping()?;
        return Ok(Detected {
            isolation: Isolation::Rootless,
            reason: format!("no CAP_SYS_ADMIN; {}", mapping.describe()),
        });
    }
    let refused = if has_cap(caps, CAP_SYS_ADMIN) {
        match trial_unshare() {
            Ok(()) => {
                return Ok(Detected {
                    isolation: Isolation::Namespaces,
                    reason: "root with CAP_SYS_ADMIN".into(),
                })
            }
            Err(e) => format!("unshare of namespaces refused: {e}"),
        }
    } else {
        "no CAP_SYS_ADMIN".to_string()
    };
    if trial_user_namespace().is_ok() {
        return Ok(Detected {
            isolation: Isolation::Rootless,
            reason: format!("{refused}; {}", crate::IdMapping::identity().describe()),
        });
    }
    chroot_possible(caps).map_err(|why| Error::IsolationUnavailable {
        isolation: Isolation::Chroot,
        why: format!("{refused}, and {why}"),
    })?;
    Ok(Detected {
        isolation: Isolation::Chroot,
        reason: refused,
    })
}

/// Whiteouts (0:0 character devices) need no CAP_MKNOD since Linux 5.8; the /dev nodes
/// of a step are skipped without it.
fn chroot_possible(caps: u64) -> Result<(), String> {
    if !has_cap(caps, CAP_SYS_CHROOT) {
        return Err(
            "no CAP_SYS_CHROOT for a chroot isolation (add it: --cap-add SYS_CHROOT)".into(),
        );
    }
    Ok(())
}

/// Checks that `isolation`, asked for by name, works here; the error says what is missing.
pub fn check(isolation: Isolation) -> Result<(), Error> {
    let caps = effective_caps();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unavailable = |why: String| Error::IsolationUnavailable { isolation, why };
    match isolation {
        Isolation::Rootless if crate::in_rootless_namespace() => Ok(()),
        Isolation::Rootless if root => trial_user_namespace().map_err(|e| {
            unavailable(format!(
                "a user namespace is refused: {e} (a seccomp profile? use --isolation chroot)"
            ))
        }),
        Isolation::Rootless => crate::id_mapping().map(|_| ()),
        _ if !root || crate::in_rootless_namespace() => Err(unavailable(
            "it needs root (a non-root user builds with --isolation rootless)".into(),
        )),
        Isolation::Namespaces if !has_cap(caps, CAP_SYS_ADMIN) => Err(unavailable(
            "no CAP_SYS_ADMIN (use --isolation rootless or chroot, or give the container CAP_SYS_ADMIN)".into(),
        )),
        Isolation::Namespaces => trial_unshare().map_err(|e| {
            unavailable(format!(
                "unshare of namespaces refused: {e} (a seccomp profile? use --isolation chroot)"
            ))
        }),
        Isolation::Chroot => chroot_possible(caps).map_err(unavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isolation in [
            Isolation::Namespaces,
            Isolation::Rootless,
            Isolation::Chroot,
        ] {
            assert_eq!(isolation.name().parse::<Isolation>().unwrap(), isolation);
        }
        assert!("vm".parse::<Isolation>().is_err());
    }

    #[test]
    fn only_chroot_admits_what_it_shares() {
        assert!(Isolation::Chroot.not_isolated().is_some());
        assert!(Isolation::Namespaces.not_isolated().is_none());
    }
}
