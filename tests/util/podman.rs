//! podman with a private store (vfs or overlay, a temp root, a short runroot), so tests
//! never touch the machine's podman images; images are pulled from the test registry over
//! plain HTTP and run with runc.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::{show, TestDir};

/// One private podman store.
pub struct Podman {
    root: PathBuf,
    driver: &'static str,
    runroot: tempfile::TempDir,
    _dir: TestDir,
}

impl Podman {
    /// A fresh, empty podman store (vfs: a container's root is a plain directory).
    pub fn new() -> Podman {
        Podman::with_driver("vfs")
    }

    /// A fresh, empty podman store with the overlay driver: a container's root filesystem
    /// is an overlayfs mount, as with podman's and docker's defaults. Dropping it removes
    /// its images and containers (`podman system reset`).
    pub fn overlay() -> Podman {
        Podman::with_driver("overlay")
    }

    fn with_driver(driver: &'static str) -> Podman {
        let dir = TestDir::new("podman");
        // podman refuses a runroot longer than 50 characters: keep it in /tmp.
        let runroot = tempfile::Builder::new()
            .prefix("prun")
            .tempdir_in("/tmp")
            .expect("runroot");
        Podman {
            root: dir.path().join("root"),
            driver,
            runroot,
            _dir: dir,
        }
    }

    /// Runs `podman <global flags> ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "--root".to_string(),
            self.root.display().to_string(),
            "--runroot".to_string(),
            self.runroot.path().display().to_string(),
            "--storage-driver".to_string(),
            self.driver.to_string(),
            "--cgroup-manager".to_string(),
            "cgroupfs".to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        Command::new("podman")
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run podman ({e}): install the Debian package podman")
            })
    }

    /// Like [`Podman::run`], panicking with the output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}",
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman pull` of a test-registry image (plain HTTP).
    pub fn pull(&self, reference: &str) -> String {
        self.ok(&["pull", "--quiet", "--tls-verify=false", reference])
    }

    /// `podman run --rm` of `image` with runc and the ulimits, no network; `cmd`
    /// overrides the image's command (empty: the image's own). Returns stdout.
    pub fn run_image(&self, image: &str, user: Option<&str>, cmd: &[&str]) -> String {
        let mut args = vec![
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=8192:8192",
            "--network",
            "none",
            "--tls-verify=false",
        ];
        if let Some(u) = user {
            args.push("--user");
            args.push(u);
        }
        args.push(image);
        args.extend_from_slice(cmd);
        self.ok(&args)
    }
}

impl Drop for Podman {
    /// The overlay driver leaves mounts and containers' layers that a plain removal of the
    /// directory cannot take away.
    fn drop(&mut self) {
        if self.driver == "overlay" {
            let _ = self.run(&["system", "reset", "--force"]);
        }
    }
}
