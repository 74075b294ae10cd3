//! One registry endpoint: scheme and TLS choice, the `/v2/` ping, authenticated requests
//! (re-auth on 401) and retries with backoff on connection errors, 5xx and 429.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rbuild_store::Digest;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::OnceCell;

use crate::auth::{basic_header, fetch_token, Challenge, Scopes, TokenCache};
use crate::body::read_limited;
use crate::progress::Progress;
use crate::secret::Credential;
use crate::{Error, Result};

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub enum CredentialSource {
    /// docker's config.json (auths, credsStore, credHelpers), then podman's auth.json.
    #[default]
    DockerConfig,
    /// This credential for every registry (used by `login` to verify before saving).
    Fixed(Credential),
    /// Never authenticate.
    Anonymous,
}

/// How long a registry may stay silent by default (see [`ClientOptions::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How the client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `None`: https with verification, except loopback registries which are tried with
    /// https (unverified) then plain http, as docker does. `Some(true)`: always https,
    /// verified. `Some(false)`: https without verification, falling back to plain http.
    pub tls_verify: Option<bool>,
    /// Directories holding `<host:port>/*.crt` CA files (docker's `certs.d` layout).
    pub cert_dirs: Vec<PathBuf>,
    /// Where credentials come from.
    pub credentials: CredentialSource,
    /// Blobs transferred at once per pull or push.
    pub parallel: usize,
    /// Attempts per request or blob upload before giving up.
    pub attempts: u32,
    /// First retry delay; doubles per attempt.
    pub backoff: Duration,
    /// How blobs are uploaded.
    pub upload: UploadMode,
    /// How long the registry may stay silent: to accept a connection, to answer a request,
    /// or between two reads of a body. A request silent for longer fails (and is retried).
    pub timeout: Duration,
    /// Told about every retried request, so the CLI can log it.
    pub retry_log: RetryLog,
}

/// One retried request or transfer, as [`RetryLog`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    /// What is tried again (`GET <url>`, `download of <digest>`).
    pub what: &'a str,
    /// The attempt about to start, from 2.
    pub attempt: u32,
    /// The attempts allowed.
    pub attempts: u32,
    /// The delay before it.
    pub delay: Duration,
    /// Why the previous attempt failed.
    pub cause: &'a str,
}

/// Where retried requests are reported, so the CLI can log them.
#[derive(Clone, Default)]
pub struct RetryLog(Option<Arc<RetryFn>>);

type RetryFn = dyn Fn(&Retry<'_>) + Send + Sync;

impl RetryLog {
    /// Reports each retry to `f`.
    pub fn new(f: impl Fn(&Retry<'_>) + Send + Sync + 'static) -> RetryLog {
        RetryLog(Some(Arc::new(f)))
    }

    fn report(&self, retry: &Retry<'_>) {
        if let Some(f) = &self.0 {
            f(retry);
        }
    }
}

impl std::fmt::Debug for RetryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "RetryLog(..)"
        } else {
            "RetryLog(none)"
        })
    }
}

/// How blobs are uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// One PUT per blob; PATCH chunks of `chunk_size` when the registry refuses that.
    Monolithic {
        /// Chunk size for the fallback.
        chunk_size: u64,
    },
    /// Always PATCH chunks of `chunk_size` (registries behind proxies with a body limit).
    Chunked {
        /// Bytes per PATCH.
        chunk_size: u64,
    },
}

impl Default for UploadMode {
    fn default() -> Self {
        UploadMode::Monolithic {
            chunk_size: 16 << 20,
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: None,
            cert_dirs: default_cert_dirs(),
            credentials: CredentialSource::DockerConfig,
            parallel: 3,
            attempts: 5,
            backoff: Duration::from_millis(200),
            upload: UploadMode::default(),
            timeout: DEFAULT_TIMEOUT,
            retry_log: RetryLog::default(),
        }
    }
}

/// `/etc/docker/certs.d` and `$XDG_CONFIG_HOME/rbuild/certs.d` (`~/.config/rbuild/certs.d`).
pub fn default_cert_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/etc/docker/certs.d")];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(c) = config {
        dirs.push(c.join("rbuild/certs.d"));
    }
    dirs
}

/// True for `localhost`, 127.0.0.0/8 and ::1 (with or without a port).
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match registry.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
            _ => registry,
        }
    };
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// A request body that can be built again for a retry.
#[derive(Clone)]
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of `path` from `offset`, streamed, reporting progress for `digest`.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
        progress: Option<(Arc<dyn Progress>, Digest)>,
    },
}

