//! The chroot isolation's init: no namespaces, the command `chroot`ed into the step's
//! materialised root (the upper dir of a copying snapshotter), its strays killed after it.
//!
//! What it still does: the step's user, capabilities, no_new_privs, ulimits, cgroups, cwd
//! and env, and the device nodes of /dev (made before and removed after the step, with
//! their directory's times put back, so they never reach the layer). What it cannot do:
//! a pid, mount, network, uts or ipc namespace, /proc, /sys, /etc/hosts, `RUN --mount`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::error::os;
use crate::init::{InitRequest, Report};
use crate::message::Message;
use crate::mountpoints::Times;
use crate::spec::Network;
use crate::{process, Error};

/// Device nodes made in the root's /dev when the image lacks them: (name, major, minor).
const DEVICES: [(&str, u32, u32); 5] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
];

/// Refuses what chroot cannot give, before anything runs.
pub(crate) fn refuse_unsupported(request: &InitRequest) -> Result<(), Error> {
    let spec = &request.spec;
    let refused = |what: &'static str| Err(Error::NotInChroot { what });
    if !spec.lowers.is_empty() {
        return refused("overlay lowers (the snapshotter must materialise the root)");
    }
    if spec.network == Network::None {
        return refused("RUN --network=none (a network namespace)");
    }
    if !spec.mounts.is_empty() {
        return refused("RUN --mount (mounts)");
    }
    Ok(())
}

/// Made /dev nodes, to be removed after the step, and the times of their directory.
struct DevNodes {
    dir: PathBuf,
    created_dir: bool,
    made: Vec<PathBuf>,
    /// /dev's times before the nodes were made.
    times: Option<Times>,
    /// /dev's mtime right after: if it is still that, the step did not touch /dev.
    made_mtime: Option<(i64, i64)>,
    /// The root's times before /dev was made, when it was.
    root_times: Option<Times>,
}

impl DevNodes {
    fn make(root: &Path) -> Result<DevNodes, Error> {
        let dir = root.join("dev");
        let failed = |path: &Path| {
            let path = path.to_path_buf();
            move |e| Error::Create {
                path,
                source: os(e),
            }
        };
        let root_meta = fs::symlink_metadata(root).map_err(|source| Error::Create {
            path: root.to_path_buf(),
            source,
        })?;
        let mut nodes = DevNodes {
            dir: dir.clone(),
            created_dir: false,
            made: Vec::new(),
            times: None,
            made_mtime: None,
            root_times: None,
        };
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            // A /dev that is a symlink or a file is the image's business: nothing is made.
            Ok(_) => return Ok(nodes),
            Err(_) => {
                nix::unistd::mkdir(&dir, nix::sys::stat::Mode::from_bits_truncate(0o755))
                    .map_err(failed(&dir))?;
                nodes.created_dir = true;
                nodes.root_times = Some(Times::of(&root_meta));
            }
        }
        let before = fs::symlink_metadata(&dir).map_err(|source| Error::Create {
            path: dir.clone(),
            source,
        })?;
        for (name, major, minor) in DEVICES {
            let node = dir.join(name);
            if fs::symlink_metadata(&node).is_ok() {
                continue;
            }
            match nix::sys::stat::mknod(
                &node,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(major.into(), minor.into()),
            ) {
                Ok(()) => {}
                // Without CAP_MKNOD (podman's default set) the step has no /dev nodes.
                Err(nix::errno::Errno::EPERM) => continue,
                Err(e) => return Err(failed(&node)(e)),
            }
            // mknod honours the umask; the nodes are world-writable as in any /dev.
            let _ = fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o666));
            nodes.made.push(node);
        }
        let after = fs::symlink_metadata(&dir).map_err(|source| Error::Create {
            path: dir.clone(),
            source,
        })?;
        nodes.times = Some(Times::of(&before));
        nodes.made_mtime = Some((after.mtime(), after.mtime_nsec()));
        Ok(nodes)
    }

    /// Removes what [`DevNodes::make`] made and puts the directories' times back, unless
    /// the step itself changed the directory since (then its times are the step's).
    fn remove(self, root: &Path) {
        let untouched = fs::symlink_metadata(&self.dir)
            .is_ok_and(|meta| self.made_mtime == Some((meta.mtime(), meta.mtime_nsec())));
        for node in &self.made {
            let _ = fs::remove_file(node);
        }
        if self.created_dir && untouched {
            let _ = fs::remove_dir(&self.dir);
            if let Some(times) = self.root_times {
                times.restore(root);
            }
        } else if untouched {
            if let Some(times) = self.times {
                times.restore(&self.dir);
            }
        }
    }
}

