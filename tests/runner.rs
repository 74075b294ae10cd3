//! The sandbox re-executed from the real `rbuild` binary (its `main` dispatches `sandbox-init`).

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use rbuild_runner::{Sandbox, SandboxSpec, Stream};

use crate::util::TestDir;

/// A busybox root filesystem plus upper and work dirs in one test dir.
fn busybox_step(dir: &TestDir) -> (PathBuf, PathBuf, PathBuf) {
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "ls", "hostname"] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    (rootfs, upper, work)
}

#[test]
fn rbuild_binary_is_the_sandbox_init() {
    let dir = TestDir::new("runner-init");
    let (rootfs, upper, work) = busybox_step(&dir);
    let mut spec = SandboxSpec::new(
        vec![rootfs],
        upper.clone(),
        work,
        vec![
            "sh".into(),
            "-c".into(),
            "hostname; echo out > /file; echo err >&2; exit 5".into(),
        ],
    );
    spec.hostname = "e2e-step".into();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let status = Sandbox::with_init_exe(env!("CARGO_BIN_EXE_rbuild"))
        .run(&spec, &mut |stream, line| match stream {
            Stream::Stdout => stdout.extend_from_slice(line),
            Stream::Stderr => stderr.extend_from_slice(line),
        })
        .expect("sandbox runs");
    assert_eq!(status.code, Some(5), "{status}");
    assert_eq!(String::from_utf8_lossy(&stdout), "e2e-step\n");
    assert_eq!(String::from_utf8_lossy(&stderr), "err\n");
    let entries: Vec<_> = std::fs::read_dir(&upper)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["file"]);
}
