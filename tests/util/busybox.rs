//! A busybox base image made offline from Debian's `busybox-static`: one gzip layer with
//! `/bin/busybox`, a symlink per applet, `/etc/passwd`, `/etc/group` and `/tmp`, written as
//! an OCI layout and pushed to the shared registry with skopeo (not with rbuild).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::{tool, Registry};

/// The image: where it is in the registry and on disk.
pub struct Busybox {
    /// `127.0.0.1:PORT/library/busybox:latest` in the shared registry.
    pub reference: String,
    /// The OCI layout it was pushed from (tag `latest`).
    pub layout: PathBuf,
    /// The layer's uncompressed digest.
    pub diff_id: String,
}

/// The busybox image, built and pushed once per test process.
pub fn busybox() -> &'static Busybox {
    static IMAGE: OnceLock<Busybox> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let registry = Registry::shared();
        let layout = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("busybox-oci-{}", std::process::id()));
        let diff_id = write_layout(&layout);
        let reference = format!("{}/library/busybox:latest", registry.addr);
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                &format!("oci:{}:latest", layout.display()),
                &format!("docker://{reference}"),
            ],
        );
        Busybox {
            reference,
            layout,
            diff_id,
        }
    })
}

/// The same busybox image pushed in Docker v2s2 format (`skopeo copy --format v2s2`: a
/// Docker manifest, config and layer media types over the same blobs), once per test
/// process, as `127.0.0.1:PORT/library/busybox-v2s2:latest`.
pub fn busybox_v2s2() -> &'static Busybox {
    static IMAGE: OnceLock<Busybox> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let oci = busybox();
        let reference = format!("{}/library/busybox-v2s2:latest", Registry::shared().addr);
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--format",
                "v2s2",
                "--dest-tls-verify=false",
                &format!("oci:{}:latest", oci.layout.display()),
                &format!("docker://{reference}"),
            ],
        );
        Busybox {
            reference,
            layout: oci.layout.clone(),
            diff_id: oci.diff_id.clone(),
        }
    })
}

/// The busybox base in one format: `Oci` is [`busybox`], `Docker` is [`busybox_v2s2`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseFormat {
    /// Pushed as an OCI image.
    Oci,
    /// Pushed as Docker v2s2.
    Docker,
}

impl BaseFormat {
    /// Both formats, OCI first.
    pub const BOTH: [BaseFormat; 2] = [BaseFormat::Oci, BaseFormat::Docker];

    /// The busybox image pushed in this format.
    pub fn busybox(self) -> &'static Busybox {
        match self {
            BaseFormat::Oci => busybox(),
            BaseFormat::Docker => busybox_v2s2(),
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes the layer, config and manifest as an OCI layout at `dir`; returns the diffID.
fn write_layout(dir: &Path) -> String {
    let _ = std::fs::remove_dir_all(dir);
    let busybox = std::fs::read("/bin/busybox")
        .expect("read /bin/busybox: install the Debian package busybox-static");
    let (manifest, diff_id) = write_image(dir, &busybox, "amd64");
    let entry = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest.0, "size": manifest.1,
        "annotations": {"org.opencontainers.image.ref.name": "latest"}
    });
    write_index_json(dir, entry);
    diff_id
}

/// The busybox image for linux/amd64 and linux/arm64 (the arm64 binary from Debian's
/// `busybox-static:arm64`), pushed once per test process as one OCI index, as
/// `127.0.0.1:PORT/library/busybox-multi:latest`.
pub fn busybox_multi() -> &'static Busybox {
    static IMAGE: OnceLock<Busybox> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let layout = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("busybox-multi-oci-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&layout);
        let amd64 = std::fs::read("/bin/busybox")
            .expect("read /bin/busybox: install the Debian package busybox-static");
        let (amd_manifest, diff_id) = write_image(&layout, &amd64, "amd64");
        let (arm_manifest, _) = write_image(&layout, &arm64_busybox(), "arm64");
        let entry = |(digest, size): (String, usize), arch: &str| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": size,
                "platform": {"os": "linux", "architecture": arch}
            })
        };
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry(amd_manifest, "amd64"), entry(arm_manifest, "arm64")]
        });
        let index = serde_json::to_vec(&index).expect("index json");
        let hex = sha256_hex(&index);
        std::fs::write(layout.join("blobs/sha256").join(&hex), &index).expect("write index");
        write_index_json(
            &layout,
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{hex}"), "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": "latest"}
            }),
        );
        let reference = format!("{}/library/busybox-multi:latest", Registry::shared().addr);
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--all",
                "--dest-tls-verify=false",
                &format!("oci:{}:latest", layout.display()),
                &format!("docker://{reference}"),
            ],
        );
        Busybox {
            reference,
            layout,
            diff_id,
        }
    })
}

/// The aarch64 `/bin/busybox` of Debian's `busybox-static:arm64`, downloaded once into
/// `target/fixtures/` (`scripts/test` adds the arm64 architecture to dpkg).
pub fn arm64_busybox() -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("fixtures/busybox-arm64");
    let binary = dir.join("root/bin/busybox");
    if !binary.exists() {
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let download = Command::new("apt-get")
            .args(["download", "busybox-static:arm64"])
            .current_dir(&dir)
            .output()
            .expect("run apt-get");
        assert!(
            download.status.success(),
            "apt-get download busybox-static:arm64 failed (dpkg --add-architecture arm64; \
             apt-get update):\n{}",
            super::show(&download)
        );
        let deb = std::fs::read_dir(&dir)
            .expect("fixture dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("the downloaded .deb");
        tool(
            "dpkg-deb",
            &[
                "-x",
                &deb.to_string_lossy(),
                &dir.join("root").to_string_lossy(),
            ],
        );
    }
    std::fs::read(&binary).expect("read the arm64 busybox")
}

fn write_index_json(dir: &Path, entry: serde_json::Value) {
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Writes one busybox image's layer, config and manifest into the layout's blobs; returns
/// the manifest's (digest, size) and the layer's diffID.
fn write_image(dir: &Path, busybox: &[u8], arch: &str) -> ((String, usize), String) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dir");
    let put = |data: &[u8]| -> String {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data).expect("write blob");
        format!("sha256:{hex}")
    };

    let tar = layer_tar(busybox);
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let layer_digest = put(&layer);

    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "busybox-static from the test fixture"}]
    });
    let config = serde_json::to_vec(&config).expect("config json");
    let config_digest = put(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}]
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    let manifest_digest = put(&manifest);
    ((manifest_digest, manifest.len()), diff_id)
}

/// The layer of `busybox` (either architecture's binary: the applet list is the amd64
/// one's, the same Debian version).
fn layer_tar(busybox: &[u8]) -> Vec<u8> {
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
        .map(String::from)
        .collect();
    applets.sort();

    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(target) = link {
            h.set_link_name(target).expect("link name");
        }
        h.set_path(path).expect("path");
        h.set_cksum();
        b.append(&h, data).expect("append");
    };
    for d in ["bin", "etc", "root", "var", "var/www", "home"] {
        add(
            &format!("{d}/"),
            tar::EntryType::Directory,
            0o755,
            b"",
            None,
        );
    }
    add("tmp/", tar::EntryType::Directory, 0o1777, b"", None);
    add("bin/busybox", tar::EntryType::Regular, 0o755, busybox, None);
    for a in &applets {
        add(
            &format!("bin/{a}"),
            tar::EntryType::Symlink,
            0o777,
            b"",
            Some("busybox"),
        );
    }
    add(
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        None,
    );
    add(
        "etc/group",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n",
        None,
    );
    b.into_inner().expect("tar")
}
