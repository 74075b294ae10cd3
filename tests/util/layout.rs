//! OCI image layouts written byte by byte for tests (big, hostile or odd layers), pushed to a
//! registry with skopeo, never with rbuild.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::tool;

/// A tar of regular files `(path, contents)`, mode 0644, owned by root.
pub fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_path(path).expect("path");
        h.set_cksum();
        b.append(&h, &data[..]).expect("append");
    }
    b.into_inner().expect("tar")
}

/// Writes an image whose layers hold `layers` (regular files) to the OCI layout `dir`
/// under tag `latest`.
pub fn write_image(dir: &Path, layers: &[Vec<(String, Vec<u8>)>]) {
    let tars: Vec<Vec<u8>> = layers.iter().map(|l| tar_of(l)).collect();
    write_image_tars(dir, &tars);
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes an image whose layers are the given uncompressed tars (gzip'd here) to the OCI
/// layout `dir` under tag `latest`. The tars are used as they are: they may be hostile.
pub fn write_image_tars(dir: &Path, tars: &[Vec<u8>]) {
    let _ = std::fs::remove_dir_all(dir);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dir");
    let put = |data: &[u8]| -> String {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data).expect("write blob");
        format!("sha256:{hex}")
    };
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for tar in tars {
        diff_ids.push(format!("sha256:{}", sha256_hex(tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let digest = put(&gz);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": gz.len()
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": []
    });
    let config = serde_json::to_vec(&config).expect("config json");
    let config_digest = put(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Pushes the layout's `latest` to `reference` (`host:port/repo:tag`, plain http).
pub fn push(layout: &Path, reference: &str) {
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
}
