//! SIGINT and SIGTERM stop a build whose RUN step sleeps, within 2 s, leaving the store
//! consistent, nothing mounted and no sandbox process behind.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{assert_store_sound, build_args, build_ok, context, leftover_processes, poll};
use crate::util::{Rbuild, TestDir};

fn stop_sleeping_build(signal: i32, name: &str) {
    let marker = format!("sig-{name}-{}", std::process::id());
    let ctx: TestDir = context(
        name,
        &format!(
            "ARG BASE\nFROM ${{BASE}}\nRUN echo quick > /quick\n\
             RUN echo {marker} >/dev/null; sleep 30; echo late\n"
        ),
    );
    let rb = Rbuild::new();
    let args = build_args(ctx.path(), "sig:v1");
    let mut child = rb
        .cmd()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild");
    // Wait until the step's shell is running in the sandbox.
    let running = poll(Duration::from_secs(60), || {
        leftover_processes(&rb.root, &marker)
            .iter()
            .any(|p| p.cmdline.contains(&marker) && p.comm == "sh")
    });
    assert!(running, "the RUN step never started");
    let start = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    let stopped = poll(Duration::from_secs(10), || {
        child.try_wait().expect("try_wait").is_some()
    });
    let took = start.elapsed();
    assert!(stopped, "rbuild still runs 10 s after signal {signal}");
    let status = child.wait().expect("wait");
    eprintln!("signal {signal}: rbuild exited ({status}) after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "signal {signal}: took {took:?}"
    );
    assert!(!status.success(), "an interrupted build reported success");
    assert_store_sound(&rb, &marker, &format!("after signal {signal}"));
    // The next build reuses the first step.
    let quick = context(
        &format!("{name}-next"),
        "ARG BASE\nFROM ${BASE}\nRUN echo quick > /quick\nRUN echo done > /done\n",
    );
    let err = build_ok(&rb, quick.path(), "sig:v2");
    assert!(
        err.contains("CACHED"),
        "the step finished before the signal was not reused:\n{err}"
    );
    assert_store_sound(&rb, &marker, "after the next build");
}

#[test]
fn sigint_stops_a_build_within_two_seconds() {
    stop_sleeping_build(libc::SIGINT, "sigint");
}

#[test]
fn sigterm_stops_a_build_within_two_seconds() {
    stop_sleeping_build(libc::SIGTERM, "sigterm");
}
