//! Image formats end to end: images built on bases pushed as OCI and as Docker v2s2, pushed
//! and saved as OCI (the default) or Docker v2s2 (`--format docker`), read back with skopeo
//! and umoci (and podman for Docker images); the shapes of manifests registries serve.

use std::path::{Path, PathBuf};

use crate::build::testdata;
use crate::util::busybox::BaseFormat;
use crate::util::podman::Podman;
use crate::util::rawpush;
use crate::util::registry::RegistryOptions;
use crate::util::{show, tool, Rbuild, Registry, TestDir};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
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
    build_push_on(rb, &base.busybox().reference, context, dest, extra);
}

/// `rbuild build --push --build-arg BASE=<base> -t DEST EXTRA... CONTEXT`.
pub fn build_push_on(rb: &Rbuild, base: &str, context: &Path, dest: &str, extra: &[&str]) {
    let arg = format!("BASE={base}");
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

/// Asserts `reference` in the registry is Docker v2s2 through and through.
fn assert_v2s2(reference: &str) -> serde_json::Value {
    let m = raw_manifest(reference);
    assert_eq!(m["mediaType"], DOCKER_MANIFEST, "{m}");
    assert_eq!(m["config"]["mediaType"], DOCKER_CONFIG, "{m}");
    for t in media_types(&m) {
        assert_eq!(t, DOCKER_GZIP, "{m}");
    }
    m
}

#[test]
fn format_docker_pushes_v2s2_that_podman_pulls_and_runs() {
    let registry = Registry::shared();
    for base in BaseFormat::BOTH {
        let rb = Rbuild::new();
        let dest = format!("{}/formats/docker-on-{base:?}:v1", registry.addr).to_lowercase();
        build_push(
            &rb,
            base,
            &testdata("format-base"),
            &dest,
            &["--format", "docker"],
        );
        let m = assert_v2s2(&dest);
        assert_eq!(m["layers"].as_array().unwrap().len(), 2, "{m}");
        assert_eq!(m["layers"][0]["digest"], base_layer_digest(base).as_str());
        let c = raw_config(&dest);
        assert_eq!(c["config"]["Healthcheck"]["Test"][0], "CMD-SHELL", "{c}");
        assert_eq!(c["config"]["OnBuild"][0], "RUN echo child", "{c}");
        let (_d, rootfs) = umoci_unpack_pushed(&dest);
        assert!(rootfs.join("hello").is_file());

        let podman = Podman::new();
        podman.pull(&dest);
        let out = podman.run_image(&dest, None, &["cat", "/hello"]);
        assert_eq!(out, "built-on-base\n");

        // `rbuild push --format docker|oci` of the same store image: v2s2 again with the
        // same digest (nothing to upload), then OCI with the same blobs.
        let again = format!("{}/formats/docker-again-{base:?}:v1", registry.addr).to_lowercase();
        rb.ok(&["push", "--format", "docker", &dest, &again]);
        assert_eq!(assert_v2s2(&again)["layers"], m["layers"]);
        let oci = format!("{}/formats/oci-again-{base:?}:v1", registry.addr).to_lowercase();
        rb.ok(&["push", &dest, &oci]);
        let o = raw_manifest(&oci);
        assert_eq!(o["mediaType"], OCI_MANIFEST, "{o}");
        assert_eq!(media_types(&o), [OCI_GZIP, OCI_GZIP], "{o}");
        for i in 0..2 {
            assert_eq!(o["layers"][i]["digest"], m["layers"][i]["digest"]);
        }
        assert_eq!(o["config"]["digest"], m["config"]["digest"]);
        umoci_unpack_pushed(&oci);
    }
}

#[test]
fn zstd_with_format_docker_is_a_usage_error() {
    let rb = Rbuild::new();
    let out = rb.run(&[
        "push",
        "--compression",
        "zstd",
        "--format",
        "docker",
        "x",
        "127.0.0.1:1/x:y",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--compression zstd cannot be used with --format docker"),
        "{err}"
    );
    let ctx = testdata("format-base").to_string_lossy().into_owned();
    let out = rb.run(&[
        "build",
        "-t",
        "127.0.0.1:1/x:y",
        "--push",
        "--compression",
        "zstd",
        "--format",
        "docker",
        &ctx,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn a_zstd_base_is_recompressed_for_docker_and_kept_for_oci() {
    let registry = Registry::shared();
    // A base whose layer is zstd: busybox pushed by rbuild with --compression zstd.
    let rb = Rbuild::new();
    rb.ok(&["pull", "-q", &BaseFormat::Oci.busybox().reference]);
    let zbase = format!("{}/formats/busybox-zstd:latest", registry.addr);
    rb.ok(&[
        "push",
        "--compression",
        "zstd",
        &BaseFormat::Oci.busybox().reference,
        &zbase,
    ]);
    let zm = raw_manifest(&zbase);
    assert_eq!(
        media_types(&zm),
        ["application/vnd.oci.image.layer.v1.tar+zstd"]
    );

    let rb = Rbuild::new();
    let ctx = testdata("format-base").to_string_lossy().into_owned();
    let arg = format!("BASE={zbase}");
    let dest = format!("{}/formats/on-zstd:docker", registry.addr);
    rb.ok(&[
        "build",
        "--build-arg",
        &arg,
        "-t",
        &dest,
        "--push",
        "--format",
        "docker",
        &ctx,
    ]);
    assert_v2s2(&dest);
    let (_d, rootfs) = umoci_unpack_pushed(&dest);
    assert!(rootfs.join("bin/busybox").is_file());
    // OCI with zstd keeps the zstd base layer as it is.
    let oci = format!("{}/formats/on-zstd:oci", registry.addr);
    rb.ok(&["push", "--compression", "zstd", &dest, &oci]);
    let m = raw_manifest(&oci);
    assert_eq!(m["layers"][0], zm["layers"][0], "{m}");
    // umoci 0.4.7 (Debian 12) reads no zstd layer at all; skopeo copies it (verifying
    // every digest).
    let out = TestDir::new("zstd-copy");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{oci}"),
            &format!("oci:{}:x", out.path().join("layout").display()),
        ],
    );
}

#[test]
fn save_oci_archive_of_a_docker_image_is_pure_oci() {
    let rb = Rbuild::new();
    let reference = &BaseFormat::Docker.busybox().reference;
    rb.ok(&["pull", "-q", reference]);
    let dir = TestDir::new("save-v2s2");
    let archive = dir.path().join("oci.tar");
    rb.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        reference,
    ]);
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    tool(
        "tar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
        ],
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["mediaType"], OCI_MANIFEST, "{index}");
    let name = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .to_string();
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:{name}", layout.display()),
        ],
    );
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(m["config"]["mediaType"], OCI_CONFIG, "{m}");
    assert_eq!(media_types(&m), [OCI_GZIP], "{m}");
    assert_eq!(
        m["layers"][0]["digest"],
        base_layer_digest(BaseFormat::Docker).as_str()
    );
    let bundle = dir.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{name}", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    assert!(bundle.join("rootfs/bin/busybox").is_file());

    // An image built on the v2s2 base, saved both ways: skopeo reads both archives.
    let ctx = testdata("format-base").to_string_lossy().into_owned();
    let arg = format!("BASE={reference}");
    rb.ok(&[
        "build",
        "-q",
        "--build-arg",
        &arg,
        "-t",
        "saved-on-v2s2",
        &ctx,
    ]);
    for (format, transport) in [("docker", "docker-archive"), ("oci", "oci-archive")] {
        let path = dir.path().join(format!("built-{format}.tar"));
        rb.ok(&[
            "save",
            "--format",
            format,
            "-o",
            path.to_str().unwrap(),
            "saved-on-v2s2",
        ]);
        let name = match format {
            "oci" => ":docker.io/library/saved-on-v2s2:latest",
            _ => "",
        };
        let raw = tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                &format!("{transport}:{}{name}", path.display()),
            ],
        );
        let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["layers"].as_array().unwrap().len(), 2, "{m}");
        if format == "oci" {
            assert_eq!(m["mediaType"], OCI_MANIFEST, "{m}");
            assert_eq!(
                media_types(&m),
                [OCI_GZIP, "application/vnd.oci.image.layer.v1.tar"]
            );
        }
    }
}

