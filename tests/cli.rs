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
    crate::store::make_image(&r.root, "127.0.0.1:5000/library/piped:latest", "x");
    let dockerfile = crate::util::TestDir::new("pipe");
    let df = dockerfile.write("Dockerfile", "FROM scratch\nCOPY a /a\n");
    let df = df.to_string_lossy().into_owned();
    for args in [
        vec!["images"],
        vec!["images", "-q"],
        vec!["inspect", "127.0.0.1:5000/library/piped:latest"],
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

#[test]
fn bash_completion_completes_commands_and_flags() {
    let r = Rbuild::new();
    let script = crate::util::TestDir::new("completion");
    let path = script.write("rbuild.bash", r.ok(&["completion", "bash"]));
    // Source the script in a real bash and ask it what `rbuild bu<TAB>` and
    // `rbuild build --outp<TAB>` complete to.
    let probe = format!(
        "source {}; \
         COMP_WORDS=(rbuild bu); COMP_CWORD=1; _rbuild rbuild bu rbuild; echo \"${{COMPREPLY[@]}}\"; \
         COMP_WORDS=(rbuild build --outp); COMP_CWORD=2; _rbuild rbuild --outp build; \
         echo \"${{COMPREPLY[@]}}\"; complete -p rbuild",
        path.display()
    );
    let out = crate::util::tool("bash", &["-c", &probe]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "build", "{out}");
    assert_eq!(lines[1], "--output", "{out}");
    assert!(lines[2].contains("_rbuild"), "not registered: {out}");
    // The other shells' scripts are generated from the same definition.
    assert!(r.ok(&["completion", "zsh"]).starts_with("#compdef rbuild"));
    assert!(r
        .ok(&["completion", "fish"])
        .contains("complete -c rbuild -n \"__fish_rbuild_using_subcommand build\""));
    let out = r.run(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn man_pages_render_with_man_for_every_command() {
    let r = Rbuild::new();
    let dir = crate::util::TestDir::new("man");
    let page = dir.write("rbuild.1", r.ok(&["man"]));
    let text = crate::util::tool("man", &["-l", &page.to_string_lossy()]);
    assert!(text.contains("rbuild - Build OCI images"), "{text}");
    assert!(text.contains("--root"), "{text}");
    let pages = dir.path().join("pages");
    r.ok(&["man", "--dir", &pages.to_string_lossy()]);
    for cmd in ["build", "images", "history", "load", "completion", "man"] {
        let page = pages.join(format!("rbuild-{cmd}.1"));
        let text = crate::util::tool("man", &["-l", &page.to_string_lossy()]);
        // man justifies lines: compare with single spaces.
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(text.contains(&format!("rbuild-{cmd} - ")), "{cmd}:\n{text}");
        assert!(
            text.contains(&format!("rbuild {cmd}")),
            "{cmd} synopsis:\n{text}"
        );
    }
    let build = crate::util::tool(
        "man",
        &["-l", &pages.join("rbuild-build.1").to_string_lossy()],
    );
    assert!(build.contains("--metadata-file"), "{build}");
    assert!(
        !pages.join("rbuild-debug.1").exists(),
        "a hidden command has a page"
    );
}
