//! A real distribution `registry:2` (Debian's `docker-registry`) on 127.0.0.1, one per test
//! process, with its own config, port and storage, killed when the test process exits.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The registry's log (it writes one access-log line per request).
    pub log: PathBuf,
    /// Where it stores blobs.
    pub storage: PathBuf,
}

/// Extra registry configuration, appended to the generated config (e.g. an `auth:` block).
#[derive(Default, Clone)]
pub struct RegistryOptions {
    /// YAML appended at the top level of the config.
    pub extra_yaml: String,
    /// YAML inserted under `http:` (e.g. a `tls:` block), indented by the caller.
    pub http_yaml: String,
}

impl Registry {
    /// The shared anonymous registry of this test process, started on first use.
    pub fn shared() -> &'static Registry {
        static SHARED: OnceLock<Registry> = OnceLock::new();
        SHARED.get_or_init(|| Registry::start("shared", RegistryOptions::default()))
    }

    /// Starts a new registry with `options`. It lives until the test process exits.
    pub fn start(name: &str, options: RegistryOptions) -> Registry {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("registry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("storage")).expect("registry dir");
        // Several test binaries may start registries at once: retry if the port we picked
        // was taken between probing it and the registry binding it.
        for _attempt in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n{}{}",
                    dir.join("storage").display(),
                    options.http_yaml,
                    options.extra_yaml
                ),
            )
            .expect("write registry config");
            let log = dir.join("registry.log");
            let child = spawn_kept(config.clone(), log.clone());
            if wait_ready(&addr, child, options.http_yaml.contains("tls")) {
                return Registry {
                    addr,
                    log,
                    storage: dir.join("storage"),
                };
            }
        }
        panic!("docker-registry did not start; see {}", dir.display());
    }

    /// The registry's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Spawns the registry from a thread that never exits, so that PR_SET_PDEATHSIG (which
/// fires when the *spawning thread* dies) kills it only when the whole process ends.
fn spawn_kept(config: PathBuf, log: PathBuf) -> u32 {
    let (tx, rx) = mpsc::channel::<Result<u32, String>>();
    std::thread::spawn(move || {
        let logf = std::fs::File::create(&log).expect("registry log");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config).stdin(Stdio::null());
        cmd.stdout(logf.try_clone().expect("dup log")).stderr(logf);
        // SAFETY: prctl in the forked child before exec is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                let _ = tx.send(Ok(child.id()));
                park_forever(child);
            }
            Err(e) => {
                let _ = tx.send(Err(format!(
                    "cannot run docker-registry ({e}): install the Debian package docker-registry"
                )));
            }
        }
    });
    rx.recv()
        .expect("registry thread")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn park_forever(mut child: Child) -> ! {
    let _ = child.wait();
    loop {
        std::thread::park();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Polls `GET /v2/` until the registry answers (or its process is gone).
fn wait_ready(addr: &str, pid: u32, tls: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return false;
        }
        if tls {
            if TcpStream::connect(addr).is_ok() {
                return true;
            }
        } else if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut resp = String::new();
            let answered =
                s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut resp).is_ok();
            let status = resp.split_whitespace().nth(1).unwrap_or("");
            if answered && (status == "200" || status == "401") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
