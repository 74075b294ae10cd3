//! The runner side of a step: starts the init, feeds it the spec, streams output, collects the status.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};

use crate::cgroup::StepCgroup;
use crate::error::os;
use crate::init::{InitRequest, REPORT_FD};
use crate::message::Message;
use crate::mountpoints::Mountpoints;
use crate::spec::{RootKind, SandboxSpec};
use crate::{Error, Isolation, INIT_ARG};

/// Which of the command's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How the step's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if it was killed.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the step.
    pub oom_killed: bool,
    /// The memory limit the step ran with, for messages.
    pub memory_limit: Option<u64>,
}

impl ExitStatus {
    /// True when the command exited with code 0. As in docker, a step whose command
    /// survived the OOM kill of one of its children (and exited 0) succeeded.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.oom_killed && !self.success() {
            write!(f, "out of memory")?;
            if let Some(limit) = self.memory_limit {
                write!(f, " (limit {})", human_bytes(limit))?;
            }
            return Ok(());
        }
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code: {code}"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => write!(f, "unknown status"),
        }
    }
}

/// `64MiB`, `1.5GiB`, `100B`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if value.fract() == 0.0 {
        format!("{value}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

/// Stops a running step from another thread: the step's whole process tree is killed
/// and [`Sandbox::run_cancellable`] returns [`Error::Cancelled`]. Cloning shares the handle.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    state: Arc<Mutex<CancelState>>,
}

#[derive(Debug, Default)]
struct CancelState {
    cancelled: bool,
    /// A pidfd of the running init: signalling it can never hit a recycled pid.
    init: Option<OwnedFd>,
    /// What stops it: SIGKILL (the pid namespace dies with it), or the chroot init's
    /// caught signal (it kills the step's processes, which no namespace holds, then exits).
    signal: Option<rustix::process::Signal>,
}

impl Cancel {
    /// A handle not cancelled yet.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Kills the step if it runs, and makes a step not started yet fail at once.
    pub fn cancel(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        state.cancelled = true;
        if let Some(init) = &state.init {
            // The init's death takes PID 1 and with it the whole pid namespace.
            let signal = state.signal.unwrap_or(rustix::process::Signal::KILL);
            let _ = rustix::process::pidfd_send_signal(init, signal);
        }
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        state.cancelled
    }

    fn attach(&self, pid: u32, signal: rustix::process::Signal) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        });
        if state.cancelled {
            if let Some(fd) = &pidfd {
                let _ = rustix::process::pidfd_send_signal(fd, signal);
            }
        }
        state.init = pidfd;
        state.signal = Some(signal);
    }

    fn detach(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        state.init = None;
    }
}

/// Runs steps by re-executing a binary as the sandbox's init.
#[derive(Debug, Clone)]
pub struct Sandbox {
    init_exe: PathBuf,
    legacy_overlay: bool,
    isolation: Isolation,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

enum Event {
    Line(Stream, Vec<u8>),
    Report(Message),
    ChannelError(std::io::Error),
}

impl Sandbox {
    /// A sandbox that re-executes the current binary (`/proc/self/exe`), whose `main` must
    /// dispatch [`INIT_ARG`] to [`crate::sandbox_init_main`].
    pub fn new() -> Self {
        Sandbox {
            init_exe: PathBuf::from("/proc/self/exe"),
            legacy_overlay: false,
            isolation: Isolation::Namespaces,
        }
    }

    /// A sandbox that re-executes `exe` as its init (tests use their own binary).
    pub fn with_init_exe(exe: impl Into<PathBuf>) -> Self {
        Sandbox {
            init_exe: exe.into(),
            legacy_overlay: false,
            isolation: Isolation::Namespaces,
        }
    }

    /// Mounts the overlay with `mount(2)` and a one-page option string, as kernels before
    /// 6.8 (without `lowerdir+`) need; the runner falls back to it by itself there.
    pub fn with_legacy_overlay(mut self, legacy: bool) -> Self {
        self.legacy_overlay = legacy;
        self
    }

