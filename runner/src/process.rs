//! The command process: drops to the step's user and capabilities, then execs.

use std::collections::HashSet;
use std::convert::Infallible;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid};

use crate::error::os;
use crate::spec::{SandboxSpec, DEFAULT_PATH};
use crate::Error;

/// docker's default capability set for containers (and BuildKit's for RUN).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Sets up the current process as the step's command and execs it; returns only on failure.
pub(crate) fn exec(spec: &SandboxSpec) -> Error {
    match prepare_and_exec(spec) {
        Ok(never) => match never {},
        Err(err) => err,
    }
}

/// `setrlimit` for each of the spec's ulimits (inherited across exec).
fn set_ulimits(spec: &SandboxSpec) -> Result<(), Error> {
    for ulimit in &spec.ulimits {
        let Some(resource) = ulimit.resource() else {
            return Err(Error::BadUlimit {
                name: ulimit.name.clone(),
            });
        };
        let value = |v: u64| {
            if v == u64::MAX {
                libc::RLIM_INFINITY
            } else {
                v
            }
        };
        let limit = libc::rlimit {
            rlim_cur: value(ulimit.soft),
            rlim_max: value(ulimit.hard),
        };
        // SAFETY: setrlimit reads one rlimit struct that lives across the call.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(Error::Setrlimit {
                name: ulimit.name.clone(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

fn prepare_and_exec(spec: &SandboxSpec) -> Result<Infallible, Error> {
    let _ = nix::unistd::setsid();
    // runc creates a missing working directory (as root, before dropping privileges).
    let _ = std::fs::create_dir_all(&spec.cwd);
    let argv = cstrings(&spec.argv)?;
    let env = cstrings(&spec.env)?;
    let program = find_program(&spec.argv[0], &spec.env)?;
    let program_c = CString::new(program.as_bytes()).map_err(|_| Error::NotFound {
        name: spec.argv[0].clone(),
    })?;

    // Before the capabilities go: raising a hard limit needs CAP_SYS_RESOURCE.
    set_ulimits(spec)?;
    drop_capabilities().map_err(Error::Capabilities)?;
    switch_user(spec)?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| Error::NoNewPrivs(os(e)))?;
    nix::unistd::chdir(spec.cwd.as_str()).map_err(|e| Error::Chdir {
        cwd: spec.cwd.clone(),
        source: os(e),
    })?;
    // Everything above stdio is close-on-exec from here on; the report pipe stays usable
    // until execve succeeds, so a failed exec can still be reported.
    // SAFETY: close_range only changes this process's fd flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let Err(err) = nix::unistd::execve(&program_c, &argv, &env);
    Err(Error::Exec {
        path: program,
        source: os(err),
    })
}

fn cstrings(items: &[String]) -> Result<Vec<CString>, Error> {
    items
        .iter()
        .map(|item| {
            CString::new(item.as_bytes()).map_err(|_| Error::Exec {
                path: item.clone(),
                source: io::Error::from_raw_os_error(libc::EINVAL),
            })
        })
        .collect()
}

/// Resolves `argv[0]` against the step's own `PATH` (not the runner's), inside the new root.
fn find_program(name: &str, env: &[String]) -> Result<String, Error> {
    if name.contains('/') {
        return Ok(name.to_string());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|var| var.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(String::from_utf8_lossy(candidate.as_os_str().as_bytes()).into_owned());
            }
        }
    }
    Err(Error::NotFound {
        name: name.to_string(),
    })
}

/// Limits every capability set to docker's defaults: bounding, permitted and effective to
/// the default set, inheritable and ambient cleared (as runc does since CVE-2022-24769).
fn drop_capabilities() -> io::Result<()> {
    let failed = |e: caps::errors::CapsError| io::Error::other(e.to_string());
    // Where the runner itself lacks some (a container's narrower set), it keeps what it has.
    let permitted = caps::read(None, CapSet::Permitted).map_err(failed)?;
    let keep: HashSet<Capability> = DEFAULT_CAPABILITIES
        .into_iter()
        .filter(|cap| permitted.contains(cap))
        .collect();
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(failed)?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(failed)?;
    caps::clear(None, CapSet::Inheritable).map_err(failed)?;
    caps::set(None, CapSet::Effective, &keep).map_err(failed)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(failed)?;
    Ok(())
}

/// Supplementary groups, then gid, then uid: a non-root uid loses its permitted and
/// effective capabilities here, as in docker.
fn switch_user(spec: &SandboxSpec) -> Result<(), Error> {
    let user = &spec.user;
    let failed = |e| Error::SwitchUser {
        uid: user.uid,
        gid: user.gid,
        source: os(e),
    };
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    // A single-id user namespace (rootless without /etc/subgid) denies setgroups; the
    // process has no supplementary group there to drop.
    let denied = std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
    if !denied {
        nix::unistd::setgroups(&groups).map_err(failed)?;
    }
    let gid = Gid::from_raw(user.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(failed)?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(failed)
}
