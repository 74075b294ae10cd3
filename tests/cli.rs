//! The command line surface: help, shorthand, exit codes.

use crate::util::{show, Rbuild};

#[test]
fn help_lists_every_command_with_a_description() {
    let r = Rbuild::new();
    let help = r.ok(&["--help"]);
    for cmd in [
        "build", "push", "pull", "images", "inspect", "history", "tag", "rmi", "prune", "fsck",
        "login", "logout", "save", "load",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{cmd} ")))
            .unwrap_or_else(|| panic!("--help does not list {cmd}:\n{help}"));
        assert!(
            line.split_whitespace().count() > 2,
            "{cmd} has no description: {line}"
        );
    }
    assert!(
        !help.contains("sandbox-init"),
        "the hidden sandbox entry is listed"
    );
}

#[test]
fn usage_errors_exit_2() {
    let r = Rbuild::new();
    let out = r.run(&["build", "--no-such-flag", "."]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = r.run(&["build"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

/// A pipe whose read end is already closed: every write to the other end fails with EPIPE,
/// as when `head -1` has exited.
fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both fds; the read end is closed at once and the write end is
    // owned by the returned Stdio.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        libc::close(fds[0]);
        std::process::Stdio::from(std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_status_0() {
    let r = Rbuild::new();
    crate::store::make_image(&r.root, "docker.io/library/piped:latest", "x");
    let dockerfile = crate::util::TestDir::new("pipe");
    let df = dockerfile.write("Dockerfile", "FROM scratch\nCOPY a /a\n");
    let df = df.to_string_lossy().into_owned();
    for args in [
        vec!["images"],
        vec!["images", "-q"],
        vec!["inspect", "piped"],
        vec!["debug", "parse", &df],
        vec!["--help"],
    ] {
        let out = r
            .cmd()
            .args(&args)
            .stdout(closed_pipe())
            .output()
            .expect("spawn rbuild");
        assert_eq!(
            out.status.code(),
            Some(0),
            "rbuild {args:?}:\n{}",
            show(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "rbuild {args:?} printed on stderr:\n{}",
            show(&out)
        );
    }
    // A real failure on the same pipe is still a failure.
    let out = r
        .cmd()
        .args(["inspect", "no-such-image"])
        .stdout(closed_pipe())
        .output()
        .expect("spawn rbuild");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}
