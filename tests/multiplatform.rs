//! Multi-platform builds: `--platform linux/amd64,linux/arm64` gives one index (pushed with
//! each entry's platform, read back by skopeo and umoci, run by podman), arm64 RUN steps
//! under binfmt_misc emulation, `FROM --platform=$BUILDPLATFORM` stages run natively and
//! shared between the targets, one directory per platform for `--output type=local`.

use crate::util::busybox::busybox_multi;
use crate::util::podman::Podman;
use crate::util::{show, tool, Rbuild, TestDir};

/// A context whose Dockerfile has a shared BUILDPLATFORM stage, a BUILDPLATFORM stage per
/// target (TARGETARCH), and a final stage on the target's base that runs `uname -m`.
fn cross_context(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.write(
        "Dockerfile",
        "ARG BASE\n\
         FROM --platform=$BUILDPLATFORM ${BASE} AS tools\n\
         RUN echo tools-ran-$((40+2)) && uname -m > /tool-arch\n\
         FROM --platform=$BUILDPLATFORM ${BASE} AS cross\n\
         ARG TARGETARCH\n\
         COPY --from=tools /tool-arch /tool-arch\n\
         RUN echo cross-for-$TARGETARCH > /cross && echo cross-ran-$((1+1))-$TARGETARCH\n\
         FROM ${BASE}\n\
         ARG TARGETPLATFORM\n\
         COPY --from=cross /cross /tool-arch /\n\
         RUN uname -m > /uname && echo \"$TARGETPLATFORM\" > /target\n\
         CMD [\"cat\", \"/uname\"]\n",
    );
    dir
}

fn build(rb: &Rbuild, ctx: &TestDir, extra: &[&str]) -> String {
    let base = format!("BASE={}", busybox_multi().reference);
    let mut args = vec!["build", "--progress=plain", "--build-arg", &base];
    args.extend_from_slice(extra);
    let path = ctx.path().display().to_string();
    args.push(&path);
    let out = rb.run(&args);
    assert!(out.status.success(), "build failed:\n{}", show(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn registry_ref(repo: &str) -> String {
    format!("{}/{repo}", crate::util::Registry::shared().addr)
}

/// Copies the `arch` image of `reference` out with skopeo and unpacks it with umoci;
/// returns the rootfs's `path` contents.
fn file_in(reference: &str, arch: &str, path: &str) -> String {
    let dir = TestDir::new(&format!("mp-unpack-{arch}"));
    let layout = dir.path().join("layout");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--override-arch",
            arch,
            &format!("docker://{reference}"),
            &format!("oci:{}:img", layout.display()),
        ],
    );
    let bundle = dir.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:img", layout.display()),
            &bundle.display().to_string(),
        ],
    );
    std::fs::read_to_string(bundle.join("rootfs").join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{path} in the {arch} image: {e}"))
}

