//! Rootless: re-executes the whole `rbuild` command of a non-root user inside a user
//! namespace where it is root, mapped through the user's /etc/subuid and /etc/subgid
//! ranges (newuidmap, newgidmap), or onto the user's own ids alone when there are none.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::os;
use crate::Error;

/// Set (to the mapping's description) in the environment of the re-executed command.
pub const USERNS_ENV: &str = "RBUILD_USERNS";

/// Whether this process is the command re-executed in its user namespace.
pub fn in_rootless_namespace() -> bool {
    std::env::var_os(USERNS_ENV).is_some()
}

/// Whether this process acts for a non-root user: its euid, or inside a rootless user
/// namespace the id its root maps to outside.
pub fn acts_for_non_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return true;
    }
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    map.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() == 3 && f[0] == "0" && f[1] != "0"
    })
}

/// One subordinate id range (`/etc/subuid` line): the first host id and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First host id.
    pub start: u32,
    /// How many ids.
    pub count: u32,
}

/// How the user namespace's ids map to the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapping {
    /// The user's name.
    pub user: String,
    /// Host uid and gid, mapped to 0 inside.
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
    /// Ranges mapped to 1.. inside, when the user has both.
    pub ranges: Option<(IdRange, IdRange)>,
    /// Root without CAP_SYS_ADMIN (a container): every id of this process's own maps,
    /// mapped onto itself (written directly, with CAP_SETUID and CAP_SETGID).
    pub identity: bool,
}

impl IdMapping {
    /// Root's mapping: every id onto itself.
    pub fn identity() -> IdMapping {
        IdMapping {
            user: "root".into(),
            uid: 0,
            gid: 0,
            ranges: None,
            identity: true,
        }
    }

    /// What `auto` says about the mapping.
    pub fn describe(&self) -> String {
        if self.identity {
            return "a user namespace mapping root's ids onto themselves".into();
        }
        match self.ranges {
            Some((uids, _)) => format!("{} ids from /etc/subuid", uids.count),
            None => format!(
                "no /etc/subuid range for user {0}: one id only, chown to other ids will fail \
                 (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {0})",
                self.user
            ),
        }
    }
}

/// The first range of `name` (or of the numeric `id`) in a subid file's text.
fn find_range(text: &str, name: &str, id: u32) -> Option<IdRange> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        if owner != name && owner.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let start = fields.next()?.parse().ok()?;
        let count: u32 = fields.next()?.parse().ok()?;
        (count > 0).then_some(IdRange { start, count })
    })
}

/// The mapping for this (non-root) process's user.
pub fn id_mapping() -> Result<IdMapping, Error> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
    let subuid = find_range(&read("/etc/subuid"), &user, uid.as_raw());
    let subgid = find_range(&read("/etc/subgid"), &user, uid.as_raw());
    let ranges = match (subuid, subgid) {
        (Some(u), Some(g)) => {
            for tool in ["newuidmap", "newgidmap"] {
                if find_program(tool).is_none() {
                    return Err(Error::RootlessTool { tool });
                }
            }
            Some((u, g))
        }
        _ => None,
    };
    Ok(IdMapping {
        user,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        ranges,
        identity: false,
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Writes the maps of the process `pid` (in its fresh user namespace).
fn write_maps(pid: i32, mapping: &IdMapping) -> Result<(), Error> {
    let failed = |what: &'static str| move |source: std::io::Error| Error::IdMap { what, source };
    if mapping.identity {
        let proc = Path::new("/proc").join(pid.to_string());
        for file in ["uid_map", "gid_map"] {
            let own = std::fs::read_to_string(Path::new("/proc/self").join(file))
                .map_err(failed(file))?;
            let map: String = own
                .lines()
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    (f.len() == 3).then(|| format!("{0} {0} {1}\n", f[0], f[2]))
                })
                .collect();
            std::fs::write(proc.join(file), map).map_err(failed(file))?;
        }
        return Ok(());
    }
    match mapping.ranges {
        Some((uids, gids)) => {
            for (tool, own, range) in [
                ("newuidmap", mapping.uid, uids),
                ("newgidmap", mapping.gid, gids),
            ] {
                let out = Command::new(tool)
                    .arg(pid.to_string())
                    .args(["0", &own.to_string(), "1"])
                    .args(["1", &range.start.to_string(), &range.count.to_string()])
                    .output()
                    .map_err(failed(tool))?;
                if !out.status.success() {
                    return Err(Error::IdMapRefused {
                        tool,
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    });
                }
            }
        }
        None => {
            let proc = Path::new("/proc").join(pid.to_string());
            std::fs::write(proc.join("uid_map"), format!("0 {} 1\n", mapping.uid))
                .map_err(failed("uid_map"))?;
            std::fs::write(proc.join("setgroups"), "deny").map_err(failed("setgroups"))?;
            std::fs::write(proc.join("gid_map"), format!("0 {} 1\n", mapping.gid))
                .map_err(failed("gid_map"))?;
        }
    }
    Ok(())
}

/// Runs this binary again with the same arguments in a new user namespace mapped by
/// `mapping`, and returns its exit code (128 + signal when it was killed).
pub fn reexec_in_user_namespace(mapping: &IdMapping) -> Result<i32, Error> {
    let (ready_read, ready_write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Pipe(os(e)))?;
    let (go_read, go_write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Pipe(os(e)))?;
    let (ready_raw, go_raw) = (ready_write.as_raw_fd(), go_read.as_raw_fd());

    // The maps are written from another thread: `spawn` returns only once the child execs,
    // and the child waits in `pre_exec` until its maps are there.
    let mapper = {
        let mapping = mapping.clone();
        std::thread::spawn(move || -> Result<(), Error> {
            let mut pid = [0u8; 4];
            let mut ready = std::fs::File::from(ready_read);
            if ready.read_exact(&mut pid).is_err() {
                return Ok(()); // the child failed before unsharing; spawn reports it
            }
            let mapped = write_maps(i32::from_ne_bytes(pid), &mapping);
            let mut go = std::fs::File::from(go_write);
            let _ = go.write_all(if mapped.is_ok() { b"1" } else { b"0" });
            mapped
        })
    };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut command = Command::new("/proc/self/exe");
    command
        .args(std::env::args_os().skip(1))
        .env(USERNS_ENV, mapping.describe());
    // SAFETY: only async-signal-safe calls (unshare, getpid, read, write, prctl) between
    // fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(ready_raw, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            let mut go = [0u8; 1];
            if libc::read(go_raw, go.as_mut_ptr().cast(), 1) != 1 || go[0] != b'1' {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    drop(ready_write);
    drop(go_read);
    let mapped = mapper.join().unwrap_or(Ok(()));
    let mut child = match (spawned, mapped) {
        (_, Err(err)) => return Err(err),
        (Err(source), Ok(())) => return Err(Error::Spawn { exe, source }),
        (Ok(child), Ok(())) => child,
    };
    let status = child.wait().map_err(Error::Wait)?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_or_uid() {
        let text = "other:100000:65536\nci:165536:65536\n1001:231072:1000\nzero:1:0\n";
        assert_eq!(
            find_range(text, "ci", 1000),
            Some(IdRange {
                start: 165536,
                count: 65536
            })
        );
        assert_eq!(find_range(text, "x", 1001).map(|r| r.start), Some(231072));
        assert_eq!(find_range(text, "zero", 5), None);
        assert_eq!(find_range(text, "nobody", 7), None);
    }
}
