//! A small bearer-token issuer for `registry:2`'s `auth: token:` mode: a std-thread HTTP
//! server that checks basic credentials and signs RS256 JWTs with `openssl dgst`, carrying
//! an `x5c` certificate the registry trusts through `rootcertbundle`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;

use super::tool;

/// A running token issuer; it lives until the test process exits.
pub struct TokenIssuer {
    /// `http://127.0.0.1:PORT/service/token` (Harbor's path).
    pub realm: String,
    /// The certificate the registry must trust (PEM).
    pub cert: PathBuf,
    scopes: Arc<Mutex<Vec<String>>>,
}

/// The `service` and `issuer` names the registry is configured with.
pub const SERVICE: &str = "rbuild-test-registry";
const ISSUER: &str = "rbuild-test-issuer";

impl TokenIssuer {
    /// Starts an issuer that grants every requested scope to `user`/`password` and refuses
    /// anyone else (anonymous requests included). Keys are made in `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenIssuer {
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        tool(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=rbuild test token issuer",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
        );
        let der = Command::new("openssl")
            .args(["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"])
            .output()
            .expect("openssl x509")
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").expect("issuer bind");
        let realm = format!("http://{}/service/token", listener.local_addr().unwrap());
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let seen = scopes.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut authorization = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = Some(v.trim().to_string());
                        }
                    }
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("");
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let mut requested = Vec::new();
                for pair in query.split('&') {
                    if let Some(v) = pair.strip_prefix("scope=") {
                        requested.push(percent_decode(v));
                    }
                }
                seen.lock().unwrap().extend(requested.iter().cloned());
                let response = if authorization.as_deref() == Some(expected.as_str()) {
                    let token = sign(&key, &x5c, &requested);
                    let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = stream.write_all(response.as_bytes());
            }
        });
        TokenIssuer {
            realm,
            cert,
            scopes,
        }
    }

    /// The registry's `auth:` block for this issuer.
    pub fn registry_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.cert.display()
        )
    }

    /// Every scope clients asked for so far.
    pub fn requested_scopes(&self) -> Vec<String> {
        self.scopes.lock().unwrap().clone()
    }
}

/// An RS256 JWT granting `scopes` (`repository:name:actions`).
fn sign(key: &Path, x5c: &str, scopes: &[String]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions.split(',').collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "tester", "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", rand::random::<u64>()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(&header).unwrap()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign", key.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("openssl dgst");
    assert!(out.status.success(), "openssl dgst failed");
    format!("{input}.{}", b64(&out.stdout))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(h, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
