//! The command line surface: help, shorthand, exit codes.

use crate::util::{show, Rbuild};

#[test]
fn help_lists_every_command_with_a_description() {
    let r = Rbuild::new();
    let help = r.ok(&["--help"]);
    for cmd in [
        "build", "push", "pull", "images", "inspect", "tag", "rmi", "prune", "fsck", "login",
        "logout", "save",
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