/// The fixture busybox's config and gzip layer, read from its OCI layout.
struct BusyboxBlobs {
    config: Vec<u8>,
    layer: Vec<u8>,
}

fn busybox_blobs() -> BusyboxBlobs {
    let layout = &BaseFormat::Oci.busybox().layout;
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .expect("layout blob")
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    BusyboxBlobs {
        config: blob(m["config"]["digest"].as_str().unwrap()),
        layer: blob(m["layers"][0]["digest"].as_str().unwrap()),
    }
}

/// A manifest over `config` and `layers` (media type, bytes), as canonical JSON.
fn manifest_json(media_type: &str, config: (&str, &[u8]), layers: &[serde_json::Value]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config.0, "digest": rawpush::digest(config.1), "size": config.1.len()},
        "layers": layers,
    }))
    .unwrap()
}

fn layer_entry(media_type: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": rawpush::digest(data), "size": data.len()})
}

/// Builds `format-base` on `base` with `--push` (OCI), checks the pushed image is pure OCI
/// and passes umoci, and that the base layer blob is the one pushed by hand.
fn build_on_hand_made_base(base: &str, dest: &str) {
    let rb = Rbuild::new();
    let arg = format!("BASE={base}");
    let ctx = testdata("format-base").to_string_lossy().into_owned();
    rb.ok(&[
        "build",
        "--progress=plain",
        "--build-arg",
        &arg,
        "-t",
        dest,
        "--push",
        &ctx,
    ]);
    let m = raw_manifest(dest);
    assert_eq!(m["mediaType"], OCI_MANIFEST, "{m}");
    assert_eq!(m["config"]["mediaType"], OCI_CONFIG, "{m}");
    assert_eq!(media_types(&m), [OCI_GZIP, OCI_GZIP], "{m}");
    assert_eq!(
        m["layers"][0]["digest"],
        rawpush::digest(&busybox_blobs().layer).as_str()
    );
    let (_d, rootfs) = umoci_unpack_pushed(dest);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("hello")).unwrap(),
        "built-on-base\n"
    );
}

