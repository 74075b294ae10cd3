//! `kill -9` of rbuild at random moments of builds (and their commits), pulls and pushes:
//! the store stays consistent, nothing stays mounted or running, and the next run succeeds
//! reusing what was validly cached.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{assert_store_sound, build_args, context, rng, trials};
use crate::util::{show, Rbuild, Registry, TestDir};

/// Spawns `rbuild ARGS` with output discarded.
fn spawn(rb: &Rbuild, args: &[String]) -> Child {
    rb.cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rbuild")
}

/// Runs `args` to completion, panicking unless it succeeds; returns how long it took.
fn timed_ok(rb: &Rbuild, args: &[String]) -> Duration {
    let start = Instant::now();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = rb.run(&a);
    assert!(out.status.success(), "rbuild {a:?}:\n{}", show(&out));
    start.elapsed()
}

/// Starts `args`, sends SIGKILL after `delay` (if it is still running), reaps it.
/// Returns whether it was killed (false: it finished first).
fn kill_after(rb: &Rbuild, args: &[String], delay: Duration) -> bool {
    let mut child = spawn(rb, args);
    let started = Instant::now();
    let deadline = started + delay;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            eprintln!(
                "  finished ({status}) after {:?} before the kill at {delay:?}",
                started.elapsed()
            );
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
    }
    let _ = child.kill();
    let status = child.wait().expect("wait rbuild");
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGKILL)
}

/// The crash Dockerfile: three RUN steps writing data (commits of a few MB), a COPY from
/// the context, each RUN carrying `marker` in its command line; `N` makes a new build.
fn crash_dockerfile(marker: &str) -> String {
    format!(
        "ARG BASE\nFROM ${{BASE}}\nARG N\n\
         RUN echo {marker} $N >/dev/null; dd if=/dev/urandom of=/a bs=64k count=8 2>/dev/null\n\
         COPY data /data\n\
         RUN echo {marker} $N >/dev/null; mkdir -p /many && for i in $(seq 1 200); do echo $i > /many/$i; done\n\
         RUN echo {marker} $N >/dev/null; dd if=/dev/zero of=/b bs=64k count=8 2>/dev/null; echo $N > /n\n"
    )
}

fn with_n(args: &[String], n: u64) -> Vec<String> {
    let mut a = args.to_vec();
    let ctx = a.pop().expect("context arg");
    a.push("--build-arg".into());
    a.push(format!("N={n}"));
    a.push(ctx);
    a
}

#[test]
fn kill_9_during_builds_and_commits() {
    let mut rng = rng("kill_9_during_builds_and_commits");
    let count = trials(40);
    let marker = format!("crash-build-{}", std::process::id());
    let ctx = context("crash-build", &crash_dockerfile(&marker));
    ctx.write("data/blob", vec![7u8; 128 * 1024]);
    for i in 0..50 {
        ctx.write(&format!("data/small/{i}"), format!("{i}\n"));
    }
    let rb = Rbuild::new();
    let base = build_args(ctx.path(), "crash:ref");
    // The reference build (it pulls the base); its cache must survive every crash. Then
    // one more, measured: the work each trial does.
    timed_ok(&rb, &with_n(&base, 0));
    // The fastest of three fresh builds: load on a shared machine only makes runs slower.
    let full = (1..=3)
        .map(|k| timed_ok(&rb, &with_n(&base, 1_000_000 + k)))
        .min()
        .expect("three runs");
    eprintln!("uninterrupted build: {full:?}; {count} kill -9 trials");
    let mut killed = 0;
    // The calibration may run while other tests load the machine; a trial that finishes
    // before its kill shows how long a build really takes now, so later delays follow it.
    let mut full = full;
    for trial in 1..=count as u64 {
        let delay = full.mul_f64(rng.random_range(0.0..1.0));
        let args = with_n(&base, trial);
        let t = Instant::now();
        if kill_after(&rb, &args, delay) {
            killed += 1;
        } else {
            full = full.min(t.elapsed());
        }
        let what = format!("build trial {trial} killed after {delay:?}");
        let t = Instant::now();
        assert_store_sound(&rb, &marker, &what);
        eprintln!("  trial {trial}: checks took {:?}", t.elapsed());
        // Every third trial, the interrupted build is completed at once.
        if trial % 3 == 0 {
            timed_ok(&rb, &args);
        }
    }
    eprintln!("{killed} of {count} builds were killed mid-way");
    assert!(
        killed * 4 >= count,
        "too many kills came after the build ended: {killed}/{count} killed mid-way"
    );
    // The reference build's cache is intact: every step is a hit, same image.
    let reference = with_n(&base, 0);
    let a: Vec<&str> = reference.iter().map(String::as_str).collect();
    let out = rb.run(&a);
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.matches("CACHED").count() >= 4,
        "the reference build was not served from the cache:\n{err}"
    );
    assert_store_sound(&rb, &marker, "after the final build");
}

