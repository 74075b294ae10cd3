//! Emulated RUN steps (an arm64 image on this host, through binfmt_misc): a step that
//! crashes fails the build cleanly; a hanging one dies with its whole process tree when
//! rbuild is killed; either way no mount or process is left and the store stays sound.

use std::process::Stdio;
use std::time::Duration;

use super::{assert_store_sound, leftover_processes, poll};
use crate::util::busybox::busybox_multi;
use crate::util::{show, Rbuild, TestDir};

fn args(ctx: &TestDir, tag: &str) -> Vec<String> {
    vec![
        "build".into(),
        "--progress=plain".into(),
        "--platform".into(),
        "linux/arm64".into(),
        "--build-arg".into(),
        format!("BASE={}", busybox_multi().reference),
        "-t".into(),
        tag.into(),
        ctx.path().display().to_string(),
    ]
}

#[test]
fn a_crashing_emulated_step_fails_the_build_and_leaves_nothing() {
    let marker = format!("emu-crash-{}", std::process::id());
    let ctx = TestDir::new("emu-crash");
    ctx.write(
        "Dockerfile",
        format!("ARG BASE\nFROM ${{BASE}}\nRUN echo {marker}; uname -m; kill -SEGV $$\n"),
    );
    let rb = Rbuild::new();
    let a = args(&ctx, "emu:crash");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = rb.run(&a);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("aarch64"),
        "the step did not run emulated:\n{err}"
    );
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert_store_sound(&rb, &marker, "after a crashing emulated step");
}

#[test]
fn a_hanging_emulated_step_dies_with_its_process_tree_when_rbuild_is_killed() {
    let marker = format!("emu-hang-{}", std::process::id());
    let ctx = TestDir::new("emu-hang");
    // A child process (sleep) under the step's shell, both emulated.
    ctx.write(
        "Dockerfile",
        format!("ARG BASE\nFROM ${{BASE}}\nRUN echo {marker} >/dev/null; sleep 600 & wait\n"),
    );
    let rb = Rbuild::new();
    let mut child = rb
        .cmd()
        .args(args(&ctx, "emu:hang"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rbuild");
    let running = poll(Duration::from_secs(120), || {
        let procs = leftover_processes(&rb.root, &marker);
        procs.iter().any(|p| p.cmdline.contains(&marker))
            && procs.iter().any(|p| p.cmdline.contains("sleep 600"))
    });
    assert!(running, "the emulated step never started");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().expect("wait");
    assert_store_sound(&rb, &marker, "after kill -9 of an emulated step");
}