#[test]
fn two_platforms_push_one_index_whose_arm64_image_ran_emulated_and_runs_in_podman() {
    let rb = Rbuild::new();
    let ctx = cross_context("mp-push");
    let dest = registry_ref("mp/cross:1");
    let err = build(
        &rb,
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &dest,
            "--push",
        ],
    );
    // The shared BUILDPLATFORM stage ran once; the TARGETARCH one once per target.
    assert_eq!(err.matches("tools-ran-42").count(), 1, "{err}");
    assert_eq!(err.matches("cross-ran-2-amd64").count(), 1, "{err}");
    assert_eq!(err.matches("cross-ran-2-arm64").count(), 1, "{err}");

    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ],
    );
    let index: serde_json::Value = serde_json::from_str(&raw).expect("index json");
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{raw}"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{raw}");
    let arm = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            &format!("docker://{dest}"),
        ],
    );
    let arm: serde_json::Value = serde_json::from_str(&arm).expect("inspect json");
    assert_eq!(arm["Architecture"], "arm64");

    assert_eq!(file_in(&dest, "arm64", "/uname").trim(), "aarch64");
    assert_eq!(file_in(&dest, "arm64", "/target").trim(), "linux/arm64");
    assert_eq!(file_in(&dest, "arm64", "/cross").trim(), "cross-for-arm64");
    // The BUILDPLATFORM stages ran natively.
    assert_eq!(file_in(&dest, "arm64", "/tool-arch").trim(), "x86_64");
    assert_eq!(file_in(&dest, "amd64", "/uname").trim(), "x86_64");
    assert_eq!(file_in(&dest, "amd64", "/cross").trim(), "cross-for-amd64");

    let podman = Podman::new();
    let out = podman.ok(&[
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--arch",
        "arm64",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=8192:8192",
        "--network",
        "none",
        "--tls-verify=false",
        &dest,
        "uname",
        "-m",
    ]);
    assert_eq!(out.trim(), "aarch64");

    // A rebuild takes every step from the cache.
    let again = build(
        &rb,
        &ctx,
        &["--platform", "linux/arm64,linux/amd64", "-t", &dest],
    );
    assert!(!again.contains("tools-ran-42"), "{again}");
    assert!(!again.contains("cross-ran-2"), "{again}");
}

#[test]
fn format_docker_pushes_a_manifest_list() {
    let rb = Rbuild::new();
    let ctx = TestDir::new("mp-docker");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM ${BASE}\nRUN uname -m > /uname\n",
    );
    let dest = registry_ref("mp/docker:1");
    build(
        &rb,
        &ctx,
        &[
            "--platform",
            "linux/arm64",
            "--platform",
            "linux/amd64",
            "--format",
            "docker",
            "-t",
            &dest,
            "--push",
        ],
    );
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ],
    );
    let list: serde_json::Value = serde_json::from_str(&raw).expect("list json");
    assert_eq!(
        list["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json",
        "{raw}"
    );
    let entries = list["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 2, "{raw}");
    assert_eq!(entries[0]["platform"]["architecture"], "arm64", "{raw}");
    assert_eq!(
        entries[0]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(file_in(&dest, "arm64", "/uname").trim(), "aarch64");
}

#[test]
fn local_output_writes_a_directory_per_platform_and_names_are_normalised() {
    let rb = Rbuild::new();
    let ctx = TestDir::new("mp-local");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM ${BASE}\nRUN uname -m > /uname\n",
    );
    let out = TestDir::new("mp-local-out");
    let dest = format!("type=local,dest={}", out.path().display());
    let files = TestDir::new("mp-local-meta");
    let meta = files.path().join("meta.json").display().to_string();
    let iid = files.path().join("iid").display().to_string();
    // aarch64 and arm64/v8 are linux/arm64: one target, not two.
    build(
        &rb,
        &ctx,
        &[
            "--platform",
            "linux/aarch64,linux/x86_64",
            "--platform",
            "linux/arm64/v8",
            "-o",
            &dest,
            "--metadata-file",
            &meta,
            "--iidfile",
            &iid,
        ],
    );
    // Both name the index.
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{meta}"
    );
    assert_eq!(
        meta["containerimage.digest"].as_str(),
        Some(std::fs::read_to_string(&iid).unwrap().trim()),
        "{meta}"
    );
    let mut dirs: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs, ["linux_amd64", "linux_arm64"]);
    let uname = |d: &str| std::fs::read_to_string(out.path().join(d).join("uname")).unwrap();
    assert_eq!(uname("linux_arm64").trim(), "aarch64");
    assert_eq!(uname("linux_amd64").trim(), "x86_64");
    // The arm64 busybox is an aarch64 ELF (e_machine 183).
    let elf = std::fs::read(out.path().join("linux_arm64/bin/busybox")).unwrap();
    assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 183);
}