#[test]
fn kill_9_during_pulls() {
    let mut rng = rng("kill_9_during_pulls");
    let count = trials(30);
    let reference = big_image();
    let rb = Rbuild::new();
    let args: Vec<String> = vec!["pull".into(), "--progress=plain".into(), reference.clone()];
    let probe = Rbuild::new();
    let full = timed_ok(&probe, &args);
    eprintln!("uninterrupted pull: {full:?}; {count} kill -9 trials");
    let mut killed = 0;
    for trial in 1..=count {
        let delay = full.mul_f64(rng.random_range(0.0..1.0));
        if kill_after(&rb, &args, delay) {
            killed += 1;
        }
        assert_store_sound(
            &rb,
            "",
            &format!("pull trial {trial} killed after {delay:?}"),
        );
        if trial % 5 == 0 {
            // A fresh store now and then, so that early moments (the first blobs) are hit
            // again, not only the "everything is already there" path.
            timed_ok(&rb, &args);
            let _ = std::fs::remove_dir_all(&rb.root);
        }
    }
    eprintln!("{killed} of {count} pulls were killed mid-way");
    timed_ok(&rb, &args);
    assert_store_sound(&rb, "", "after the final pull");
}

#[test]
fn kill_9_during_pushes() {
    let mut rng = rng("kill_9_during_pushes");
    let count = trials(30);
    let reference = big_image();
    let registry = Registry::shared();
    let rb = Rbuild::new();
    timed_ok(&rb, &["pull".into(), reference.clone()]);
    let push = |n: usize| -> Vec<String> {
        vec![
            "push".into(),
            "--progress=plain".into(),
            reference.clone(),
            format!("{}/crash-push/r{n}:v1", registry.addr),
        ]
    };
    let full = timed_ok(&rb, &push(0));
    eprintln!("uninterrupted push: {full:?}; {count} kill -9 trials");
    let mut killed = 0;
    for trial in 1..=count {
        let delay = full.mul_f64(rng.random_range(0.0..1.0));
        // A new repository each time, so the upload really happens (no blob is there yet).
        if kill_after(&rb, &push(trial), delay) {
            killed += 1;
        }
        assert_store_sound(
            &rb,
            "",
            &format!("push trial {trial} killed after {delay:?}"),
        );
        if trial % 5 == 0 {
            timed_ok(&rb, &push(trial));
            crate::util::tool(
                "skopeo",
                &[
                    "inspect",
                    "--tls-verify=false",
                    &format!("docker://{}/crash-push/r{trial}:v1", registry.addr),
                ],
            );
        }
    }
    eprintln!("{killed} of {count} pushes were killed mid-way");
}

/// An image bigger than busybox (three layers, ~12 MB of incompressible data), pushed once
/// with skopeo to the shared registry; returns its reference.
pub fn big_image() -> String {
    use std::sync::OnceLock;
    static REF: OnceLock<String> = OnceLock::new();
    REF.get_or_init(|| {
        let dir = TestDir::new("big-image");
        let layout = dir.path().join("layout");
        let mut layers = Vec::new();
        let mut seed = 0x1234_5678_u64;
        for l in 0..3 {
            let mut data = vec![0u8; 4 << 20];
            for b in data.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            layers.push(vec![(format!("big/{l}.bin"), data)]);
        }
        let reference = format!("{}/library/big:latest", Registry::shared().addr);
        crate::util::layout::write_image(&layout, &layers);
        crate::util::layout::push(&layout, &reference);
        std::mem::forget(dir);
        reference
    })
    .clone()
}