/// A request that can be sent again.
#[derive(Clone)]
pub(crate) struct Req {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Body,
}

impl Req {
    pub(crate) fn new(method: Method, url: impl Into<String>) -> Req {
        Req {
            method,
            url: url.into(),
            headers: HeaderMap::new(),
            body: Body::Empty,
        }
    }

    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }

    pub(crate) fn body(mut self, body: Body) -> Req {
        self.body = body;
        self
    }
}

struct AuthState {
    challenge: Option<Challenge>,
    tokens: TokenCache,
}

/// One registry host.
pub(crate) struct Endpoint {
    /// The registry as written in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    host: String,
    http: reqwest::Client,
    /// Plain http allowed when https does not connect.
    http_fallback: bool,
    base: OnceCell<String>,
    credential: OnceCell<Option<Credential>>,
    source: CredentialSource,
    auth: Mutex<AuthState>,
    attempts: u32,
    backoff: Duration,
    upload: UploadMode,
    retry_log: RetryLog,
}

impl Endpoint {
    /// Sets up the HTTP client for `registry` (TLS roots from certs.d, verification mode).
    pub(crate) fn new(registry: &str, options: &ClientOptions) -> Result<Endpoint> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.timeout.min(Duration::from_secs(30)))
            .read_timeout(options.timeout);
        let mut have_ca = false;
        for dir in &options.cert_dirs {
            let dir = dir.join(registry);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "crt"))
                .collect();
            files.sort();
            for path in files {
                let pem = std::fs::read(&path).map_err(Error::io(&path))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                    Error::Certificate {
                        path: path.clone(),
                        source,
                    }
                })?;
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                    have_ca = true;
                }
            }
        }
        let insecure = match options.tls_verify {
            Some(v) => !v,
            // A loopback registry with no CA configured is treated as docker treats its
            // default insecure registries.
            None => !have_ca && is_loopback(registry),
        };
        if insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|source| Error::ClientSetup {
            registry: registry.to_string(),
            source,
        })?;
        Ok(Endpoint {
            registry: registry.to_string(),
            host: crate::reference::api_host(registry).to_string(),
            http,
            http_fallback: insecure,
            base: OnceCell::new(),
            credential: OnceCell::new(),
            source: options.credentials.clone(),
            auth: Mutex::new(AuthState {
                challenge: None,
                tokens: TokenCache::default(),
            }),
            attempts: options.attempts.max(1),
            backoff: options.backoff,
            upload: options.upload,
            retry_log: options.retry_log.clone(),
        })
    }

    /// `scheme://host` after the first successful ping.
    pub(crate) async fn base(&self) -> Result<&str> {
        self.base
            .get_or_try_init(|| self.ping())
            .await
            .map(String::as_str)
    }

    /// `base` + `path` (`/v2/...`).
    pub(crate) async fn url(&self, path: &str) -> Result<String> {
        Ok(format!("{}{path}", self.base().await?))
    }

    /// GET /v2/ to pick the scheme and learn the auth challenge.
    async fn ping(&self) -> Result<String> {
        let https = format!("https://{}", self.host);
        match self.ping_at(&https).await {
            Ok(()) => Ok(https),
            Err(Error::Connection { .. }) if self.http_fallback => {
                let http = format!("http://{}", self.host);
                self.ping_at(&http).await?;
                Ok(http)
            }
            Err(e) => Err(e),
        }
    }

    async fn ping_at(&self, base: &str) -> Result<()> {
        let url = format!("{base}/v2/");
        let mut last = None;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                if let Some(e) = &last {
                    self.log_retry(&format!("GET {url}"), attempt + 1, e);
                }
                tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
            }
            match self.http.get(&url).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        return Ok(());
                    }
                    if status == StatusCode::UNAUTHORIZED {
                        let challenge = resp
                            .headers()
                            .get(reqwest::header::WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .map(|h| Challenge::parse(&self.registry, h))
                            .transpose()?;
                        self.auth_state().challenge = challenge;
                        return Ok(());
                    }
                    let e = status_error(&Method::GET, &url, resp).await;
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    last = Some(e);
                }
                Err(source) => {
                    // A TLS handshake failure will not heal with retries.
                    let e = Error::Connection {
                        method: "GET".into(),
                        url: url.clone(),
                        source,
                    };
                    if base.starts_with("https") && self.http_fallback {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(Error::Status {
            method: "GET".into(),
            url,
            status: 0,
            detail: None,
        }))
    }

    fn auth_state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding this lock leaves only a token cache behind: keep going.
        self.auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn credential(&self) -> Result<Option<&Credential>> {
        let c = self
            .credential
            .get_or_try_init(|| async {
                match &self.source {
                    CredentialSource::Anonymous => Ok(None),
                    CredentialSource::Fixed(c) => Ok(Some(c.clone())),
                    CredentialSource::DockerConfig => {
                        let registry = self.registry.clone();
                        tokio::task::spawn_blocking(move || crate::credentials::lookup(&registry))
                            .await
                            .map_err(Error::Task)?
                    }
                }
            })
            .await?;
        Ok(c.as_ref())
    }

    /// The `Authorization` value for `scopes`, fetching a token if needed.
    async fn authorization(&self, scopes: &Scopes) -> Result<Option<String>> {
        let challenge = self.auth_state().challenge.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(match self.credential().await? {
                Some(Credential::Basic { username, password }) => {
                    Some(basic_header(username, password))
                }
                _ => None,
            }),
            Some(Challenge::Bearer { realm, service }) => {
                if let Some(t) = self.auth_state().tokens.get(scopes) {
                    return Ok(Some(format!("Bearer {}", t.expose())));
                }
                let credential = self.credential().await?;
                let (token, lifetime) = fetch_token(
                    &self.http,
                    &self.registry,
                    &realm,
                    service.as_deref(),
                    scopes,
                    credential,
                )
                .await?;
                let header = format!("Bearer {}", token.expose());
                self.auth_state()
                    .tokens
                    .put(scopes.clone(), token, lifetime);
                Ok(Some(header))
            }
        }
    }

    /// Checks that the configured credential is accepted (`rbuild login`).
    pub(crate) async fn verify_login(&self) -> Result<()> {
        self.base().await?;
        let url = self.url("/v2/").await?;
        let resp = self
            .send(&Req::new(Method::GET, url.clone()), &Scopes::none())
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error(&Method::GET, &url, resp).await)
        }
    }

    /// Sends `req` once with auth; on 401 re-reads the challenge, drops the cached token
    /// and tries once more. Any other status is returned to the caller.
    pub(crate) async fn send(&self, req: &Req, scopes: &Scopes) -> Result<Response> {
        self.base().await?;
        for round in 0..2 {
            let auth = self.authorization(scopes).await?;
            let mut builder = self
                .http
                .request(req.method.clone(), &req.url)
                .headers(req.headers.clone());
            if let Some(a) = auth {
                builder = builder.header(AUTHORIZATION, a);
            }
            builder = match &req.body {
                Body::Empty => builder,
                Body::Bytes(b) => builder.body(b.clone()),
                Body::File {
                    path,
                    offset,
                    len,
                    progress,
                } => builder
                    .header(CONTENT_LENGTH, *len)
                    .body(file_body(path.clone(), *offset, *len, progress.clone()).await?),
            };
            let resp = builder.send().await.map_err(|source| Error::Connection {
                method: req.method.to_string(),
                url: req.url.clone(),
                source,
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if round == 0 {
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(|h| Challenge::parse(&self.registry, h))
                    .transpose()?;
                let mut state = self.auth_state();
                if challenge.is_some() {
                    state.challenge = challenge;
                }
                state.tokens.forget(scopes);
            }
        }
        Err(Error::Unauthorized {
            registry: self.registry.clone(),
            scope: scopes.describe(),
        })
    }

    /// Sends `req` (no body) once, without credentials: for a non-distributable layer's own
    /// URL, which is not the registry's, so the registry's credentials must not go there.
    pub(crate) async fn send_unauthenticated(&self, req: &Req) -> Result<Response> {
        self.http
            .request(req.method.clone(), &req.url)
            .headers(req.headers.clone())
            .send()
            .await
            .map_err(|source| Error::Connection {
                method: req.method.to_string(),
                url: req.url.clone(),
                source,
            })
    }

    /// Sends `req` once with `body` instead of `req.body`: a one-shot stream (chunked
    /// transfer encoding) that cannot be replayed, so a 401 is an error, not a retry; the
    /// caller falls back to a replayable upload on any failure.
    pub(crate) async fn send_stream(
        &self,
        req: &Req,
        body: reqwest::Body,
        scopes: &Scopes,
    ) -> Result<Response> {
        self.base().await?;
        let auth = self.authorization(scopes).await?;
        let mut builder = self
            .http
            .request(req.method.clone(), &req.url)
            .headers(req.headers.clone())
            .body(body);
        if let Some(a) = auth {
            builder = builder.header(AUTHORIZATION, a);
        }
        let resp = builder.send().await.map_err(|source| Error::Connection {
            method: req.method.to_string(),
            url: req.url.clone(),
            source,
        })?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthorized {
                registry: self.registry.clone(),
                scope: scopes.describe(),
            });
        }
        Ok(resp)
    }

    /// [`Self::send`], retried with backoff on connection errors, 5xx and 429. Returns the
    /// first response that is not one of those (or the last error).
    pub(crate) async fn send_retry(&self, req: &Req, scopes: &Scopes) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.send(req, scopes).await;
            let retry_after = match &result {
                Ok(r)
                    if r.status().is_server_error()
                        || r.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    Some(retry_after(r))
                }
                Err(e) if e.is_retryable() => Some(None),
                _ => None,
            };
            match retry_after {
                Some(after) if attempt < self.attempts => {
                    let cause = match &result {
                        Ok(r) => format!("registry answered {}", r.status().as_u16()),
                        Err(e) => rbuild_store::error_chain(e),
                    };
                    let what = format!("{} {}", req.method, req.url);
                    self.retry_log.report(&Retry {
                        what: &what,
                        attempt: attempt + 1,
                        attempts: self.attempts,
                        delay: self.delay(attempt, after),
                        cause: &cause,
                    });
                    self.pause(attempt, after).await;
                }
                _ => return result,
            }
        }
    }

    /// Sleeps before attempt `attempt + 1`.
    pub(crate) async fn pause(&self, attempt: u32, server_says: Option<Duration>) {
        tokio::time::sleep(self.delay(attempt, server_says)).await;
    }

    /// The delay before attempt `attempt + 1`: what the server asked for, else a backoff
    /// doubling per attempt, at most 30 s.
    fn delay(&self, attempt: u32, server_says: Option<Duration>) -> Duration {
        let backoff = self.backoff * 2u32.saturating_pow(attempt.saturating_sub(1));
        server_says.unwrap_or(backoff).min(Duration::from_secs(30))
    }

    /// Reports a retry of a blob transfer or upload (those loops live in pull and push).
    pub(crate) fn log_retry(&self, what: &str, attempt: u32, cause: &Error) {
        self.retry_log.report(&Retry {
            what,
            attempt,
            attempts: self.attempts,
            delay: self.delay(attempt.saturating_sub(1), None),
            cause: &rbuild_store::error_chain(cause),
        });
    }

    /// Bytes per PATCH in a chunked upload.
    pub(crate) fn chunk_size(&self) -> u64 {
        match self.upload {
            UploadMode::Monolithic { chunk_size } | UploadMode::Chunked { chunk_size } => {
                chunk_size.max(1)
            }
        }
    }

    /// Whether every upload is chunked.
    pub(crate) fn always_chunked(&self) -> bool {
        matches!(self.upload, UploadMode::Chunked { .. })
    }

    /// Attempts allowed per operation.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }
}

