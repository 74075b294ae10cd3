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

/// The `#N` progress number of the step whose header contains `text`.
fn step_number(log: &str, text: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.starts_with('#') && l.contains(text))
        .unwrap_or_else(|| panic!("no step {text:?} in:\n{log}"));
    line.split_whitespace().next().unwrap().to_string()
}

fn cached(log: &str, text: &str) -> bool {
    log.contains(&format!("{} CACHED", step_number(log, text)))
}

fn diff_ids(r: &Rbuild, tag: &str) -> Vec<String> {
    config(r, tag)["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn copy_link_is_cached_across_a_base_change_and_rebased() {
    let r = Rbuild::new();
    // A second base: the busybox base and one more layer.
    let b2 = TestDir::new("link-base2");
    b2.write("Dockerfile", "ARG BASE\nFROM $BASE\nRUN echo two > /base\n");
    build_ok(&r, b2.path(), "link-base:two", &[]);

    let ctx = TestDir::new("copy-link");
    ctx.write("app.txt", "app\n");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nARG FROM_IMAGE=$BASE\nFROM $FROM_IMAGE\n\
         COPY --link app.txt /app/\n\
         ADD --link app.txt /added/\n\
         RUN cat /app/app.txt /base 2>/dev/null > /app/seen; true\n",
    );
    let (first, log1) = build_ok(&r, ctx.path(), "link-app", &[]);
    assert!(!cached(&log1, "COPY --link"), "{log1}");
    let ids1 = diff_ids(&r, "link-app");
    assert_eq!(ids1.len(), 4, "{ids1:?}");

    let (second, log2) = build_ok(
        &r,
        ctx.path(),
        "link-app",
        &["--build-arg", "FROM_IMAGE=link-base:two"],
    );
    assert!(
        cached(&log2, "COPY --link") && cached(&log2, "ADD --link"),
        "linked steps not cached:\n{log2}"
    );
    assert!(
        !cached(&log2, "RUN cat"),
        "the step after it must rebuild:\n{log2}"
    );
    assert_ne!(first, second);
    let ids2 = diff_ids(&r, "link-app");
    let base2 = diff_ids(&r, "link-base:two");
    assert_eq!(ids2.len(), 5, "{ids2:?}");
    assert_eq!(ids2[..2], base2[..], "rebased onto the new base");
    assert_eq!(
        ids2[2..4],
        ids1[1..3],
        "the linked layers are reused as they are"
    );
    let (_d, fs) = unpack(&r, "link-app");
    assert_eq!(read(&fs, "app/seen"), "app\ntwo\n");
    assert_eq!(read(&fs, "base"), "two\n");

    // Back on the first base: every step from the cache, the first image again.
    let (third, log3) = build_ok(&r, ctx.path(), "link-app", &[]);
    assert!(
        cached(&log3, "COPY --link") && cached(&log3, "RUN cat"),
        "{log3}"
    );
    assert_eq!(third, first);
}

#[test]
fn a_linked_layer_holds_only_what_the_step_copied() {
    let r = Rbuild::new();
    let ctx = TestDir::new("link-alone");
    ctx.write("f.txt", "f\n");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE\nCOPY --link f.txt /etc/\nFROM scratch\nCOPY --from=0 /etc /etc\n",
    );
    build_ok(&r, ctx.path(), "link-alone", &[]);
    let (_d, fs) = unpack(&r, "link-alone");
    // The busybox base's /etc (passwd) and the linked file, merged by the later COPY.
    assert_eq!(read(&fs, "etc/f.txt"), "f\n");
    assert!(fs.join("etc/passwd").exists());
    // The same linked step on scratch gives the same layer: it never saw the base.
    ctx.write("Dockerfile", "FROM scratch\nCOPY --link f.txt /etc/\n");
    build_ok(&r, ctx.path(), "link-scratch", &[]);
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE\nCOPY --link f.txt /etc/\n",
    );
    build_ok(&r, ctx.path(), "link-on-base", &[]);
    assert_eq!(
        diff_ids(&r, "link-scratch")[0],
        *diff_ids(&r, "link-on-base").last().unwrap()
    );
}

