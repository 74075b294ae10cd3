//! Blob uploads: HEAD to skip, cross-repository mount, then an upload session (monolithic
//! PUT, chunked PATCH as fallback) with retries; the session primitives (`location`,
//! `finish`, `cancel_session`) that the streamed compress-and-upload path shares. Below both
//! `push` and `compress_upload`.

use std::sync::Arc;

use rbuild_store::Digest;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};

use crate::auth::Scopes;
use crate::local::LocalStore;
use crate::progress::{Outcome, Progress};
use crate::transport::{status_error, Body, Endpoint, Req};
use crate::{Error, Result};

/// One blob to push.
#[derive(Clone)]
pub(crate) struct Blob {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
}

/// Best-effort DELETE of an upload session we will not use; registries expire them anyway.
pub(crate) async fn cancel_session(ep: &Endpoint, scopes: &Scopes, session: &str) {
    let _ = ep
        .send_retry(&Req::new(Method::DELETE, session), scopes)
        .await;
}

/// Pushes one blob unless the registry has it: HEAD, then a mount from `from`, then an
/// upload, retried (with a fresh upload session) on connection errors, 5xx and 429.
pub(crate) async fn push_blob<S: LocalStore>(
    ep: &Endpoint,
    repo: &str,
    scopes: &Scopes,
    store: &S,
    blob: &Blob,
    from: &[String],
    progress: Arc<dyn Progress>,
) -> Result<Outcome> {
    let digest = &blob.digest;
    let head_url = ep.url(&format!("/v2/{repo}/blobs/{digest}")).await?;
    let resp = ep
        .send_retry(&Req::new(Method::HEAD, head_url.clone()), scopes)
        .await?;
    if resp.status().is_success() {
        progress.finished(digest, Outcome::Skipped);
        return Ok(Outcome::Skipped);
    }
    if resp.status() != StatusCode::NOT_FOUND {
        return Err(status_error(&Method::HEAD, &head_url, resp).await);
    }

    let mut session: Option<String> = None;
    let tried = &from[..from.len().min(3)];
    for (i, source) in tried.iter().enumerate() {
        let url = ep
            .url(&format!(
                "/v2/{repo}/blobs/uploads/?mount={digest}&from={source}"
            ))
            .await?;
        let resp = ep
            .send_retry(&Req::new(Method::POST, url.clone()), scopes)
            .await?;
        match resp.status() {
            StatusCode::CREATED => {
                progress.finished(digest, Outcome::Mounted);
                return Ok(Outcome::Mounted);
            }
            // The registry could not mount from this source (a stale record: the repo was
            // deleted) and opened an upload session instead. Another source may still hold
            // the blob: drop the session and try it; the last one's session is used to upload.
            StatusCode::ACCEPTED => {
                let upload_session = location(ep, &resp).await?;
                if i + 1 < tried.len() {
                    cancel_session(ep, scopes, &upload_session).await;
                    continue;
                }
                session = Some(upload_session);
            }
            _ => {}
        }
    }

    // A blob the store only knows by descriptor (a lazily imported layer) cannot be
    // uploaded from here: the caller fetches it from a registry that holds it and retries.
    if !store.blobs().contains(digest) {
        if let Some(s) = session {
            cancel_session(ep, scopes, &s).await;
        }
        return Err(Error::BlobNotLocal {
            digest: digest.to_string(),
        });
    }
    let path = store.blobs().path(digest);
    progress.started(digest, blob.size);
    let chunk_size = ep.chunk_size();
    let mut chunked = ep.always_chunked();
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > 1 {
            progress.retrying(digest, attempt);
        }
        let result = upload(
            ep,
            repo,
            scopes,
            blob,
            &path,
            session.take(),
            chunked.then_some(chunk_size),
            &progress,
        )
        .await;
        match result {
            Ok(()) => {
                progress.finished(digest, Outcome::Transferred);
                return Ok(Outcome::Transferred);
            }
            // A registry that refuses a monolithic PUT gets the blob in chunks.
            Err(Error::Status { status, .. })
                if !chunked && matches!(status, 400 | 405 | 411 | 413 | 416 | 501) =>
            {
                chunked = true;
            }
            Err(e) if e.is_retryable() && attempt < ep.attempts() => {
                ep.log_retry(&format!("upload of {digest}"), attempt + 1, &e);
                ep.pause(attempt, None).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One upload session: POST (unless `session` is open) then PUT, or PATCHes then PUT.
#[allow(clippy::too_many_arguments)]
async fn upload(
    ep: &Endpoint,
    repo: &str,
    scopes: &Scopes,
    blob: &Blob,
    path: &std::path::Path,
    session: Option<String>,
    chunked: Option<u64>,
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    let digest = &blob.digest;
    let mut loc = match session {
        Some(l) => l,
        None => {
            let url = ep.url(&format!("/v2/{repo}/blobs/uploads/")).await?;
            let resp = ep
                .send(&Req::new(Method::POST, url.clone()), scopes)
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(status_error(&Method::POST, &url, resp).await);
            }
            location(ep, &resp).await?
        }
    };
    if let Some(chunk) = chunked {
        let mut offset = 0;
        while offset < blob.size {
            let len = chunk.min(blob.size - offset);
            let req = Req::new(Method::PATCH, loc.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, &format!("{offset}-{}", offset + len - 1))
                .body(Body::File {
                    path: path.to_path_buf(),
                    offset,
                    len,
                    progress: Some((progress.clone(), digest.clone())),
                });
            let resp = ep.send(&req, scopes).await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(status_error(&Method::PATCH, &loc, resp).await);
            }
            loc = location(ep, &resp).await?;
            offset += len;
        }
        let url = with_digest(&loc, digest);
        let resp = ep.send(&Req::new(Method::PUT, url.clone()), scopes).await?;
        return finish(resp, &url).await;
    }
    let url = with_digest(&loc, digest);
    let req = Req::new(Method::PUT, url.clone())
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(Body::File {
            path: path.to_path_buf(),
            offset: 0,
            len: blob.size,
            progress: Some((progress.clone(), digest.clone())),
        });
    let resp = ep.send(&req, scopes).await?;
    finish(resp, &url).await
}

pub(crate) async fn finish(resp: Response, url: &str) -> Result<()> {
    if resp.status() == StatusCode::CREATED || resp.status().is_success() {
        Ok(())
    } else {
        Err(status_error(&Method::PUT, url, resp).await)
    }
}

/// The upload URL from a `Location` header, made absolute.
pub(crate) async fn location(ep: &Endpoint, resp: &Response) -> Result<String> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Status {
            method: "POST".into(),
            url: resp.url().to_string(),
            status: resp.status().as_u16(),
            detail: Some("upload session without a Location header".into()),
        })?;
    if loc.starts_with("http://") || loc.starts_with("https://") {
        Ok(loc.to_string())
    } else {
        ep.url(loc).await
    }
}

pub(crate) fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}