#[test]
fn an_oci_index_with_attestation_manifests_gives_the_platform_image() {
    let addr = &Registry::shared().addr;
    let repo = "formats/attested";
    let bb = busybox_blobs();
    rawpush::put_blob(addr, repo, &bb.config);
    rawpush::put_blob(addr, repo, &bb.layer);
    let image = manifest_json(
        OCI_MANIFEST,
        (OCI_CONFIG, &bb.config),
        &[layer_entry(OCI_GZIP, &bb.layer)],
    );
    let image_digest =
        rawpush::put_manifest(addr, repo, &rawpush::digest(&image), OCI_MANIFEST, &image);
    // BuildKit's provenance attestation: an image-shaped manifest for `unknown/unknown`.
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2"}"#;
    let att_config = br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    rawpush::put_blob(addr, repo, statement);
    rawpush::put_blob(addr, repo, att_config);
    let mut in_toto = layer_entry("application/vnd.in-toto+json", statement);
    in_toto["annotations"] =
        serde_json::json!({"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"});
    let att = manifest_json(OCI_MANIFEST, (OCI_CONFIG, att_config), &[in_toto]);
    let att_digest = rawpush::put_manifest(addr, repo, &rawpush::digest(&att), OCI_MANIFEST, &att);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": att_digest, "size": att.len(),
             "platform": {"architecture": "unknown", "os": "unknown"},
             "annotations": {"vnd.docker.reference.digest": image_digest,
                             "vnd.docker.reference.type": "attestation-manifest"}},
            {"mediaType": OCI_MANIFEST, "digest": image_digest, "size": image.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    }))
    .unwrap();
    rawpush::put_manifest(
        addr,
        repo,
        "latest",
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    let base = format!("{addr}/{repo}:latest");
    // pull picks the image, not the attestation listed before it.
    let rb = Rbuild::new();
    let id = rb.ok(&["pull", "-q", &base]);
    assert_eq!(id.trim(), rawpush::digest(&bb.config));
    // An arm64 pull names the real platform only.
    let out = rb.run(&["pull", "--platform", "linux/arm64", &base]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("linux/amd64"),
        "{}",
        show(&out)
    );
    assert!(!err.contains("unknown/unknown"), "{err}");
    build_on_hand_made_base(&base, &format!("{addr}/formats/on-attested:v1"));
}