#[test]
fn build_context_directory_overrides_a_stage_for_copy_from_and_from() {
    let r = Rbuild::new();
    let lib = TestDir::new("named-lib");
    lib.write("x.txt", "from the named context\n");
    lib.write("secret.txt", "ignored\n");
    lib.write(".dockerignore", "secret.txt\n");
    let ctx = TestDir::new("named-main");
    ctx.write("app.txt", "app\n");
    // The stage `lib` cannot build: the context of that name must replace it.
    ctx.write(
        "Dockerfile",
        "FROM scratch AS lib\nCOPY no-such-file /\n\
         FROM lib AS rootfs\nCOPY app.txt /\n\
         FROM scratch\nCOPY --from=lib x.txt /from-lib/\nCOPY --from=rootfs / /rootfs/\n",
    );
    let named = format!("lib={}", lib.path().display());
    build_ok(&r, ctx.path(), "named-dir", &["--build-context", &named]);
    let (_d, fs) = unpack(&r, "named-dir");
    assert_eq!(read(&fs, "from-lib/x.txt"), "from the named context\n");
    assert_eq!(read(&fs, "rootfs/x.txt"), "from the named context\n");
    assert_eq!(read(&fs, "rootfs/app.txt"), "app\n");
    assert!(
        !fs.join("rootfs/secret.txt").exists(),
        "its .dockerignore applies"
    );
    // A changed file in the named context is a cache miss naming it.
    lib.write("x.txt", "changed\n");
    let (_, log) = build_ok(&r, ctx.path(), "named-dir", &["--build-context", &named]);
    assert!(log.contains("checksum of x.txt changed"), "{log}");
    let (_d, fs) = unpack(&r, "named-dir");
    assert_eq!(read(&fs, "from-lib/x.txt"), "changed\n");
}

#[test]
fn build_context_images_from_a_registry_and_an_oci_layout() {
    let r = Rbuild::new();
    let ctx = TestDir::new("named-images");
    ctx.write(
        "Dockerfile",
        "FROM base\nRUN echo ran > /ran\nCOPY --from=layout /bin/busybox /copied-busybox\n",
    );
    let busybox = crate::util::busybox::busybox();
    let image = format!("base=docker-image://{}", busybox.reference);
    let layout = format!("layout=oci-layout://{}:latest", busybox.layout.display());
    build_ok(
        &r,
        ctx.path(),
        "named-images",
        &["--build-context", &image, "--build-context", &layout],
    );
    let (_d, fs) = unpack(&r, "named-images");
    assert_eq!(read(&fs, "ran"), "ran\n");
    assert_eq!(
        std::fs::read(fs.join("copied-busybox")).unwrap(),
        std::fs::read(fs.join("bin/busybox")).unwrap()
    );
    // The same layout by digest.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(busybox.layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let by_digest = format!("layout=oci-layout://{}@{digest}", busybox.layout.display());
    ctx.write(
        "Dockerfile",
        "FROM layout\nCOPY --from=layout /etc/passwd /p2\n",
    );
    build_ok(
        &r,
        ctx.path(),
        "named-digest",
        &["--build-context", &by_digest],
    );
    let (_d, fs) = unpack(&r, "named-digest");
    assert_eq!(read(&fs, "p2"), read(&fs, "etc/passwd"));
    // A tag the layout lacks is an error naming it.
    let missing = format!("layout=oci-layout://{}:nope", busybox.layout.display());
    let out = build(
        &r,
        ctx.path(),
        "named-digest",
        &["--build-context", &missing],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("nope"), "{}", show(&out));
}

#[test]
fn a_bad_build_context_is_a_usage_error() {
    let r = Rbuild::new();
    let ctx = TestDir::new("named-bad");
    ctx.write("Dockerfile", "FROM scratch\n");
    for (value, says) in [
        ("nameless", "NAME=VALUE"),
        ("x=ftp://host/y", "unknown scheme"),
        ("x=oci-layout://", "oci-layout://PATH"),
    ] {
        let out = build(&r, ctx.path(), "named-bad", &["--build-context", value]);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", show(&out));
        assert!(stderr(&out).contains(says), "{value}: {}", show(&out));
    }
}

