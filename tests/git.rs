//! Git sources end to end: ADD of git URLs (dumb HTTP, `git://`, the query form,
//! `--keep-git-dir`, credentials from the environment) and a git URL as the build context,
//! against servers on 127.0.0.1; images read back with umoci.

use crate::build::{base, build, build_ok, unpack};
use crate::util::git::{head_of, read, serve_git_daemon, serve_static, GitRepo};
use crate::util::{show, Rbuild, TestDir};

/// A context holding only `Dockerfile`.
fn context(dockerfile: &str) -> TestDir {
    let dir = TestDir::new("git-ctx");
    dir.write("Dockerfile", dockerfile);
    dir
}

/// The plain-progress line numbers (`#N`) of the steps whose instruction contains `needle`.
fn step_of(log: &str, needle: &str) -> String {
    log.lines()
        .find(|l| l.starts_with('#') && l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no step {needle:?} in:\n{log}"))
        .to_string()
}

fn cached(log: &str, needle: &str) -> bool {
    let step = step_of(log, needle);
    log.contains(&format!("{step} CACHED"))
}

#[test]
fn add_of_git_urls_checks_out_the_commit_and_keys_on_it() {
    let repo = GitRepo::new("git-add");
    let v1 = repo.commit("one", &[("a.txt", "a1\n"), ("sub/b.txt", "b1\n")]);
    repo.git(&["-C", "work", "tag", "-a", "-m", "v1", "v1"]);
    let main1 = repo.commit("two", &[("a.txt", "a2\n")]);
    let http = serve_static(repo.dir.path(), None);
    let daemon = serve_git_daemon(repo.dir.path());
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE\n\
         ADD http://127.0.0.1:{http}/repo.git#v1:sub /fromtag/\n\
         ADD git://127.0.0.1:{daemon}/repo.git#main /src\n\
         ADD --keep-git-dir http://127.0.0.1:{http}/repo.git?ref=main /kept\n\
         ADD git://127.0.0.1:{daemon}/repo.git?tag=v1&subdir=sub&keep-git-dir=false /q/\n\
         RUN cat /src/a.txt /fromtag/b.txt > /seen\n"
    );
    let ctx = context(&dockerfile);
    let r = Rbuild::new();
    build_ok(&r, ctx.path(), "gitadd", &[]);
    let (_d, fs) = unpack(&r, "gitadd");
    assert_eq!(read(fs.join("fromtag/b.txt")), "b1\n");
    assert!(!fs.join("fromtag/a.txt").exists(), "subdir only");
    assert_eq!(read(fs.join("src/a.txt")), "a2\n");
    assert_eq!(read(fs.join("src/sub/b.txt")), "b1\n");
    assert!(!fs.join("src/.git").exists(), ".git is dropped by default");
    assert_eq!(head_of(&fs.join("kept")), main1);
    assert_eq!(read(fs.join("q/b.txt")), "b1\n");
    assert_eq!(read(fs.join("seen")), "a2\nb1\n");
    let meta = std::fs::metadata(fs.join("src/a.txt")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    assert_ne!(v1, main1);

    // Nothing moved: every step is CACHED.
    let (_, log) = build_ok(&r, ctx.path(), "gitadd", &[]);
    for needle in ["#v1:sub", "#main /src", "?ref=main", "?tag=v1", "RUN cat"] {
        assert!(cached(&log, needle), "{needle} re-ran:\n{log}");
    }

    // main moves: its ADDs and the RUN re-run, the tag's stay CACHED.
    let main2 = repo.commit("three", &[("a.txt", "a3\n")]);
    let (_, log) = build_ok(&r, ctx.path(), "gitadd", &[]);
    assert!(cached(&log, "#v1:sub"), "{log}");
    assert!(!cached(&log, "#main /src"), "{log}");
    assert!(!cached(&log, "RUN cat"), "{log}");
    let (_d, fs) = unpack(&r, "gitadd");
    assert_eq!(read(fs.join("src/a.txt")), "a3\n");
    assert_eq!(read(fs.join("seen")), "a3\nb1\n");
    assert_eq!(head_of(&fs.join("kept")), main2);
}

#[test]
fn git_errors_name_the_line_and_the_cause() {
    let repo = GitRepo::new("git-err");
    repo.commit("one", &[("a.txt", "a\n")]);
    let http = serve_static(repo.dir.path(), None);
    let r = Rbuild::new();
    let cases = [
        (
            format!("ADD http://127.0.0.1:{http}/repo.git#nope /x"),
            "ref \"nope\" not found",
        ),
        (
            format!("ADD http://127.0.0.1:{http}/repo.git#main:missing /x"),
            "\"missing\" is not a directory",
        ),
        (
            format!("ADD http://127.0.0.1:{http}/repo.git?colour=red /x"),
            "unexpected query \"colour\"",
        ),
        (
            format!("COPY http://127.0.0.1:{http}/repo.git /x"),
            "source can't be a git ref for COPY",
        ),
        (
            format!("ADD --keep-git-dir http://127.0.0.1:{http}/repo.git?keep-git-dir=false /x"),
            "inconsistent keep-git-dir",
        ),
    ];
    for (line, want) in cases {
        let ctx = context(&format!("ARG BASE\nFROM $BASE\n{line}\n"));
        let out = build(&r, ctx.path(), "giterr", &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{line}:\n{}", show(&out));
        assert!(err.contains("Dockerfile:3"), "{line}:\n{err}");
        assert!(err.contains(want), "{line}: want {want:?}:\n{err}");
    }
    // No git binary: the error says to install it.
    let ctx = context(&format!(
        "ARG BASE\nFROM $BASE\nADD http://127.0.0.1:{http}/repo.git /x\n"
    ));
    let out = r
        .cmd()
        .env("PATH", "/nonexistent")
        .args(["build", "--progress=plain", "--build-arg"])
        .arg(format!("BASE={}", base().reference))
        .arg(ctx.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(err.contains("install git"), "{err}");
}

#[test]
fn git_auth_token_from_the_environment_reaches_the_server_only() {
    let token = "gitsecret-7Hq2vX";
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("x-access-token:{token}"),
    );
    let repo = GitRepo::new("git-auth");
    repo.commit("one", &[("a.txt", "private\n")]);
    let http = serve_static(repo.dir.path(), Some(format!("basic {basic}")));
    let ctx = context(&format!(
        "ARG BASE\nFROM $BASE\nADD --keep-git-dir http://127.0.0.1:{http}/repo.git#main /src\n"
    ));
    let r = Rbuild::new();
    let out = build(&r, ctx.path(), "gitauth", &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "unauthenticated:\n{}",
        show(&out)
    );
    let out = r
        .cmd()
        .env("GIT_AUTH_TOKEN", token)
        .args(["build", "--progress=plain", "-t", "gitauth", "--build-arg"])
        .arg(format!("BASE={}", base().reference))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let (_d, fs) = unpack(&r, "gitauth");
    assert_eq!(read(fs.join("src/a.txt")), "private\n");
    // The kept .git holds the remote but not the credential (walked below with the store).
    assert!(read(fs.join("src/.git/config")).contains("/repo.git"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains(token) && !printed.contains(&basic),
        "{printed}"
    );
    let walk = walkdir::WalkDir::new(&r.root).into_iter();
    for entry in walk.chain(walkdir::WalkDir::new(&fs)).flatten() {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            for needle in [token.as_bytes(), basic.as_bytes()] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "credential in {}",
                    entry.path().display()
                );
            }
        }
    }
}

