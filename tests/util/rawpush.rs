//! Hand-made manifests and blobs put into a `registry:2` over plain HTTP/1.1 with std's
//! `TcpStream` (no client library), for shapes skopeo will not write: indexes with
//! attestation entries, OCI manifests with Docker layer types, foreign layers.

use std::io::{Read, Write};
use std::net::TcpStream;

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// One HTTP/1.1 request to `addr` (`host:port`), `Connection: close`; returns the status,
/// the headers (lower-case names) and the body.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect to the registry");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write request");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap_or(b.len());
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
}

/// Uploads `data` as a blob of `repo` (POST, then a monolithic PUT); returns its digest.
pub fn put_blob(addr: &str, repo: &str, data: &[u8]) -> String {
    let d = digest(data);
    let (status, headers, body) = request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    );
    assert_eq!(
        status,
        202,
        "POST upload: {}",
        String::from_utf8_lossy(&body)
    );
    let location = headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .expect("Location");
    let path = match location.find("/v2/") {
        Some(i) => location[i..].to_string(),
        None => location,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _, body) = request(
        addr,
        "PUT",
        &format!("{path}{sep}digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(status, 201, "PUT blob: {}", String::from_utf8_lossy(&body));
    d
}

/// Puts `manifest` (bytes as given) as `repo:reference` with `media_type`; returns its
/// digest. Panics with the registry's answer unless it is accepted.
pub fn put_manifest(
    addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &[u8],
) -> String {
    let (status, _, body) = request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        manifest,
    );
    assert_eq!(
        status,
        201,
        "PUT manifest {repo}:{reference}: {}",
        String::from_utf8_lossy(&body)
    );
    digest(manifest)
}

/// GETs a blob of `repo`.
pub fn get_blob(addr: &str, repo: &str, digest: &str) -> Vec<u8> {
    let (status, headers, body) =
        request(addr, "GET", &format!("/v2/{repo}/blobs/{digest}"), &[], b"");
    if status == 307 || status == 302 {
        let location = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone())
            .expect("Location");
        panic!("blob redirected to {location}");
    }
    assert_eq!(status, 200, "GET blob {digest}");
    body
}
