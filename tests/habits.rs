//! Issue 21, "buildx habits": the flags a `docker buildx build` / `buildah bud` user types,
//! run through the real binary and read back with the tools a user would use.

use std::io::Write;
use std::process::{Output, Stdio};

use crate::build::{config, unpack};
use crate::util::{show, Rbuild, TestDir};

/// Runs `rbuild ARGS` with `input` on stdin.
fn run_with_stdin(r: &Rbuild, args: &[&str], input: &[u8]) -> Output {
    let mut child = r
        .cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild");
    let mut stdin = child.stdin.take().unwrap();
    // rbuild may refuse before reading stdin; a closed pipe is then not this test's failure.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait for rbuild")
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dockerfile_on_stdin_with_a_context_directory() {
    let r = Rbuild::new();
    let ctx = TestDir::new("stdin-df");
    ctx.write("hello.txt", "from the context\n");
    ctx.write("ignored.txt", "must not be copied\n");
    ctx.write(".dockerignore", "ignored.txt\n");
    // The context's own Dockerfile must not be the one used.
    ctx.write("Dockerfile", "FROM scratch\nLABEL which=context-file\n");
    let dir = ctx.path().to_string_lossy().into_owned();
    let out = run_with_stdin(
        &r,
        &["build", "-q", "-t", "stdin-df", "-f", "-", &dir],
        b"FROM scratch\nCOPY . /\nLABEL which=stdin\n",
    );
    ok(out, "build -f -");
    assert_eq!(config(&r, "stdin-df")["config"]["Labels"]["which"], "stdin");
    let (_d, fs) = unpack(&r, "stdin-df");
    assert_eq!(
        std::fs::read_to_string(fs.join("hello.txt")).unwrap(),
        "from the context\n"
    );
    assert!(
        !fs.join("ignored.txt").exists(),
        "the context's .dockerignore was not applied"
    );
}

#[test]
fn a_lone_dockerfile_on_stdin_builds_with_an_empty_context() {
    let r = Rbuild::new();
    let out = run_with_stdin(
        &r,
        &["build", "-q", "-t", "lone", "-"],
        b"FROM scratch\nLABEL from=stdin\n",
    );
    ok(out, "build -");
    assert_eq!(config(&r, "lone")["config"]["Labels"]["from"], "stdin");
    // No context: a COPY has nothing to copy.
    let out = run_with_stdin(
        &r,
        &["build", "-q", "-t", "lone-copy", "-"],
        b"FROM scratch\nCOPY hello.txt /\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hello.txt"),
        "{}",
        show(&out)
    );
}

#[test]
fn dockerfile_and_context_cannot_both_come_from_stdin() {
    let r = Rbuild::new();
    let out = run_with_stdin(&r, &["build", "-f", "-", "-"], b"FROM scratch\n");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("-f -"),
        "{}",
        show(&out)
    );
}