/// `rbuild build ARGS... CONTEXT` on the busybox base, with plain progress.
fn build_from(r: &Rbuild, tag: &str, extra: &[&str], context: &str) -> std::process::Output {
    let base = format!("BASE={}", base().reference);
    let mut args = vec!["build", "--progress=plain", "--build-arg", &base, "-t", tag];
    args.extend_from_slice(extra);
    args.push(context);
    r.run(&args)
}

#[test]
fn a_git_url_is_a_build_context() {
    let repo = GitRepo::new("git-ctx");
    let dockerfile = "ARG BASE\nFROM $BASE\nCOPY . /ctx/\nRUN cat /ctx/file.txt > /seen\n";
    repo.commit(
        "one",
        &[
            ("app/Dockerfile", dockerfile),
            ("app/file.txt", "v1\n"),
            ("app/.dockerignore", "ignored.txt\n"),
            ("app/ignored.txt", "no\n"),
            ("top.txt", "top\n"),
            (
                "app/Top.Dockerfile",
                "ARG BASE\nFROM $BASE\nCOPY top.txt /ctx/\n",
            ),
        ],
    );
    let http = serve_static(repo.dir.path(), None);
    let daemon = serve_git_daemon(repo.dir.path());
    let r = Rbuild::new();
    let url = format!("http://127.0.0.1:{http}/repo.git#main:app");
    let out = build_from(&r, "gitctx", &[], &url);
    assert!(out.status.success(), "{}", show(&out));
    let (_d, fs) = unpack(&r, "gitctx");
    assert_eq!(read(fs.join("seen")), "v1\n");
    assert!(
        !fs.join("ctx/ignored.txt").exists(),
        ".dockerignore applies"
    );
    assert!(
        !fs.join("ctx/top.txt").exists(),
        "the subdirectory is the context"
    );
    assert!(!fs.join("ctx/.git").exists());

    // The repository root as context over git://, with -f relative to it.
    let url = format!("git://127.0.0.1:{daemon}/repo.git?ref=main");
    let out = build_from(&r, "gitctx2", &["-f", "app/Top.Dockerfile"], &url);
    assert!(out.status.success(), "{}", show(&out));
    let (_d, fs) = unpack(&r, "gitctx2");
    assert_eq!(read(fs.join("ctx/top.txt")), "top\n");

    // Unchanged: CACHED; a new commit on main: the COPY re-runs.
    let url = format!("http://127.0.0.1:{http}/repo.git#main:app");
    let out = build_from(&r, "gitctx", &[], &url);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && cached(&log, "COPY . /ctx/"),
        "{log}"
    );
    repo.commit("two", &[("app/file.txt", "v2\n")]);
    let out = build_from(&r, "gitctx", &[], &url);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && !cached(&log, "COPY . /ctx/"),
        "{log}"
    );
    let (_d, fs) = unpack(&r, "gitctx");
    assert_eq!(read(fs.join("seen")), "v2\n");

    // A ref that does not exist: exit 1, naming it.
    let out = build_from(
        &r,
        "gitctx",
        &[],
        &format!("http://127.0.0.1:{http}/repo.git#nope"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(err.contains("ref \"nope\" not found"), "{err}");
}

#[test]
fn a_git_url_is_a_named_build_context() {
    let repo = GitRepo::new("git-named");
    repo.commit(
        "one",
        &[
            ("lib/version.txt", "lib-v1\n"),
            ("lib/.dockerignore", "secret.txt\n"),
            ("lib/secret.txt", "no\n"),
        ],
    );
    let http = serve_static(repo.dir.path(), None);
    let ctx = context(
        "ARG BASE\nFROM $BASE\nCOPY --from=lib version.txt /lib/\nCOPY --from=lib . /all/\n",
    );
    let r = Rbuild::new();
    let named = format!("lib=http://127.0.0.1:{http}/repo.git#main:lib");
    let out = build_from(
        &r,
        "gitnamed",
        &["--build-context", &named],
        ctx.path().to_str().unwrap(),
    );
    assert!(out.status.success(), "{}", show(&out));
    let (_d, fs) = unpack(&r, "gitnamed");
    assert_eq!(read(fs.join("lib/version.txt")), "lib-v1\n");
    assert!(
        !fs.join("all/secret.txt").exists(),
        "the repository's .dockerignore applies to the named context"
    );

    // A new commit: the COPYs from it run again and see it.
    repo.commit("two", &[("lib/version.txt", "lib-v2\n")]);
    let out = build_from(
        &r,
        "gitnamed",
        &["--build-context", &named],
        ctx.path().to_str().unwrap(),
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && !cached(&log, "COPY --from=lib version.txt"),
        "{log}"
    );
    let (_d, fs) = unpack(&r, "gitnamed");
    assert_eq!(read(fs.join("lib/version.txt")), "lib-v2\n");
}
