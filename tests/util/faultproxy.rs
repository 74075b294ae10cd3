//! A fault-injecting HTTP proxy on 127.0.0.1 in front of a real registry (std threads, one
//! request per connection): drops, stalls, 5xx answers, truncated and corrupted blobs, and
//! manifests that lie about sizes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// What the proxy does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything faithfully.
    None,
    /// Cut a blob download after this many body bytes.
    DropAfter(usize),
    /// Send this many body bytes of a blob, then go silent for the duration, then cut.
    Stall(usize, Duration),
    /// Answer every request (not only blobs) with this status and no body.
    Status(u16),
    /// Answer blob upload PATCH requests (after reading their body) with this status.
    StatusOnPatch(u16),
    /// Send a blob's headers with the full Content-Length but only half the body, then close.
    Truncate,
    /// Flip bytes in a blob body (same length): the digest no longer matches.
    Corrupt,
    /// Rewrite manifests so every layer's size is this factor (×1/1000) of the truth, with a
    /// matching `Docker-Content-Digest`, so only the sizes lie.
    LieSizes(u32),
    /// Read a request of this kind, then hang up without forwarding it.
    CutRequest(Target),
    /// Forward a request of this kind, then hang up without answering (it took effect).
    CutResponse(Target),
    /// Hold a request of this kind this long, then forward it and answer.
    StallRequest(Target, Duration),
    /// Flip bytes in the body of a request of this kind, then forward it.
    CorruptRequest(Target),
    /// Flip bytes in a manifest response (headers kept: the digest no longer matches).
    CorruptManifest,
}

/// The requests a request-side fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Blob uploads: POST, PATCH and PUT under `/blobs/uploads/`.
    BlobUpload,
    /// Manifest PUTs.
    ManifestPut,
}

impl Target {
    fn matches(self, method: &str, path: &str) -> bool {
        match self {
            Target::BlobUpload => path.contains("/blobs/uploads/"),
            Target::ManifestPut => method == "PUT" && path.contains("/manifests/"),
        }
    }
}

/// Flips 64 bytes in the middle of the data of `body` (inside the first chunk when it is
/// chunked, so that the framing stays intact).
fn corrupt_body(body: &mut [u8], chunked: bool) {
    let (start, len) = if chunked {
        let Some(eol) = find(body, b"\r\n") else {
            return;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&body[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        (eol + 2, size.min(body.len().saturating_sub(eol + 2)))
    } else {
        (0, body.len())
    };
    let mid = start + len / 2;
    let end = (mid + 64).min(start + len);
    for b in body[mid..end].iter_mut() {
        *b ^= 0x5a;
    }
}

/// A running proxy; it lives until the test process exits.
pub struct FaultProxy {
    /// `127.0.0.1:PORT` to use in references instead of the upstream.
    pub addr: String,
    state: Arc<State>,
}

struct State {
    upstream: String,
    fault: Fault,
    /// Faults to inject in all; after that the proxy is faithful.
    budget: usize,
    injected: AtomicUsize,
    requests: AtomicUsize,
}

impl FaultProxy {
    /// Proxies to `upstream`, injecting `fault` at most `times` times (`usize::MAX`: always).
    pub fn start(upstream: &str, fault: Fault, times: usize) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fault proxy bind");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            fault,
            budget: times,
            injected: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
        });
        let s = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &s);
                });
            }
        });
        FaultProxy { addr, state }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }

    /// How many requests reached the proxy.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

impl State {
    /// Claims one fault from the budget.
    fn claim(&self) -> bool {
        self.injected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.budget).then_some(n + 1)
            })
            .is_ok()
    }
}

struct Head {
    raw: Vec<u8>,
    first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads up to the blank line; `buf` keeps bytes read past it.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Head>> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let raw: Vec<u8> = buf.drain(..end + 4).collect();
            let text = String::from_utf8_lossy(&raw).into_owned();
            let mut lines = text.split("\r\n");
            let first_line = lines.next().unwrap_or("").to_string();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            return Ok(Some(Head {
                raw,
                first_line,
                headers,
            }));
        }
        if buf.len() > 1 << 20 {
            return Ok(None);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS ClientHello (the client tries https first): not HTTP, hang up at once.
        if buf[0] == 0x16 {
            return Ok(None);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads the request body (Content-Length or chunked, kept encoded as it came).
fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, head: &Head) -> std::io::Result<Vec<u8>> {
    let mut chunk = [0u8; 65536];
    let mut fill = |buf: &mut Vec<u8>| -> std::io::Result<bool> {
        let n = s.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    };
    if let Some(len) = head
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while buf.len() < len {
            if !fill(buf)? {
                break;
            }
        }
        let take = len.min(buf.len());
        return Ok(buf.drain(..take).collect());
    }
    if head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let mut pos = 0;
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                if !fill(buf)? {
                    return Ok(std::mem::take(buf));
                }
            };
            let size_text = String::from_utf8_lossy(&buf[pos..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    if let Some(i) = find(&buf[line_end..], b"\r\n\r\n") {
                        let end = line_end + i + 4;
                        return Ok(buf.drain(..end).collect());
                    }
                    if !fill(buf)? {
                        return Ok(std::mem::take(buf));
                    }
                }
            }
            let next = line_end + 2 + size + 2;
            while buf.len() < next {
                if !fill(buf)? {
                    return Ok(std::mem::take(buf));
                }
            }
            pos = next;
        }
    }
    Ok(Vec::new())
}

