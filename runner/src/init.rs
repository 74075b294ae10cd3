//! The sandbox's init processes: the re-executed `sandbox-init` entry and the namespace's PID 1.
//!
//! Process choreography (names as seen in `ps`):
//! - `rbuild:[init]`: the re-executed binary. Reads the request on stdin, joins the step's
//!   cgroups, unshares the namespaces, forks PID 1, waits for it and exits with its status.
//! - `rbuild:[pid1]`: PID 1 of the new pid namespace. Builds the root filesystem
//!   ([`crate::rootfs`]), pivots into it, forks the command, forwards SIGTERM/SIGINT to it,
//!   reaps every zombie, and reports the command's status.
//! - `rbuild:[cmd]`: drops to the step's user and capabilities and execs the command
//!   ([`crate::process`]).
//!
//! Every process dies with its parent (`PR_SET_PDEATHSIG`), and the pid namespace dies
//! with its PID 1, so killing the runner kills the whole step.
//!
//! The entry sequence, in one place (each step one call below):
//! 1. join cgroups ([`run_init`]),
//! 2. namespaces: `unshare` ([`run_init`]) — a rootless mode adds a user namespace here
//!    and has the runner write the uid/gid maps (newuidmap) before going on,
//! 3. mount the root and pivot ([`crate::rootfs::enter`], from [`run_pid1`]) — the chroot
//!    isolation replaces 2 and 3 with `chroot` ([`crate::chroot`]),
//! 4. drop user and capabilities, then exec ([`crate::process::exec`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sched::CloneFlags;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::error::os;
use crate::message::Message;
use crate::spec::{Network, SandboxSpec};
use crate::{process, rootfs, Error, Isolation};

/// The fd the report pipe is passed on to the init.
pub(crate) const REPORT_FD: i32 = 3;

/// Exit code of the init when setup fails before the command runs (as `docker run`'s 125).
const SETUP_FAILED: u8 = 125;

/// What the runner sends the init on its stdin.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitRequest {
    /// The step.
    pub spec: SandboxSpec,
    /// `cgroup.procs` files the init joins before unsharing (empty without limits).
    pub cgroup_procs: Vec<PathBuf>,
    /// Mount the overlay with `mount(2)` even where the new mount API works.
    pub legacy_overlay: bool,
    /// How the step is isolated.
    #[serde(default)]
    pub isolation: Isolation,
}

/// The write end of the report pipe.
pub(crate) struct Report(File);

impl Report {
    /// Sends one message; a runner that stopped listening is not an error here.
    pub(crate) fn send(&mut self, message: &Message) {
        let _ = self.0.write_all(&message.to_line());
    }

    /// Reports a failed setup step.
    pub(crate) fn failed(&mut self, err: &Error) {
        self.send(&Message::SetupFailed {
            step: err.to_string(),
            errno: err.errno(),
        });
    }
}

/// The child pid signals are forwarded to (0 while there is none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

pub(crate) fn forward_signals_to(pid: Pid) {
    FORWARD_TO.store(pid.as_raw(), Ordering::Relaxed);
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only calls kill(2) with an atomic it loads.
        let _ = unsafe { signal::signal(sig, SigHandler::Handler(forward_signal)) };
    }
}

/// Names the current process (`comm`, visible in `ps`).
fn set_name(name: &str) {
    if let Ok(name) = std::ffi::CString::new(name) {
        let _ = nix::sys::prctl::set_name(&name);
    }
}

/// Closes every inherited fd above the report pipe: whatever the multi-threaded runner had
/// open without close-on-exec must not reach the sandbox.
fn close_stray_fds() {
    // SAFETY: close_range only affects this process's fd table.
    unsafe { libc::syscall(libc::SYS_close_range, REPORT_FD as u32 + 1, u32::MAX, 0) };
}

