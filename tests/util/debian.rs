//! A Debian 12 base image made with `debootstrap --variant=minbase bookworm` from the
//! machine's configured apt mirror, imported as one gzip layer into an OCI layout and pushed
//! to the shared registry in Docker v2s2 format (`skopeo copy --format v2s2`), as Debian's
//! own images are.
//!
//! The rootfs and the layout are made once and kept under `target/fixtures/` (a `flock`ed
//! lock file keeps concurrent test binaries from racing), so the suite does not fetch Debian
//! on every run; delete `target/fixtures/debian-*` to make them again.

use std::fs::File;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::{show, tool, Registry};

/// The image in the registry.
pub struct Debian {
    /// `127.0.0.1:PORT/library/debian-minbase:bookworm` in the shared registry (v2s2).
    pub reference: String,
    /// The cached OCI layout it was pushed from (tag `bookworm`).
    pub layout: PathBuf,
}

/// `target/fixtures`.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("fixtures")
}

/// The Debian base, made (or taken from the cache) and pushed once per test process.
pub fn debian() -> &'static Debian {
    static IMAGE: OnceLock<Debian> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let layout = cached_layout();
        let reference = format!(
            "{}/library/debian-minbase:bookworm",
            Registry::shared().addr
        );
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--format",
                "v2s2",
                "--dest-tls-verify=false",
                &format!("oci:{}:bookworm", layout.display()),
                &format!("docker://{reference}"),
            ],
        );
        Debian { reference, layout }
    })
}

/// An exclusive `flock` on `path`, held until the returned file is dropped.
fn lock(path: &Path) -> File {
    let f = File::create(path).expect("create the fixture lock file");
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}", path.display());
    f
}

/// The OCI layout under `target/fixtures/debian-layout`, made from the cached rootfs.
fn cached_layout() -> PathBuf {
    let dir = fixtures();
    std::fs::create_dir_all(&dir).expect("fixtures dir");
    let _lock = lock(&dir.join("debian.lock"));
    let layout = dir.join("debian-layout");
    if layout.join("done").exists() {
        return layout;
    }
    let rootfs = cached_rootfs(&dir);
    let tmp = dir.join("debian-layout.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    write_layout(&rootfs, &tmp);
    std::fs::write(tmp.join("done"), b"").expect("mark layout");
    let _ = std::fs::remove_dir_all(&layout);
    std::fs::rename(&tmp, &layout).expect("install layout");
    layout
}

/// `target/fixtures/debian-rootfs`: `debootstrap --variant=minbase bookworm` from the apt
/// mirror, run once. Caller holds the lock.
fn cached_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("debian-rootfs");
    if rootfs.join(".rbuild-fixture-done").exists() {
        return rootfs;
    }
    let tmp = dir.join("debian-rootfs.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let mirror = apt_mirror();
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&tmp)
        .arg(&mirror)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run debootstrap ({e}): install the Debian package debootstrap")
        });
    assert!(
        out.status.success(),
        "debootstrap --variant=minbase bookworm {} {mirror} failed:\n{}",
        tmp.display(),
        show(&out)
    );
    std::fs::write(tmp.join(".rbuild-fixture-done"), b"").expect("mark rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::rename(&tmp, &rootfs).expect("install rootfs");
    rootfs
}

/// The Debian mirror apt is configured with: the first `URIs:` of a deb822 source (or
/// `deb URL` line) serving `bookworm` itself; Debian's default mirror when none is found.
pub fn apt_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let name = p.to_string_lossy();
            if name.ends_with(".sources") || name.ends_with(".list") {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    texts.push(t);
                }
            }
        }
    }
    for text in &texts {
        // One-line style: `deb [opts] URL bookworm main`.
        for line in text.lines().map(str::trim) {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.first() == Some(&"deb") && words.get(2) == Some(&"bookworm") {
                return words[1].to_string();
            }
        }
        // deb822 style: stanzas separated by blank lines.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let suites = field("Suites:").unwrap_or_default();
            if field("Types:").is_some_and(|t| t.split_whitespace().any(|w| w == "deb"))
                && suites.split_whitespace().any(|s| s == "bookworm")
            {
                if let Some(uri) =
                    field("URIs:").and_then(|u| u.split_whitespace().next().map(String::from))
                {
                    return uri;
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Tars the rootfs (numeric owners; without /dev, /proc, /sys contents, downloaded .debs
/// and apt lists, as Debian's images leave them out) and writes it as a one-layer image.
fn write_layout(rootfs: &Path, dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dir");
    let tar_path = dir.join("layer.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args([
            "--numeric-owner",
            "--xattrs",
            "--sort=name",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "--exclude=./var/cache/apt/archives/*.deb",
            "--exclude=./var/lib/apt/lists/*_*",
            "--exclude=./.rbuild-fixture-done",
            "-cf",
        ])
        .arg(&tar_path)
        .arg(".")
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar of the rootfs:\n{}", show(&out));
    let tar = std::fs::read(&tar_path).expect("read layer tar");
    std::fs::remove_file(&tar_path).expect("remove layer tar");
    let put = |data: &[u8]| -> (String, usize) {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data).expect("write blob");
        (format!("sha256:{hex}"), data.len())
    };
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let (layer_digest, layer_size) = put(&gz.finish().expect("gzip"));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "debootstrap --variant=minbase bookworm (test fixture)"}]
    });
    let config = serde_json::to_vec(&config).expect("config json");
    let (config_digest, config_size) = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}]
    }))
    .expect("manifest json");
    let (manifest_digest, manifest_size) = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "bookworm"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}
