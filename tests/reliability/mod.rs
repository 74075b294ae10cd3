//! Reliability and security: rbuild under `kill -9`, signals, concurrent builds and prune,
//! registry faults, a full disk, hostile inputs, sandbox escape attempts and secret leaks.
//!
//! Random choices come from one seed, printed by every test that uses it and replayed with
//! `RBUILD_RELIABILITY_SEED=N`; `RBUILD_RELIABILITY_SCALE=F` multiplies every trial count
//! (the default, 1, is what CI runs).

mod cache_export;
mod cache_refs;
mod concurrency;
mod crash;
mod diskfull;
mod emulated;
mod faults;
mod hostile;
mod sandbox;
mod secrets;
mod signals;
mod timeouts;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::util::busybox::busybox;
use crate::util::{mounts_mentioning, show, Rbuild, TestDir};

/// The suite's seed: `RBUILD_RELIABILITY_SEED`, else the clock.
pub fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("RBUILD_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    })
}

/// A generator for one test, derived from the suite seed and the test's name; prints the
/// seed so that a failure can be replayed.
pub fn rng(test: &str) -> StdRng {
    let seed = seed();
    eprintln!("{test}: RBUILD_RELIABILITY_SEED={seed}");
    let mut h: u64 = seed ^ 0x9e37_79b9_7f4a_7c15;
    for b in test.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    StdRng::seed_from_u64(h)
}

/// `default` trials scaled by `RBUILD_RELIABILITY_SCALE` (at least 1).
pub fn trials(default: usize) -> usize {
    let scale: f64 = std::env::var("RBUILD_RELIABILITY_SCALE")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1.0);
    ((default as f64 * scale).round() as usize).max(1)
}

/// A build context with `Dockerfile` on the busybox base (`${BASE}`).
pub fn context(name: &str, dockerfile: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.write("Dockerfile", dockerfile);
    dir
}

/// `rbuild build` args for `context` tagged `tag`, with `BASE` set to the fixture busybox.
pub fn build_args(context: &Path, tag: &str) -> Vec<String> {
    vec![
        "build".into(),
        "--progress=plain".into(),
        "--build-arg".into(),
        format!("BASE={}", busybox().reference),
        "-t".into(),
        tag.into(),
        context.display().to_string(),
    ]
}

/// Runs a build to completion.
pub fn build(rb: &Rbuild, context: &Path, tag: &str) -> Output {
    let args = build_args(context, tag);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rb.run(&args)
}

/// Runs a build, panics unless it succeeds; returns its stderr (the plain progress).
pub fn build_ok(rb: &Rbuild, context: &Path, tag: &str) -> String {
    let out = build(rb, context, tag);
    assert!(
        out.status.success(),
        "build of {tag} failed:\n{}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One process on the host (read through `Debug` in assertion messages).
#[derive(Debug)]
#[allow(dead_code)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// `/proc/<pid>/comm`.
    pub comm: String,
    /// `/proc/<pid>/cmdline`, NULs as spaces.
    pub cmdline: String,
}

fn procs() -> Vec<(i32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            Some((pid, e.path()))
        })
        .collect()
}

/// Processes that belong to the store at `root` or carry `marker`: an rbuild whose
/// environment names the store, any process whose mount table mentions it (a sandbox), any
/// `rbuild:[...]` init, and any process whose command line has the marker.
pub fn leftover_processes(root: &Path, marker: &str) -> Vec<Proc> {
    let root_s = root.display().to_string();
    let env_needle = format!("RBUILD_ROOT={root_s}");
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for (pid, dir) in procs() {
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(dir.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let comm = std::fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let environ = std::fs::read(dir.join("environ"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mountinfo = std::fs::read_to_string(dir.join("mountinfo")).unwrap_or_default();
        let ours = environ.split('\0').any(|v| v == env_needle)
            || (!marker.is_empty() && cmdline.contains(marker))
            || mountinfo.contains(&root_s)
            || (comm.starts_with("rbuild:[") && environ.contains(&root_s));
        if ours && !is_zombie(&dir) {
            found.push(Proc { pid, comm, cmdline });
        }
    }
    found
}

fn is_zombie(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn poll(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The guarantees after any interruption: `rbuild fsck` is clean, no mount on the host
/// mentions the store, and no process of the store (or with `marker`) is left. Processes
/// killed by `PDEATHSIG` get 5 s to disappear.
pub fn assert_store_sound(rb: &Rbuild, marker: &str, what: &str) {
    let root = rb.root.display().to_string();
    let gone = poll(Duration::from_secs(5), || {
        leftover_processes(&rb.root, marker).is_empty()
    });
    assert!(
        gone,
        "{what}: processes left behind: {:#?}",
        leftover_processes(&rb.root, marker)
    );
    let mounts = mounts_mentioning(&root);
    assert!(mounts.is_empty(), "{what}: mounts left behind: {mounts:#?}");
    if rb.root.exists() {
        let out = rb.run(&["fsck"]);
        assert!(out.status.success(), "{what}: fsck failed:\n{}", show(&out));
    }
}

/// Every regular file under `dir` (recursively, symlinks not followed).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