/// The `sandbox-init` entry point; returns the exit code of the init process.
pub fn sandbox_init_main() -> u8 {
    set_name("rbuild:[init]");
    close_stray_fds();
    // SAFETY: the runner passes the report pipe's write end as fd 3; nothing else owns it.
    let report_fd = unsafe { OwnedFd::from_raw_fd(REPORT_FD) };
    let _ = nix::fcntl::fcntl(
        &report_fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mut report = Report(File::from(report_fd));

    let mut input = Vec::new();
    if let Err(err) = std::io::stdin().lock().read_to_end(&mut input) {
        report.failed(&Error::Channel(err));
        return SETUP_FAILED;
    }
    let request: InitRequest = match serde_json::from_slice(&input) {
        Ok(request) => request,
        Err(err) => {
            report.failed(&Error::SpecDecode(err));
            return SETUP_FAILED;
        }
    };
    if let Err(err) = stdin_from_dev_null() {
        report.failed(&err);
        return SETUP_FAILED;
    }
    match run_init(&request, &mut report) {
        Ok(code) => code,
        Err(err) => {
            report.failed(&err);
            SETUP_FAILED
        }
    }
}

fn stdin_from_dev_null() -> Result<(), Error> {
    let null = File::open("/dev/null").map_err(|source| Error::Create {
        path: "/dev/null".into(),
        source,
    })?;
    nix::unistd::dup2_stdin(&null).map_err(|e| Error::Create {
        path: "/dev/null".into(),
        source: os(e),
    })
}

/// `rbuild:[init]`: cgroups, namespaces, then PID 1.
fn run_init(request: &InitRequest, report: &mut Report) -> Result<u8, Error> {
    if request.isolation == Isolation::Chroot {
        return crate::chroot::run(request, report);
    }
    for procs in &request.cgroup_procs {
        std::fs::write(procs, "0").map_err(|source| Error::JoinCgroup {
            path: procs.clone(),
            source,
        })?;
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if request.spec.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(|e| Error::Unshare(os(e)))?;

    // SAFETY: this process is single-threaded (a fresh exec that started no threads).
    match unsafe { fork() }.map_err(|e| Error::Fork {
        what: "pid 1",
        source: os(e),
    })? {
        ForkResult::Child => {
            let code = match run_pid1(request, report) {
                Ok(()) => 0,
                Err(err) => {
                    report.failed(&err);
                    SETUP_FAILED
                }
            };
            std::process::exit(i32::from(code));
        }
        ForkResult::Parent { child } => {
            forward_signals_to(child);
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as u8),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return Ok(SETUP_FAILED),
                }
            }
        }
    }
}

/// `rbuild:[pid1]`: the root filesystem, then the command, then reaping until it exits.
fn run_pid1(request: &InitRequest, report: &mut Report) -> Result<(), Error> {
    let spec = &request.spec;
    set_name("rbuild:[pid1]");
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if spec.network == Network::None {
        crate::net::loopback_up().map_err(Error::Loopback)?;
    }
    match nix::unistd::sethostname(&spec.hostname) {
        Ok(()) => {}
        // A container's seccomp profile may refuse sethostname even in the step's own UTS
        // namespace: the step then sees the container's hostname (/etc/hostname is still
        // the step's).
        Err(nix::errno::Errno::EPERM) if request.isolation == Isolation::Rootless => {}
        Err(e) => {
            return Err(Error::Hostname {
                hostname: spec.hostname.clone(),
                source: os(e),
            })
        }
    }
    let userxattr = request.isolation == Isolation::Rootless;
    rootfs::enter(spec, request.legacy_overlay, userxattr)?;

    report.send(&Message::Started);
    // SAFETY: single-threaded, see run_init.
    let cmd = match unsafe { fork() }.map_err(|e| Error::Fork {
        what: "command",
        source: os(e),
    })? {
        ForkResult::Child => {
            set_name("rbuild:[cmd]");
            let err = process::exec(spec);
            report.failed(&err);
            std::process::exit(127);
        }
        ForkResult::Parent { child } => child,
    };
    forward_signals_to(cmd);
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == cmd => {
                report.send(&Message::Exited(code));
                return Ok(());
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == cmd => {
                report.send(&Message::Signaled(sig as i32));
                return Ok(());
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::Fork {
                    what: "wait for command",
                    source: os(e),
                })
            }
        }
    }
}