#[test]
fn a_base_without_the_platform_says_what_it_has() {
    let rb = Rbuild::new();
    let ctx = TestDir::new("mp-missing");
    ctx.write("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN true\n");
    let base = busybox_multi().reference.clone();
    let arg = format!("BASE={base}");
    let path = ctx.path().display().to_string();
    let out = rb.run(&[
        "build",
        "--progress=plain",
        "--build-arg",
        &arg,
        "--platform",
        "linux/amd64,linux/s390x",
        &path,
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("base {base} has no linux/s390x image; it has linux/amd64, linux/arm64");
    assert!(err.contains(&want), "want {want:?} in:\n{}", show(&out));
    assert!(err.contains("Dockerfile:2"), "{}", show(&out));
}

#[test]
fn a_bad_platform_is_a_usage_error_naming_it() {
    let rb = Rbuild::new();
    let ctx = TestDir::new("mp-bad");
    ctx.write("Dockerfile", "FROM scratch\n");
    let path = ctx.path().display().to_string();
    let out = rb.run(&["build", "--platform", "linux/amd64,linux", &path]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--platform \"linux\""), "{}", show(&out));
}

#[test]
fn an_index_in_the_store_is_tagged_listed_and_pushed_whole() {
    let rb = Rbuild::new();
    let ctx = TestDir::new("mp-store");
    ctx.write(
        "Dockerfile",
        "ARG BASE\nFROM ${BASE}\nRUN uname -m > /uname\n",
    );
    build(
        &rb,
        &ctx,
        &["--platform", "linux/amd64,linux/arm64", "-t", "mp/local:1"],
    );
    rb.ok(&["tag", "mp/local:1", "mp/local:2"]);
    let listed = rb.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(listed.contains("mp/local:2"), "{listed}");
    let dest = registry_ref("mp/retagged:2");
    rb.ok(&["push", "mp/local:2", &dest]);
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{dest}"),
        ],
    );
    let index: serde_json::Value = serde_json::from_str(&raw).expect("index json");
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(2),
        "{raw}"
    );
    assert_eq!(file_in(&dest, "arm64", "/uname").trim(), "aarch64");
    let fsck = rb.run(&["fsck"]);
    assert!(fsck.status.success(), "{}", show(&fsck));

    // The index in the store is a base: each target takes its own entry, no registry.
    let next = TestDir::new("mp-store-next");
    next.write("Dockerfile", "FROM mp/local:2\nRUN cp /uname /from-base\n");
    let out = TestDir::new("mp-store-out");
    let dest = format!("type=local,dest={}", out.path().display());
    let path = next.path().display().to_string();
    let platforms = "--platform=linux/arm64,linux/amd64";
    rb.ok(&["build", "--progress=plain", platforms, "-o", &dest, &path]);
    let from_base = |d: &str| std::fs::read_to_string(out.path().join(d).join("from-base"));
    assert_eq!(from_base("linux_arm64").unwrap().trim(), "aarch64");
    assert_eq!(from_base("linux_amd64").unwrap().trim(), "x86_64");
    let missing = rb.run(&["build", "--platform=linux/s390x", &path]);
    let want = "base mp/local:2 has no linux/s390x image; it has linux/amd64, linux/arm64";
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains(want), "{}", show(&missing));
}

#[test]
fn a_foreign_run_without_an_emulator_says_how_to_get_one() {
    // s390x: scripts/test registers only qemu-aarch64. Where the machine has an s390x
    // emulator registered, the step gets past the check and fails on the empty rootfs.
    let registered = std::fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("s390x"))
        })
        .unwrap_or(false);
    let rb = Rbuild::new();
    let ctx = TestDir::new("mp-noemu");
    ctx.write("Dockerfile", "FROM scratch\nRUN true\n");
    let path = ctx.path().display().to_string();
    let out = rb.run(&[
        "build",
        "--progress=plain",
        "--platform",
        "linux/s390x",
        &path,
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = "no emulator registered for linux/s390x: install qemu-user-static (binfmt_misc)";
    assert_eq!(
        err.matches(want).count(),
        usize::from(!registered),
        "{}",
        show(&out)
    );
    assert!(err.contains("Dockerfile:2"), "{}", show(&out));
}