/// The chroot isolation's init: the command in the root, every stray killed after it.
pub(crate) fn run(request: &InitRequest, report: &mut Report) -> Result<u8, Error> {
    let spec = &request.spec;
    refuse_unsupported(request)?;
    for procs in &request.cgroup_procs {
        fs::write(procs, "0").map_err(|source| Error::JoinCgroup {
            path: procs.clone(),
            source,
        })?;
    }
    // Orphans of the step are re-parented to us, so that they can be killed after it.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| Error::Fork {
        what: "subreaper",
        source: os(e),
    })?;
    // Without a pid namespace nothing kills the step's processes when the runner dies:
    // its death interrupts the wait below, and every process of the step is killed.
    watch_for_runner_death()?;
    let root = spec.upper.clone();
    let dev = DevNodes::make(&root)?;
    report.send(&Message::Started);
    // SAFETY: the init is single-threaded (a fresh exec that started no threads).
    let cmd = match unsafe { fork() }.map_err(|e| Error::Fork {
        what: "command",
        source: os(e),
    })? {
        ForkResult::Child => {
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            let err = enter_root(&root)
                .err()
                .unwrap_or_else(|| process::exec(spec));
            report.failed(&err);
            std::process::exit(127);
        }
        ForkResult::Parent { child } => child,
    };
    crate::init::forward_signals_to(cmd);
    let status = wait_for(cmd);
    kill_strays();
    dev.remove(&root);
    if RUNNER_DIED.load(Ordering::Relaxed) {
        return Ok(128 + RUNNER_DEATH_SIGNAL as u8);
    }
    match status {
        Some(message) => report.send(&message),
        None => {
            return Err(Error::Fork {
                what: "wait for command",
                source: std::io::Error::from_raw_os_error(libc::ECHILD),
            })
        }
    }
    Ok(0)
}

fn enter_root(root: &Path) -> Result<(), Error> {
    nix::unistd::chroot(root).map_err(|e| Error::Chroot {
        root: root.to_path_buf(),
        source: os(e),
    })?;
    nix::unistd::chdir("/").map_err(|e| Error::Chroot {
        root: root.to_path_buf(),
        source: os(e),
    })
}

/// The signal the init gets when the runner dies (`PR_SET_PDEATHSIG`) or cancels the
/// step, caught.
const RUNNER_DEATH_SIGNAL: i32 = libc::SIGUSR2;

/// Set when [`RUNNER_DEATH_SIGNAL`] arrived.
static RUNNER_DIED: AtomicBool = AtomicBool::new(false);

/// The signal that stops a chroot step with all its processes.
pub(crate) fn stop_signal() -> rustix::process::Signal {
    rustix::process::Signal::USR2
}

extern "C" fn runner_died(_: libc::c_int) {
    RUNNER_DIED.store(true, Ordering::Relaxed);
}

/// Replaces the runner's `SIGKILL` death signal with a caught one, so that the init lives
/// long enough to kill the step. A runner that already died is noticed at once.
fn watch_for_runner_death() -> Result<(), Error> {
    let parent = nix::unistd::getppid();
    // SAFETY: the handler only stores to an atomic. No SA_RESTART: the wait is interrupted.
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(runner_died),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    unsafe { nix::sys::signal::sigaction(Signal::SIGUSR2, &action) }.map_err(|e| Error::Fork {
        what: "death signal",
        source: os(e),
    })?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGUSR2).map_err(|e| Error::Fork {
        what: "death signal",
        source: os(e),
    })?;
    if nix::unistd::getppid() != parent {
        RUNNER_DIED.store(true, Ordering::Relaxed);
    }
    Ok(())
}

fn wait_for(cmd: Pid) -> Option<Message> {
    loop {
        if RUNNER_DIED.load(Ordering::Relaxed) {
            return None;
        }
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == cmd => return Some(Message::Exited(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == cmd => {
                return Some(Message::Signaled(sig as i32))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Kills every process the step left behind (re-parented to this subreaper) and reaps it.
fn kill_strays() {
    loop {
        let children = children_of_self();
        if children.is_empty() {
            // Reap whatever died meanwhile; stop when there is nothing left to wait for.
            match waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            }
        }
        for pid in children {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        while let Ok(status) = waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// The pids of this process's children, from `/proc/self/task/*/children`.
fn children_of_self() -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}