fn retry_after(r: &Response) -> Option<Duration> {
    r.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A streaming body over part of a file, reporting absolute progress.
async fn file_body(
    path: PathBuf,
    offset: u64,
    len: u64,
    progress: Option<(Arc<dyn Progress>, Digest)>,
) -> Result<reqwest::Body> {
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(Error::io(&path))?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(Error::io(&path))?;
    let reader = file.take(len);
    let state = (reader, 0u64, progress);
    let stream = futures::stream::unfold(state, |(mut reader, done, progress)| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                let done = done + n as u64;
                if let Some((p, d)) = &progress {
                    p.advanced(d, done);
                }
                Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from(buf)),
                    (reader, done, progress),
                ))
            }
            Err(e) => Some((Err(e), (reader, done, progress))),
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Turns an unexpected response into an error carrying the registry's error code/message.
pub(crate) async fn status_error(method: &Method, url: &str, resp: Response) -> Error {
    let status = resp.status().as_u16();
    let body = read_limited(resp, 64 * 1024, url).await.unwrap_or_default();
    let detail = registry_error_detail(&body);
    if status == 404 {
        return Error::NotFound {
            what: url.to_string(),
        };
    }
    Error::Status {
        method: method.to_string(),
        url: url.to_string(),
        status,
        detail,
    }
}

/// `CODE: message` of the first entry of a distribution error body.
pub(crate) fn registry_error_detail(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let first = v.get("errors")?.get(0)?;
    let code = first.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let message = first.get("message").and_then(|c| c.as_str()).unwrap_or("");
    Some(format!("{code}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:1",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn error_detail_from_registry_body() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{}}]}"#;
        assert_eq!(
            registry_error_detail(body).as_deref(),
            Some("MANIFEST_INVALID: manifest invalid")
        );
    }
}