    /// Isolates steps with `isolation` (namespaces by default). With
    /// [`Isolation::Chroot`], a spec's `upper` is the whole root and `lowers` must be empty.
    pub fn with_isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// The isolation steps get.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Runs one step and blocks until it ends. `output` gets the command's stdout and stderr
    /// line by line, each line with its trailing `\n` (the last may lack one).
    ///
    /// `Ok` carries the command's status, whatever it is; `Err` means the sandbox could
    /// not be set up (a failed mount, an unknown executable...).
    pub fn run(
        &self,
        spec: &SandboxSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<ExitStatus, Error> {
        self.run_cancellable(spec, output, &Cancel::new())
    }

    /// [`Sandbox::run`], stoppable from another thread through `cancel`.
    pub fn run_cancellable(
        &self,
        spec: &SandboxSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: &Cancel,
    ) -> Result<ExitStatus, Error> {
        spec.validate()?;
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        // A copied root has no stub layer: its missing mountpoints are made for the step.
        let namespaced_copy = self.isolation != Isolation::Chroot && spec.root == RootKind::Copied;
        let mountpoints = if namespaced_copy {
            Some(Mountpoints::make(&spec.upper, spec)?)
        } else {
            None
        };
        let cgroup = match StepCgroup::create(&spec.limits) {
            Ok(cgroup) => cgroup,
            Err(err) => {
                if let Some(mountpoints) = mountpoints {
                    mountpoints.remove();
                }
                return Err(err);
            }
        };
        let result = self.run_in(spec, cgroup.as_ref(), output, cancel);
        let oom_killed = cgroup.as_ref().is_some_and(StepCgroup::oom_killed);
        // The sandbox's mount namespace died with its last process: nothing is mounted
        // on the mountpoints any more.
        if let Some(mountpoints) = mountpoints {
            mountpoints.remove();
        }
        if let Some(cgroup) = cgroup {
            cgroup.destroy()?;
        }
        let mut status = result?;
        // The overlay is gone with the sandbox's mount namespace: the upper dir is ours again.
        if self.isolation != Isolation::Chroot && spec.root == RootKind::Overlay {
            crate::upper::tidy(&spec.upper)?;
        }
        status.oom_killed = oom_killed;
        status.memory_limit = spec.limits.memory;
        Ok(status)
    }

    fn run_in(
        &self,
        spec: &SandboxSpec,
        cgroup: Option<&StepCgroup>,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: &Cancel,
    ) -> Result<ExitStatus, Error> {
        let request = InitRequest {
            spec: spec.clone(),
            cgroup_procs: cgroup.map(StepCgroup::procs_files).unwrap_or_default(),
            legacy_overlay: self.legacy_overlay,
            isolation: self.isolation,
        };
        let request = serde_json::to_vec(&request).map_err(Error::SpecEncode)?;
        let (report_read, report_write): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Pipe(os(e)))?;
        let report_raw = report_write.as_raw_fd();

        let mut command = Command::new(&self.init_exe);
        command
            .arg(INIT_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (dup2, fcntl, prctl) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if report_raw == REPORT_FD {
                    if libc::fcntl(REPORT_FD, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(report_raw, REPORT_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The init dies with the thread that runs this step.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            exe: self.init_exe.clone(),
            source,
        })?;
        drop(report_write);
        let stop = match self.isolation {
            Isolation::Chroot => crate::chroot::stop_signal(),
            _ => rustix::process::Signal::KILL,
        };
        cancel.attach(child.id(), stop);

        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (tx, rx) = mpsc::channel::<Event>();
        let events = std::thread::scope(|scope| {
            if let Some(mut stdin) = stdin {
                let tx = tx.clone();
                scope.spawn(move || {
                    // The init reads the request to EOF before anything else; if it died
                    // early, the missing status is reported below.
                    if let Err(err) = stdin.write_all(&request) {
                        if err.kind() != std::io::ErrorKind::BrokenPipe {
                            let _ = tx.send(Event::ChannelError(err));
                        }
                    }
                });
            }
            if let Some(stdout) = stdout {
                let tx = tx.clone();
                scope.spawn(move || forward_lines(stdout, Stream::Stdout, &tx));
            }
            if let Some(stderr) = stderr {
                let tx = tx.clone();
                scope.spawn(move || forward_lines(stderr, Stream::Stderr, &tx));
            }
            let tx_report = tx;
            scope.spawn(move || {
                let reader = BufReader::new(std::fs::File::from(report_read));
                for line in reader.split(b'\n') {
                    match line {
                        Ok(line) => {
                            if let Some(message) = Message::from_line(&line) {
                                let _ = tx_report.send(Event::Report(message));
                            }
                        }
                        Err(err) => {
                            let _ = tx_report.send(Event::ChannelError(err));
                            break;
                        }
                    }
                }
            });
            let mut reports = Vec::new();
            let mut channel_error = None;
            for event in rx.iter() {
                match event {
                    Event::Line(stream, line) => output(stream, &line),
                    Event::Report(message) => reports.push(message),
                    Event::ChannelError(err) => {
                        channel_error.get_or_insert(err);
                    }
                }
            }
            (reports, channel_error)
        });
        let waited = child.wait();
        cancel.detach();
        let init_status = waited.map_err(Error::Wait)?;
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let (reports, channel_error) = events;

        for report in &reports {
            if let Message::SetupFailed { step, errno } = report {
                return Err(Error::Setup {
                    step: step.clone(),
                    source: (*errno != 0).then(|| std::io::Error::from_raw_os_error(*errno)),
                });
            }
        }
        for report in reports.iter().rev() {
            match report {
                Message::Exited(code) => {
                    return Ok(ExitStatus {
                        code: Some(*code),
                        signal: None,
                        oom_killed: false,
                        memory_limit: None,
                    })
                }
                Message::Signaled(signal) => {
                    return Ok(ExitStatus {
                        code: None,
                        signal: Some(*signal),
                        oom_killed: false,
                        memory_limit: None,
                    })
                }
                _ => {}
            }
        }
        if let Some(err) = channel_error {
            return Err(Error::Channel(err));
        }
        Err(Error::InitDied {
            status: init_status,
        })
    }
}

/// The longest line handed to the output callback in one piece.
const MAX_LINE: u64 = 64 * 1024;

fn forward_lines(stream: impl Read, which: Stream, tx: &mpsc::Sender<Event>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        // A line is cut at MAX_LINE bytes, so output without newlines cannot grow unbounded.
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if tx.send(Event::Line(which, line)).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                let _ = tx.send(Event::ChannelError(err));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_status_names_the_limit() {
        let status = ExitStatus {
            code: None,
            signal: Some(9),
            oom_killed: true,
            memory_limit: Some(64 << 20),
        };
        assert_eq!(status.to_string(), "out of memory (limit 64MiB)");
        assert!(!status.success());
    }

    #[test]
    fn human_bytes_rounds() {
        assert_eq!(human_bytes(100), "100B");
        assert_eq!(human_bytes(1536 << 20), "1.5GiB");
    }
}