#[test]
fn a_docker_manifest_list_and_an_oci_manifest_with_docker_layers_are_bases() {
    let addr = &Registry::shared().addr;
    let bb = busybox_blobs();
    // A Docker manifest list over a v2s2 image.
    let repo = "formats/list";
    rawpush::put_blob(addr, repo, &bb.config);
    rawpush::put_blob(addr, repo, &bb.layer);
    let v2s2 = manifest_json(
        DOCKER_MANIFEST,
        (DOCKER_CONFIG, &bb.config),
        &[layer_entry(DOCKER_GZIP, &bb.layer)],
    );
    let d = rawpush::put_manifest(addr, repo, &rawpush::digest(&v2s2), DOCKER_MANIFEST, &v2s2);
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": list_type,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": d, "size": v2s2.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    }))
    .unwrap();
    rawpush::put_manifest(addr, repo, "latest", list_type, &list);
    build_on_hand_made_base(
        &format!("{addr}/{repo}:latest"),
        &format!("{addr}/formats/on-list:v1"),
    );

    // An OCI manifest whose layer keeps the Docker media type (what some tools write).
    let repo = "formats/mixed";
    rawpush::put_blob(addr, repo, &bb.config);
    rawpush::put_blob(addr, repo, &bb.layer);
    let mixed = manifest_json(
        OCI_MANIFEST,
        (OCI_CONFIG, &bb.config),
        &[layer_entry(DOCKER_GZIP, &bb.layer)],
    );
    rawpush::put_manifest(addr, repo, "latest", OCI_MANIFEST, &mixed);
    build_on_hand_made_base(
        &format!("{addr}/{repo}:latest"),
        &format!("{addr}/formats/on-mixed:v1"),
    );
}

