//! Issue 20, "Dockerfile frontier": flags refused by name, `COPY --parents`, `--link`,
//! `--build-context` and build checks, through the real binary; images read back with
//! umoci and skopeo.

use std::path::Path;

use crate::build::{base, build, build_ok, config, unpack};
use crate::util::{show, Rbuild, TestDir};

fn read(fs: &Path, path: &str) -> String {
    std::fs::read_to_string(fs.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unknown_or_unsupported_flag_fails_naming_flag_file_and_line() {
    let r = Rbuild::new();
    let ctx = TestDir::new("flags-unknown");
    ctx.write("a.txt", "a\n");
    ctx.write("Dockerfile", "FROM scratch\n\nCOPY --bogus a.txt /\n");
    let out = build(&r, ctx.path(), "flags-unknown", &[]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:3") && err.contains("--bogus") && err.contains("COPY"),
        "{err}"
    );
    // ADD has no --parents (BuildKit's table): refused, not ignored.
    ctx.write("Dockerfile", "FROM scratch\nADD --parents a.txt /\n");
    let out = build(&r, ctx.path(), "flags-unknown", &[]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("Dockerfile:2") && err.contains("--parents"),
        "{err}"
    );
    // Accepted by the parser, not supported by rbuild: an error, never a silent default.
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE\nRUN --security=insecure true\n",
    );
    let out = build(&r, ctx.path(), "flags-unknown", &[]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("Dockerfile:3") && err.contains("--security"),
        "{err}"
    );
}

#[test]
fn copy_parents_keeps_paths_below_the_context_or_the_pivot() {
    let r = Rbuild::new();
    let ctx = TestDir::new("copy-parents");
    ctx.write("a/conf.txt", "a\n");
    ctx.write("b/conf.txt", "b\n");
    ctx.write("b/other.txt", "other\n");
    ctx.write("x/y/z.txt", "z\n");
    ctx.write("logs/keep.txt", "keep\n");
    ctx.write("logs/drop.log", "drop\n");
    ctx.write(
        "Dockerfile",
        "FROM scratch AS files\n\
         COPY --parents */conf.txt /dst/\n\
         COPY --parents ./x/./y/z.txt /pivot/\n\
         COPY --parents --exclude=*.log logs /keep\n\
         COPY --parents nothing*/*.txt /empty/\n\
         FROM scratch\n\
         COPY --from=files --parents /dst/*/conf.txt /again/\n\
         COPY --from=files --parents /pivot/./y /from-pivot/\n\
         COPY --from=files / /\n",
    );
    build_ok(&r, ctx.path(), "copy-parents", &[]);
    let (_d, fs) = unpack(&r, "copy-parents");
    assert_eq!(read(&fs, "dst/a/conf.txt"), "a\n");
    assert_eq!(read(&fs, "dst/b/conf.txt"), "b\n");
    assert!(!fs.join("dst/conf.txt").exists());
    assert!(!fs.join("dst/b/other.txt").exists());
    assert_eq!(read(&fs, "pivot/y/z.txt"), "z\n");
    assert!(!fs.join("pivot/x").exists());
    assert_eq!(read(&fs, "keep/logs/keep.txt"), "keep\n");
    assert!(!fs.join("keep/logs/drop.log").exists());
    // A wildcard matching nothing copies nothing, as in BuildKit.
    assert!(fs.join("empty").is_dir());
    assert_eq!(read(&fs, "again/dst/a/conf.txt"), "a\n");
    assert_eq!(read(&fs, "again/dst/b/conf.txt"), "b\n");
    assert_eq!(read(&fs, "from-pivot/y/z.txt"), "z\n");
    let history = config(&r, "copy-parents")["history"].to_string();
    assert!(history.contains("COPY --parents"), "{history}");
}

#[test]
fn add_exclude_still_excludes() {
    let r = Rbuild::new();
    let ctx = TestDir::new("add-exclude");
    ctx.write("src/a.txt", "a\n");
    ctx.write("src/b.md", "b\n");
    ctx.write("Dockerfile", "FROM scratch\nADD --exclude=*.md src /src/\n");
    build_ok(&r, ctx.path(), "add-exclude", &[]);
    let (_d, fs) = unpack(&r, "add-exclude");
    assert_eq!(read(&fs, "src/a.txt"), "a\n");
    assert!(!fs.join("src/b.md").exists());
    let _ = base();
}