/// The head with `Connection: close` in place of any connection header.
fn closing(head: &Head) -> Vec<u8> {
    let mut out = format!("{}\r\n", head.first_line);
    for (k, v) in &head.headers {
        if !k.eq_ignore_ascii_case("connection") {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn serve(mut client: TcpStream, state: &State) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let Some(req) = read_head(&mut client, &mut buf)? else {
        return Ok(());
    };
    let mut body = read_body(&mut client, &mut buf, &req)?;
    state.requests.fetch_add(1, Ordering::SeqCst);
    let mut parts = req.first_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut cut_response = false;
    match state.fault {
        Fault::CutRequest(t) if t.matches(&method, &path) && state.claim() => {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Fault::CutResponse(t) if t.matches(&method, &path) && state.claim() => {
            cut_response = true;
        }
        Fault::StallRequest(t, hold) if t.matches(&method, &path) && state.claim() => {
            std::thread::sleep(hold);
        }
        Fault::CorruptRequest(t)
            if t.matches(&method, &path) && !body.is_empty() && state.claim() =>
        {
            let chunked = req
                .header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
            corrupt_body(&mut body, chunked);
        }
        _ => {}
    }
    let is_blob_get = method == "GET" && path.contains("/blobs/sha256:");
    let is_manifest_get = method == "GET" && path.contains("/manifests/");

    let status = match state.fault {
        Fault::Status(code) => Some(code),
        Fault::StatusOnPatch(code) if method == "PATCH" => Some(code),
        _ => None,
    };
    if let Some(code) = status {
        if state.claim() {
            let reason = if code == 503 {
                "Service Unavailable"
            } else {
                "Internal Server Error"
            };
            let msg = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            client.write_all(msg.as_bytes())?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }

    let mut up = TcpStream::connect(&state.upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.write_all(&closing(&req))?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    if cut_response {
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    let Some(split) = find(&resp, b"\r\n\r\n") else {
        client.write_all(&resp)?;
        return Ok(());
    };
    let resp_head_raw = resp[..split + 4].to_vec();
    let mut resp_body = resp[split + 4..].to_vec();
    let status_ok =
        resp_head_raw.starts_with(b"HTTP/1.1 200") || resp_head_raw.starts_with(b"HTTP/1.1 206");

    match state.fault {
        Fault::DropAfter(n) if is_blob_get && status_ok && resp_body.len() > n && state.claim() => {
            client.write_all(&resp_head_raw)?;
            client.write_all(&resp_body[..n])?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Fault::Stall(n, hold)
            if is_blob_get && status_ok && resp_body.len() > n && state.claim() =>
        {
            client.write_all(&resp_head_raw)?;
            client.write_all(&resp_body[..n])?;
            client.flush()?;
            std::thread::sleep(hold);
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Fault::Truncate if is_blob_get && status_ok && resp_body.len() > 1 && state.claim() => {
            client.write_all(&resp_head_raw)?;
            client.write_all(&resp_body[..resp_body.len() / 2])?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Fault::Corrupt if is_blob_get && status_ok && !resp_body.is_empty() && state.claim() => {
            let mid = resp_body.len() / 2;
            let end = (mid + 64).min(resp_body.len());
            for b in resp_body[mid..end].iter_mut() {
                *b ^= 0x5a;
            }
        }
        Fault::CorruptManifest
            if is_manifest_get && status_ok && resp_body.len() > 2 && state.claim() =>
        {
            corrupt_body(&mut resp_body, false);
        }
        Fault::LieSizes(permille) if is_manifest_get && status_ok && state.claim() => {
            if let Ok(mut m) = serde_json::from_slice::<serde_json::Value>(&resp_body) {
                if let Some(layers) = m["layers"].as_array_mut() {
                    for l in layers {
                        let size = l["size"].as_u64().unwrap_or(0);
                        l["size"] = serde_json::json!(size * u64::from(permille) / 1000);
                    }
                }
                resp_body = serde_json::to_vec(&m).expect("manifest json");
                let digest = format!("sha256:{}", hex::encode(Sha256::digest(&resp_body)));
                let head = rewrite_headers(&resp_head_raw, resp_body.len(), Some(&digest));
                client.write_all(&head)?;
                client.write_all(&resp_body)?;
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        _ => {}
    }
    client.write_all(&resp_head_raw)?;
    client.write_all(&resp_body)?;
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

/// The response head with a new Content-Length (and Docker-Content-Digest when given).
fn rewrite_headers(raw: &[u8], len: usize, digest: Option<&str>) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("content-length:") {
            out.push_str(&format!("Content-Length: {len}\r\n"));
        } else if lower.starts_with("docker-content-digest:") {
            if let Some(d) = digest {
                out.push_str(&format!("Docker-Content-Digest: {d}\r\n"));
            }
        } else if lower.starts_with("etag:") {
            continue;
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}
