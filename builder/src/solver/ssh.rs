//! `--ssh` for `RUN --mount=type=ssh`: the agent behind each id (a socket given, or an
//! `ssh-agent` of our own holding the given keys, started on first use and killed with the
//! build), and the per-step forwarding socket that the step sees, with the mount's owner
//! and mode. No key byte passes through rbuild: it only relays the agent protocol.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where the agent of one `--ssh` id is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// An agent's socket (`--ssh default` is `$SSH_AUTH_SOCK`).
    Socket(PathBuf),
    /// Private key files, loaded into an `ssh-agent` started for the build.
    Keys(Vec<PathBuf>),
}

/// An error setting up ssh forwarding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// `RUN --mount=type=ssh,required=true` whose id no `--ssh` gives.
    #[error("no ssh agent or key for id {id:?}: give one with --ssh {id}=SOCKET|KEY (or --ssh default for $SSH_AUTH_SOCK)")]
    Missing {
        /// The mount's id.
        id: String,
    },
    /// `ssh-agent` or `ssh-add` is not installed.
    #[error("--ssh with key files needs {program}, which is not on PATH: install openssh-client (apt-get install openssh-client)")]
    NotInstalled {
        /// The missing program.
        program: &'static str,
    },
    /// `ssh-agent` did not start.
    #[error("cannot start ssh-agent for --ssh {id}")]
    AgentStart {
        /// The `--ssh` id.
        id: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `ssh-add` refused a key (passphrase-protected keys are refused: there is no prompt).
    #[error("ssh-add {} failed for --ssh {id}: {stderr}", key.display())]
    AddKey {
        /// The `--ssh` id.
        id: String,
        /// The key file.
        key: PathBuf,
        /// ssh-add's error output.
        stderr: String,
    },
    /// The forwarding socket cannot be made.
    #[error("cannot {op} the ssh forwarding socket {}", path.display())]
    Forward {
        /// What was being done.
        op: &'static str,
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The `--ssh` ids of a build and the agents started for key files.
pub struct SshAgents {
    sources: Vec<(String, SshSource)>,
    started: std::sync::Mutex<HashMap<String, Arc<OwnAgent>>>,
}

impl SshAgents {
    /// The agents of `--ssh`; none is started yet.
    pub fn new(sources: Vec<(String, SshSource)>) -> Self {
        Self {
            sources,
            started: Default::default(),
        }
    }

    /// Whether a `--ssh` gives `id`.
    pub fn has(&self, id: &str) -> bool {
        self.sources.iter().any(|(i, _)| i == id)
    }

    /// The agent socket of `id` (`None` when no `--ssh` gives it), starting an agent for
    /// key files the first time, in a directory of the store's `tmp/`.
    pub fn socket(
        &self,
        id: &str,
        store: &rbuild_store::Store,
    ) -> Result<Option<PathBuf>, crate::Error> {
        let Some((_, source)) = self.sources.iter().find(|(i, _)| i == id) else {
            return Ok(None);
        };
        let keys = match source {
            SshSource::Socket(path) => return Ok(Some(path.clone())),
            SshSource::Keys(keys) => keys,
        };
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(agent) = started.get(id) {
            return Ok(Some(agent.socket.clone()));
        }
        let dir = store
            .tmp_dir()
            .map_err(crate::Error::store("create a directory for ssh-agent"))?;
        let agent = OwnAgent::start(id, keys, dir)?;
        let socket = agent.socket.clone();
        started.insert(id.to_string(), Arc::new(agent));
        Ok(Some(socket))
    }
}

/// Kills the child when this thread's process dies (`rbuild` killed: no agent left behind).
/// Debian's `ssh-agent` is setgid, and exec'ing a setgid binary clears the death signal:
/// `no_new_privs` keeps the exec from changing credentials (the agent does not need the
/// group), so the signal stays.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// An `ssh-agent -D` holding the keys of one `--ssh` id; killed when dropped.
struct OwnAgent {
    child: Child,
    socket: PathBuf,
    _dir: rbuild_store::TmpDir,
}

impl OwnAgent {
    fn start(id: &str, keys: &[PathBuf], dir: rbuild_store::TmpDir) -> Result<Self, SshError> {
        let socket = dir.path().join("agent.sock");
        let mut cmd = Command::new("ssh-agent");
        cmd.arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => SshError::NotInstalled {
                program: "ssh-agent",
            },
            _ => SshError::AgentStart {
                id: id.to_string(),
                source,
            },
        })?;
        // It prints `SSH_AUTH_SOCK=...` once the socket listens.
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let agent = OwnAgent {
            child,
            socket,
            _dir: dir,
        };
        if !line.starts_with("SSH_AUTH_SOCK=") {
            return Err(SshError::AgentStart {
                id: id.to_string(),
                source: std::io::Error::other("ssh-agent exited before listening"),
            });
        }
        for key in keys {
            agent.add(id, key)?;
        }
        Ok(agent)
    }

    fn add(&self, id: &str, key: &Path) -> Result<(), SshError> {
        let mut cmd = Command::new("ssh-add");
        cmd.arg("-q")
            .arg("--")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env_remove("DISPLAY")
            .stdin(Stdio::null());
        die_with_parent(&mut cmd);
        let out = cmd.output().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => SshError::NotInstalled { program: "ssh-add" },
            _ => SshError::AgentStart {
                id: id.to_string(),
                source,
            },
        })?;
        if !out.status.success() {
            return Err(SshError::AddKey {
                id: id.to_string(),
                key: key.to_path_buf(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

impl Drop for OwnAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listening socket, owned and moded as the mount asks, relaying every connection to an
/// agent; stopped (and its thread ended) when dropped.
pub struct SshForward {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SshForward {
    /// Listens on `path` (uid, gid, mode) and relays to `agent`.
    pub fn start(
        agent: PathBuf,
        path: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<Self, SshError> {
        let err = |op| {
            let path = path.clone();
            move |source| SshError::Forward { op, path, source }
        };
        let listener = UnixListener::bind(&path).map_err(err("bind"))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(err("chown"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(err("chmod"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let agent = agent.clone();
                std::thread::spawn(move || relay(conn, &agent));
            }
        });
        Ok(Self {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SshForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies bytes both ways between a step's connection and the agent until either closes.
fn relay(client: UnixStream, agent: &Path) {
    let Ok(upstream) = UnixStream::connect(agent) else {
        return;
    };
    let (Ok(mut client_r), Ok(mut upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut upstream_w);
        let _ = upstream_w.shutdown(std::net::Shutdown::Write);
    });
    let (mut upstream_r, mut client_w) = (upstream, client);
    let _ = std::io::copy(&mut upstream_r, &mut client_w);
    let _ = client_w.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
