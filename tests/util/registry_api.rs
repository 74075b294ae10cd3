//! A registry's distribution API as the tests read and write it behind rbuild's back: raw
//! manifests and blobs, existence checks by HEAD, and hand-made uploads (curl, skopeo).

use crate::util::{show, tool, TestDir};

/// The raw manifest of `reference` in the registry.
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
    serde_json::from_str(&raw).unwrap()
}

/// A blob of `repo` in `registry`, by plain HTTP.
pub fn registry_blob(registry: &str, repo: &str, digest: &str) -> Vec<u8> {
    let out = std::process::Command::new("curl")
        .args([
            "-sSf",
            &format!("http://{registry}/v2/{repo}/blobs/{digest}"),
        ])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", show(&out));
    out.stdout
}

/// Uploads `bytes` as a blob of `repo` with curl (monolithic upload); returns its digest.
pub fn put_blob(registry: &str, repo: &str, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    let out = std::process::Command::new("curl")
        .args(["-sSf", "-X", "POST", "-D", "-", "-o", "/dev/null"])
        .arg(format!("http://{registry}/v2/{repo}/blobs/uploads/"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", show(&out));
    let headers = String::from_utf8_lossy(&out.stdout).into_owned();
    let location = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or_else(|| l.strip_prefix("location: "))
        })
        .unwrap()
        .trim()
        .to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{registry}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let file = TestDir::new("blob");
    let path = file.write("blob", bytes);
    let out = std::process::Command::new("curl")
        .args([
            "-sSf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", path.display()))
        .arg(format!("{url}{sep}digest={digest}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", show(&out));
    digest
}

/// PUTs an OCI image manifest under `repo:tag`.
pub fn put_manifest(registry: &str, repo: &str, tag: &str, manifest: &serde_json::Value) {
    put_manifest_as(
        registry,
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        manifest,
    );
}

/// PUTs `manifest` under `repo:reference` with `media_type` as its content type.
pub fn put_manifest_as(
    registry: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &serde_json::Value,
) {
    let out = std::process::Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H"])
        .arg(format!("Content-Type: {media_type}"))
        .arg("--data-binary")
        .arg(manifest.to_string())
        .arg(format!("http://{registry}/v2/{repo}/manifests/{reference}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", show(&out));
}

/// The manifest `repo:tag` names, as the registry serves it, and its digest; `None` when
/// the tag does not exist.
pub fn manifest_of(registry: &str, repo: &str, tag: &str) -> Option<(serde_json::Value, String)> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-H"])
        .arg(
            "Accept: application/vnd.oci.image.manifest.v1+json, \
             application/vnd.oci.image.index.v1+json",
        )
        .arg(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    match code {
        "404" => None,
        "200" => {
            use sha2::Digest as _;
            let digest = format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(body.as_bytes()))
            );
            Some((serde_json::from_str(body).expect("manifest JSON"), digest))
        }
        other => panic!("GET manifest {repo}:{tag}: HTTP {other}: {body}"),
    }
}

/// The size the registry gives for `digest` in `repo` (HEAD), `None` when it has no such
/// blob.
pub fn blob_size(registry: &str, repo: &str, digest: &str) -> Option<u64> {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-I",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %header{content-length}",
        ])
        .arg(format!("http://{registry}/v2/{repo}/blobs/{digest}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, len) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    match code {
        "404" => None,
        "200" => Some(len.trim().parse().expect("content-length")),
        other => panic!("HEAD blob {digest} in {repo}: HTTP {other}"),
    }
}
