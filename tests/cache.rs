//! The build cache end to end: hits across processes, explained misses, `--no-cache`,
//! `--pull`, and bit-identical builds under `SOURCE_DATE_EPOCH`.

use std::path::Path;

use crate::build::{build_ok, config, manifest, on_both_bases, testdata};
use crate::util::busybox::busybox;
use crate::util::{show, tool, Rbuild, Registry, TestDir};

/// The `#N` numbers of the steps whose header contains `RUN`, `COPY`, `ADD` or `WORKDIR`.
fn layer_steps(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.contains("] RUN ")
                || l.contains("] COPY ")
                || l.contains("] ADD ")
                || l.contains("] WORKDIR ")
        })
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Copies a testdata dir so a test can change its files.
fn copy_testdata(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    for entry in std::fs::read_dir(testdata(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn a_second_identical_build_is_all_cache_hits() {
    let r = Rbuild::new();
    let ctx = testdata("httpserver");
    let (first, log1) = build_ok(&r, &ctx, "cached:v1", &[]);
    assert!(log1.contains("cache miss: not built before"), "{log1}");
    let (second, log2) = build_ok(&r, &ctx, "cached:v1", &[]);
    let steps = layer_steps(&log2);
    assert_eq!(steps.len(), 3, "{log2}");
    for n in &steps {
        assert!(
            log2.contains(&format!("{n} CACHED")),
            "step {n} not cached:\n{log2}"
        );
    }
    assert!(!log2.contains("cache miss"), "{log2}");
    // Same config bytes: the same image ID.
    assert_eq!(first, second);
}

#[test]
fn a_changed_source_is_named_and_invalidates_the_rest_of_the_stage() {
    on_both_bases(|| {
        let r = Rbuild::new();
        let dir = copy_testdata("cache-app");
        build_ok(&r, dir.path(), "app", &[]);
        std::fs::write(dir.path().join("app.conf"), "setting=2\n").unwrap();
        let (_, log) = build_ok(&r, dir.path(), "app", &[]);
        assert!(
            log.contains("cache miss: checksum of app.conf changed"),
            "{log}"
        );
        // The RUN and the COPY of the unchanged other.txt after it run again.
        assert_eq!(
            log.matches("cache miss: an earlier step changed").count(),
            2,
            "{log}"
        );
        let (_d, fs) = crate::build::unpack(&r, "app");
        assert_eq!(
            std::fs::read_to_string(fs.join("copy-of-conf.txt")).unwrap(),
            "setting=2\n"
        );
        // Changing it back hits the first build's records again.
        std::fs::write(dir.path().join("app.conf"), "setting=1\n").unwrap();
        let (_, log) = build_ok(&r, dir.path(), "app", &[]);
        assert!(!log.contains("cache miss"), "{log}");
    });
}

#[test]
fn no_cache_runs_every_step() {
    let r = Rbuild::new();
    let ctx = testdata("cache-app");
    build_ok(&r, &ctx, "nocache", &[]);
    let (_, log) = build_ok(&r, &ctx, "nocache", &["--no-cache"]);
    assert!(!log.contains("CACHED"), "{log}");
    assert_eq!(log.matches("cache miss: --no-cache").count(), 3, "{log}");
}

fn epoch_build(store: &Rbuild, ctx: &Path) -> String {
    let base = format!("BASE={}", crate::build::base().reference);
    let out = store
        .cmd()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "build",
            "-q",
            "--build-arg",
            &base,
            "-t",
            "repro",
            &ctx.to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn source_date_epoch_builds_are_bit_identical_across_stores() {
    on_both_bases(|| {
        let ctx = testdata("httpserver");
        let (a, b) = (Rbuild::new(), Rbuild::new());
        let id_a = epoch_build(&a, &ctx);
        let id_b = epoch_build(&b, &ctx);
        assert_eq!(id_a, id_b, "image IDs differ");
        let (ma, mb) = (manifest(&a, "repro"), manifest(&b, "repro"));
        assert_eq!(ma, mb, "manifests differ");
        let digest = |r: &Rbuild| {
            tool(
                "skopeo",
                &[
                    "inspect",
                    "--format",
                    "{{.Digest}}",
                    &crate::build::oci_ref(r, "repro"),
                ],
            )
        };
        assert_eq!(digest(&a), digest(&b), "manifest digests differ");
        let cfg = config(&a, "repro");
        assert_eq!(cfg["created"], "2023-11-14T22:13:20Z");
        let ours: Vec<_> = cfg["history"].as_array().unwrap()[1..].to_vec();
        assert!(
            ours.iter().all(|h| h["created"] == "2023-11-14T22:13:20Z"),
            "{ours:?}"
        );
        // Layer mtimes are clamped to the epoch.
        let (_d, fs) = crate::build::unpack(&a, "repro");
        let mtime = std::fs::metadata(fs.join("var/www/build.txt")).unwrap();
        assert!(std::os::unix::fs::MetadataExt::mtime(&mtime) <= 1_700_000_000);
    });
}

#[test]
fn pull_refreshes_a_base_that_changed_in_the_registry() {
    let registry = Registry::shared();
    let base = format!("{}/cachetest/base:latest", registry.addr);
    let dest_tls = "--dest-tls-verify=false";
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            dest_tls,
            &format!("oci:{}:latest", busybox().layout.display()),
            &format!("docker://{base}"),
        ],
    );
    let r = Rbuild::new();
    let dir = TestDir::new("pull-ctx");
    dir.write(
        "Dockerfile",
        format!("FROM {base}\nRUN echo hi > /hi.txt\n"),
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["build", "--progress=plain", "-t", "pulled"];
        args.extend_from_slice(extra);
        let ctx = dir.path().to_string_lossy().into_owned();
        args.push(&ctx);
        let out = r.run(&args);
        assert!(out.status.success(), "{}", show(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    run(&[]);
    // The registry's image changes: a new layer on top, pushed by rbuild itself.
    let changed = TestDir::new("pull-changed");
    changed.write(
        "Dockerfile",
        format!("FROM {base}\nRUN echo new > /new.txt\n"),
    );
    // (From another store, so this store's copy of the base stays the old one.)
    let other = Rbuild::new();
    other.ok(&[
        "build",
        "-q",
        "--push",
        "-t",
        &base,
        &changed.path().to_string_lossy(),
    ]);
    // Without --pull the local base is used: all cached.
    let log = run(&[]);
    assert!(!log.contains("cache miss"), "{log}");
    // With --pull the new base is fetched and the RUN after it misses.
    let log = run(&["--pull"]);
    assert!(log.contains("cache miss"), "{log}");
    let (_d, fs) = crate::build::unpack(&r, "pulled");
    assert!(
        fs.join("new.txt").exists(),
        "the refreshed base was not used"
    );
}

#[test]
fn stat_cache_and_cache_mounts_live_beside_records_and_fsck_stays_clean() {
    let r = Rbuild::new();
    build_ok(
        &r,
        &testdata("run-cache-mount"),
        "fsck",
        &["--build-arg", "RUN_ID=1"],
    );
    build_ok(&r, &testdata("cache-app"), "fsck2", &[]);
    let stat: Vec<_> = std::fs::read_dir(r.root.join("cache/stat"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Only cache-app's context had files to hash (run-cache-mount copies nothing).
    assert_eq!(stat.len(), 1, "one stat cache per hashed context: {stat:?}");
    assert!(stat.iter().all(|n| n.starts_with("statcache-")), "{stat:?}");
    r.ok(&["fsck"]);
    // A rebuild after fsck is still all cached: records and layers are intact.
    let (_, log) = build_ok(&r, &testdata("cache-app"), "fsck2", &[]);
    assert!(!log.contains("cache miss"), "{log}");
}

/// Builds `files` (relative name, contents, mode) as a context with `SOURCE_DATE_EPOCH=0`
/// into a fresh store and returns the manifest digest skopeo reads from the layout.
fn pinned_build(name: &str, files: &[(&str, &str, u32)]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new(name);
    for (path, contents, mode) in files {
        let p = dir.write(path, contents);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let r = Rbuild::new();
    let out = r
        .cmd()
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["build", "-q", "-t", name, &dir.path().to_string_lossy()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    tool(
        "skopeo",
        &[
            "inspect",
            "--format",
            "{{.Digest}}",
            &crate::build::oci_ref(&r, name),
        ],
    )
    .trim()
    .to_string()
}

/// The bytes of images rbuild writes are pinned: configs, manifests and layer tars of these
/// scratch-based builds (no base image, so no machine-specific input) must not change when
/// the code is reorganised. A deliberate format change updates the digests here and says
/// why in its commit.
#[test]
fn pinned_image_digests_do_not_change() {
    let copy_and_metadata = pinned_build(
        "pin-meta",
        &[
            (
                "Dockerfile",
                "FROM scratch\n\
                 COPY --chmod=0755 app.sh /usr/local/bin/app\n\
                 COPY conf/ /etc/app/\n\
                 COPY <<EOF /etc/motd\nhello\nEOF\n\
                 LABEL org.example.one=\"1\" two=\"two words\"\n\
                 ENV MODE=production PATH=/usr/local/bin\n\
                 EXPOSE 8080 53/udp\n\
                 VOLUME /data\n\
                 STOPSIGNAL SIGTERM\n\
                 HEALTHCHECK --interval=30s --retries=3 CMD [\"/usr/local/bin/app\", \"check\"]\n\
                 SHELL [\"/bin/ash\", \"-c\"]\n\
                 ONBUILD COPY . /src\n\
                 USER 1000:1000\n\
                 WORKDIR /srv\n\
                 ENTRYPOINT [\"/usr/local/bin/app\"]\n\
                 CMD [\"serve\"]\n",
                0o644,
            ),
            ("app.sh", "#!/bin/sh\necho app\n", 0o644),
            ("conf/a.conf", "a=1\n", 0o600),
            ("conf/sub/b.conf", "b=2\n", 0o644),
        ],
    );
    let multi_stage = pinned_build(
        "pin-stages",
        &[
            (
                "Dockerfile",
                "FROM scratch AS files\n\
                 COPY --chown=10:20 data.txt /out/data.txt\n\
                 COPY data.txt /out/link-me.txt\n\
                 FROM scratch\n\
                 COPY --from=files /out/ /data/\n\
                 ARG VERSION=1.2\n\
                 LABEL version=$VERSION\n",
                0o644,
            ),
            ("data.txt", "data\n", 0o644),
        ],
    );
    // The image model's move into store::model changed no byte (main at 1021269 gave the
    // same digests before docker's default PATH: the formats branch alone gives these).
    assert_eq!(
        copy_and_metadata,
        "sha256:f0acedd3752e42e70ceff97a829fa0095df9646e2163d65e41c43b5b28f899d1",
        "image bytes of the metadata build changed"
    );
    assert_eq!(
        multi_stage, "sha256:982b14a413d8a2e502823edf7c3288daa9f3c8c44536a7b4941a4df8986cb68b",
        "image bytes of the multi-stage build changed"
    );
}
