//! Image formats end to end: images built on bases pushed as OCI and as Docker v2s2, pushed
//! and saved as OCI (the default) or Docker v2s2 (`--format docker`), read back with skopeo
//! and umoci (and podman for Docker images); the shapes of manifests registries serve.

use std::path::{Path, PathBuf};

use crate::build::testdata;
use crate::util::busybox::BaseFormat;
use crate::util::{tool, Rbuild, Registry, TestDir};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `skopeo inspect --raw` of a registry image, parsed.
pub fn raw_manifest(reference: &str) -> serde_json::Value {
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    serde_json::from_str(&raw).expect("manifest is json")
}

/// `skopeo inspect --config --raw` of a registry image, parsed.
pub fn raw_config(reference: &str) -> serde_json::Value {
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    serde_json::from_str(&raw).expect("config is json")
}

/// What every image rbuild pushes must pass: `skopeo inspect`, then a copy to an OCI
/// layout and `umoci unpack` of it. Returns the unpacked rootfs (inside the returned dir).
pub fn umoci_unpack_pushed(reference: &str) -> (TestDir, PathBuf) {
    tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    let dir = TestDir::new("pushed-unpack");
    let layout = dir.path().join("layout");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:x", layout.display()),
        ],
    );
    let bundle = dir.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:x", layout.display()),
            &bundle.to_string_lossy(),
        ],
    );
    (dir, bundle.join("rootfs"))
}

/// `rbuild build --push` of `context` on the busybox base in `base` format, as `dest`.
fn build_push(rb: &Rbuild, base: BaseFormat, context: &Path, dest: &str, extra: &[&str]) {
    let arg = format!("BASE={}", base.busybox().reference);
    let mut args = vec![
        "build",
        "--progress=plain",
        "--build-arg",
        &arg,
        "-t",
        dest,
        "--push",
    ];
    args.extend_from_slice(extra);
    let ctx = context.to_string_lossy().into_owned();
    args.push(&ctx);
    rb.ok(&args);
}

fn media_types(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn base_layer_digest(base: BaseFormat) -> String {
    raw_manifest(&base.busybox().reference)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn build_on_a_docker_v2s2_base_pushes_a_pure_oci_image() {
    let registry = Registry::shared();
    // The fixture really is Docker v2s2.
    let v2s2 = raw_manifest(&BaseFormat::Docker.busybox().reference);
    assert_eq!(v2s2["mediaType"], DOCKER_MANIFEST);
    assert_eq!(media_types(&v2s2), [DOCKER_GZIP]);
    for base in BaseFormat::BOTH {
        let rb = Rbuild::new();
        let dest = format!("{}/formats/oci-on-{base:?}:v1", registry.addr).to_lowercase();
        build_push(&rb, base, &testdata("format-base"), &dest, &[]);
        let m = raw_manifest(&dest);
        assert_eq!(m["mediaType"], OCI_MANIFEST, "{base:?}: {m}");
        assert_eq!(m["config"]["mediaType"], OCI_CONFIG, "{base:?}: {m}");
        assert_eq!(media_types(&m), [OCI_GZIP, OCI_GZIP], "{base:?}: {m}");
        // The base layer is the base's blob, not a recompressed copy.
        assert_eq!(m["layers"][0]["digest"], base_layer_digest(base).as_str());
        let (_dir, rootfs) = umoci_unpack_pushed(&dest);
        assert_eq!(
            std::fs::read_to_string(rootfs.join("hello")).unwrap(),
            "built-on-base\n"
        );
        assert!(rootfs.join("bin/busybox").is_file());
        // docker's fields the OCI spec lacks are kept.
        let c = raw_config(&dest);
        assert_eq!(c["config"]["Healthcheck"]["Test"][0], "CMD-SHELL", "{c}");
        assert_eq!(c["config"]["Shell"][1], "-ec", "{c}");
        assert_eq!(c["config"]["OnBuild"][0], "RUN echo child", "{c}");
    }
}

/// `rbuild build` (no push) of `context` on the busybox base in `base` format as `tag`,
/// unpacked from the store with umoci.
fn build_unpack(rb: &Rbuild, base: BaseFormat, context: &Path, tag: &str) -> (TestDir, PathBuf) {
    let arg = format!("BASE={}", base.busybox().reference);
    let ctx = context.to_string_lossy().into_owned();
    rb.ok(&[
        "build",
        "--progress=plain",
        "--build-arg",
        &arg,
        "-t",
        tag,
        &ctx,
    ]);
    crate::build::unpack(rb, tag)
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn env_on_one_line_expands_against_the_earlier_environment() {
    for base in BaseFormat::BOTH {
        let rb = Rbuild::new();
        let (_d, fs) = build_unpack(&rb, base, &testdata("env-home"), "env-home");
        // docker gives B the old A: "y x x-z", not "y y y-z".
        assert_eq!(read(fs.join("out/env.txt")), "y x x-z\n", "{base:?}");
        let cfg = crate::build::config(&rb, "env-home");
        let env = cfg["config"]["Env"].to_string();
        assert!(
            env.contains("\"B=x\"") && env.contains("\"C=x-z\""),
            "{env}"
        );
    }
}

#[test]
fn home_in_run_comes_from_passwd_for_the_step_user() {
    for base in BaseFormat::BOTH {
        let rb = Rbuild::new();
        let (_d, fs) = build_unpack(&rb, base, &testdata("env-home"), "env-home");
        assert_eq!(read(fs.join("out/home-root.txt")), "/root\n", "{base:?}");
        assert_eq!(read(fs.join("out/home-app.txt")), "/home/app\n");
        assert_eq!(read(fs.join("out/home-uid.txt")), "/home/app\n");
        // A uid with no passwd entry gets `/`, as runc gives it.
        assert_eq!(read(fs.join("out/home-nobody-uid.txt")), "/\n");
        // An image that sets HOME keeps it.
        assert_eq!(read(fs.join("out/home-env.txt")), "/custom\n");
        // HOME is the sandbox's, not written into the config by RUN.
        let cfg = crate::build::config(&rb, "env-home");
        assert_eq!(
            cfg["config"]["Env"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e.as_str().unwrap().starts_with("HOME="))
                .count(),
            1,
            "{cfg}"
        );
    }
}
