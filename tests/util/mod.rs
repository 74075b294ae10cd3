//! Shared fixtures for the end-to-end tests: temp dirs, the real `rbuild` binary, a real
//! `registry:2` on 127.0.0.1 and an offline busybox base image pushed to it.
#![allow(dead_code)]

pub mod busybox;
pub mod debian;
pub mod faultproxy;
pub mod gateproxy;
pub mod git;
pub mod layout;
pub mod overlayfs;
pub mod podman;
pub mod proxy;
pub mod rawpush;
pub mod registry;
pub mod registry_api;
pub mod tokenissuer;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use registry::Registry;

/// A fresh directory under cargo's per-test temp dir, unique in this process.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Makes `<tmp>/<name>-<pid>-<n>`.
    pub fn new(name: &str) -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to the relative `name`, creating parent dirs.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&p, contents).expect("write test file");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The real `rbuild` binary, run against its own store.
pub struct Rbuild {
    /// The store root every command gets.
    pub root: PathBuf,
    _dir: TestDir,
}

impl Rbuild {
    /// A fresh, empty store.
    pub fn new() -> Rbuild {
        let dir = TestDir::new("store");
        Rbuild {
            root: dir.path().join("root"),
            _dir: dir,
        }
    }

    /// A command with `--root` set and a clean environment for docker config.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        c.env("RBUILD_ROOT", &self.root);
        c.env_remove("SOURCE_DATE_EPOCH");
        c.stdin(Stdio::null());
        c
    }

    /// Runs `rbuild ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("spawn rbuild")
    }

    /// Runs `rbuild ARGS`, panics with its output unless it exits 0, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rbuild {args:?} failed:\n{}",
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs an external tool (skopeo, umoci, ...), panicking with a hint to the Debian package
/// when it is missing and with its output when it fails.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install the Debian package that provides it")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The mount points of this process's mount namespace that mention `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}