#[test]
fn foreign_layers_are_pulled_from_their_urls_and_never_pushed() {
    // registry:2 refuses manifests with `urls` unless they are allowed.
    let registry = Registry::start(
        "foreign",
        RegistryOptions {
            extra_yaml: "validation:\n  manifests:\n    urls:\n      allow:\n        - ^http://\n"
                .into(),
            ..RegistryOptions::default()
        },
    );
    let addr = &registry.addr;
    let bb = busybox_blobs();
    let foreign_tar = {
        let data = b"from a foreign layer\n";
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, "foreign.txt", &data[..]).unwrap();
        b.into_inner().unwrap()
    };
    let foreign_gz = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&foreign_tar).unwrap();
        gz.finish().unwrap()
    };
    // The foreign blob lives elsewhere: another repository, reached only through `urls`.
    let foreign_digest = rawpush::put_blob(addr, "formats/foreign-host", &foreign_gz);
    let url = format!("http://{addr}/v2/formats/foreign-host/blobs/{foreign_digest}");
    let mut config: serde_json::Value = serde_json::from_slice(&bb.config).unwrap();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(rawpush::digest(&foreign_tar).into());
    let config = serde_json::to_vec(&config).unwrap();
    let shapes = [
        (
            "oci",
            OCI_MANIFEST,
            OCI_CONFIG,
            OCI_GZIP,
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        ),
        (
            "docker",
            DOCKER_MANIFEST,
            DOCKER_CONFIG,
            DOCKER_GZIP,
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ),
    ];
    for (name, mt, ct, lt, ft) in shapes {
        let repo = format!("formats/foreign-base-{name}");
        rawpush::put_blob(addr, &repo, &config);
        rawpush::put_blob(addr, &repo, &bb.layer);
        let mut foreign = layer_entry(ft, &foreign_gz);
        foreign["urls"] = serde_json::json!([url]);
        let m = manifest_json(mt, (ct, &config), &[layer_entry(lt, &bb.layer), foreign]);
        rawpush::put_manifest(addr, &repo, "latest", mt, &m);

        let rb = Rbuild::new();
        let arg = format!("BASE={addr}/{repo}:latest");
        let ctx = testdata("format-foreign").to_string_lossy().into_owned();
        for format in ["oci", "docker"] {
            let dest = format!("{addr}/formats/on-foreign-{name}:{format}");
            rb.ok(&[
                "build",
                "--progress=plain",
                "--build-arg",
                &arg,
                "-t",
                &dest,
                "--push",
                "--format",
                format,
                &ctx,
            ]);
            let pushed = raw_manifest(&dest);
            let want = match format {
                "oci" => "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                _ => "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            };
            assert_eq!(pushed["layers"][1]["mediaType"], want, "{pushed}");
            assert_eq!(pushed["layers"][1]["digest"], foreign_digest.as_str());
            assert_eq!(pushed["layers"][1]["urls"][0], url.as_str(), "{pushed}");
            // Never pushed: the destination repository does not have the blob.
            let (status, _, _) = rawpush::request(
                addr,
                "HEAD",
                &format!("/v2/formats/on-foreign-{name}/blobs/{foreign_digest}"),
                &[],
                b"",
            );
            assert_eq!(status, 404, "foreign layer was pushed");
            if format == "oci" {
                // skopeo leaves foreign layers out of an OCI layout (they are fetched from
                // their urls): put it there as a runtime would, then umoci unpacks.
                let (dir, _) = copy_to_layout(&dest);
                std::fs::write(
                    dir.path()
                        .join("layout/blobs/sha256")
                        .join(foreign_digest.trim_start_matches("sha256:")),
                    &foreign_gz,
                )
                .unwrap();
                let bundle = dir.path().join("bundle");
                tool(
                    "umoci",
                    &[
                        "unpack",
                        "--image",
                        &format!("{}:x", dir.path().join("layout").display()),
                        bundle.to_str().unwrap(),
                    ],
                );
                assert_eq!(
                    std::fs::read_to_string(bundle.join("rootfs/copied.txt")).unwrap(),
                    "from a foreign layer\n"
                );
            }
        }
    }
}

/// `skopeo copy` of a registry image to `<dir>/layout:x`.
fn copy_to_layout(reference: &str) -> (TestDir, PathBuf) {
    let dir = TestDir::new("layout-copy");
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
    (dir, layout)
}

#[test]
fn a_pulled_v2s2_image_pushes_byte_for_byte_as_docker_and_converted_as_oci() {
    let registry = Registry::shared();
    let source = &BaseFormat::Docker.busybox().reference;
    let rb = Rbuild::new();
    rb.ok(&["pull", "-q", source]);
    let source_digest = tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{source}"),
        ],
    );
    let docker = format!("{}/formats/v2s2-roundtrip:docker", registry.addr);
    let out = rb.ok(&["push", "--format", "docker", source, &docker]);
    assert!(
        out.contains(source_digest.trim()),
        "{out} vs {source_digest}"
    );
    let oci = format!("{}/formats/v2s2-roundtrip:oci", registry.addr);
    let out = rb.ok(&["push", source, &oci]);
    assert!(!out.contains(source_digest.trim()), "{out}");
    let m = raw_manifest(&oci);
    assert_eq!(m["mediaType"], OCI_MANIFEST, "{m}");
    assert_eq!(media_types(&m), [OCI_GZIP]);
    assert_eq!(
        m["layers"][0]["digest"],
        base_layer_digest(BaseFormat::Docker).as_str()
    );
    umoci_unpack_pushed(&oci);
}