#[test]
fn build_checks_warn_in_a_build_and_check_only_lints() {
    let r = Rbuild::new();
    let ctx = TestDir::new("checks");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM $BASE as Build\nMAINTAINER me\nCMD echo hi\n",
    );
    // A build succeeds and says what the checks found, with file, line and rule.
    let (_, log) = build_ok(&r, ctx.path(), "checks", &[]);
    for expected in [
        "Dockerfile:2: FromAsCasing:",
        "Dockerfile:2: StageNameCasing:",
        "Dockerfile:3: MaintainerDeprecated:",
        "Dockerfile:4: JSONArgsRecommended:",
    ] {
        assert!(log.contains(expected), "{expected} missing:\n{log}");
    }
    // --check lints only: exit 1, the same warnings, no image.
    let out = r.run(&[
        "build",
        "--check",
        "-t",
        "checks-only",
        &ctx.path().to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("Dockerfile:3: MaintainerDeprecated:"),
        "{}",
        show(&out)
    );
    let images = r.ok(&["images", "--format", "{{.Repository}}"]);
    assert!(!images.contains("checks-only"), "{images}");
    // check=skip= silences rules; with nothing left --check exits 0.
    ctx.write(
        "Dockerfile",
        "# check=skip=FromAsCasing,StageNameCasing,MaintainerDeprecated,JSONArgsRecommended,\
         InvalidDefaultArgInFrom\n\
         ARG BASE\nFROM $BASE as Build\nMAINTAINER me\nCMD echo hi\n",
    );
    let out = r.run(&["build", "--check", &ctx.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!stderr(&out).contains("WARNING"), "{}", show(&out));
    // check=error=true makes a warning fail the build.
    ctx.write(
        "Dockerfile",
        "# check=error=true\nARG BASE\nFROM $BASE\nMAINTAINER me\n",
    );
    let out = build(&r, ctx.path(), "checks-error", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("MaintainerDeprecated") && err.contains("error=true"),
        "{err}"
    );
    // An unknown key in the directive is an error naming the line.
    ctx.write("Dockerfile", "# check=skip=A;bogus=1\nFROM scratch\n");
    let out = build(&r, ctx.path(), "checks-bad", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("Dockerfile:1:") && stderr(&out).contains("bogus"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_base_of_another_platform_is_an_invalid_base_image_platform_warning() {
    let r = Rbuild::new();
    let ctx = TestDir::new("checks-platform");
    // The busybox base is a single linux/amd64 manifest: asking for arm64 gets amd64.
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM --platform=linux/arm64 $BASE AS build-arm64\nLABEL a=b\n",
    );
    let (_, log) = build_ok(&r, ctx.path(), "checks-platform", &[]);
    assert!(
        log.contains("Dockerfile:2: InvalidBaseImagePlatform:") && log.contains("linux/arm64"),
        "{log}"
    );
}

#[test]
fn build_context_tarball_url_is_downloaded_and_unpacked() {
    let r = Rbuild::new();
    let src = TestDir::new("named-url-src");
    src.write("lib/x.txt", "from the tarball\n");
    let tarball = src.path().join("ctx.tar.gz");
    crate::util::tool(
        "tar",
        &[
            "-czf",
            &tarball.to_string_lossy(),
            "-C",
            &src.path().join("lib").to_string_lossy(),
            ".",
        ],
    );
    let body: &'static [u8] = Box::leak(std::fs::read(&tarball).unwrap().into_boxed_slice());
    let port = crate::build::serve(body, 1);
    let ctx = TestDir::new("named-url");
    ctx.write("Dockerfile", "FROM scratch\nCOPY --from=lib x.txt /\n");
    let named = format!("lib=http://127.0.0.1:{port}/ctx.tar.gz");
    build_ok(&r, ctx.path(), "named-url", &["--build-context", &named]);
    let (_d, fs) = unpack(&r, "named-url");
    assert_eq!(read(&fs, "x.txt"), "from the tarball\n");
}
