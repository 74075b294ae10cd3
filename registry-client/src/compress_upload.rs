//! Push of a layer whose compressed form does not exist yet: the store compresses it on its
//! threads into a new blob while the same bytes stream into one upload session (PATCH with a
//! chunked body, then PUT with the digest); on any upload failure the finished blob is pushed
//! from the file with the ordinary retrying upload.

use std::sync::Arc;

use bytes::Bytes;
use rbuild_store::{Descriptor, Digest, LayerCompression};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};

use crate::auth::Scopes;
use crate::local::LocalStore;
use crate::progress::{Outcome, Progress};
use crate::transport::{status_error, Endpoint, Req};
use crate::upload::{cancel_session, finish, location, push_blob, with_digest, Blob};
use crate::{Error, Result};

/// Compressed pieces (a gzip member, a zstd output buffer) queued between the compressing
/// thread and the upload; with ~4 MiB gzip members this bounds the queue at ~16 MiB.
const QUEUED_PIECES: usize = 4;

/// Compresses `layer` (uncompressed, or in another format) with `compression` into the store
/// and uploads it to `repo` at the same time. Returns the compressed blob's descriptor; the
/// store remembers it for the next push once the blob and the upload are complete. Progress
/// is reported under `layer`'s digest (sizes and bytes of the uncompressed layer).
pub(crate) async fn compress_and_push<S: LocalStore>(
    ep: &Endpoint,
    repo: &str,
    scopes: &Scopes,
    store: &S,
    layer: &Descriptor,
    compression: LayerCompression,
    progress: Arc<dyn Progress>,
) -> Result<Descriptor> {
    let key = layer.digest.clone();
    progress.started(&key, layer.size);
    // Without a session (a connection error, 5xx) the blob is still made, then uploaded from
    // the file with retries; a refusal (401, 403, 404) fails the push before compressing.
    let session = match open_session(ep, repo, scopes).await {
        Err(e) if !e.is_retryable() => return Err(e),
        other => other,
    };
    let opened = session.as_ref().ok().cloned();

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUED_PIECES);
    let s = store.clone();
    let l = layer.clone();
    let p = progress.clone();
    let k = key.clone();
    let compressing = tokio::task::spawn_blocking(move || {
        let mut tx = Some(tx);
        s.compress_layer(&l, compression, &mut |piece, consumed| {
            p.advanced(&k, consumed);
            if piece.is_empty() {
                return;
            }
            // The upload gave up (its receiver is gone): keep writing the blob only.
            if tx
                .as_ref()
                .is_some_and(|t| t.blocking_send(Bytes::from(piece)).is_err())
            {
                tx = None;
            }
        })
    });

    let streamed = match session {
        Ok(loc) => {
            let body = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|piece| (Ok::<Bytes, std::io::Error>(piece), rx))
            });
            let req = Req::new(Method::PATCH, loc.as_str())
                .header(CONTENT_TYPE, "application/octet-stream");
            match ep
                .send_stream(&req, reqwest::Body::wrap_stream(body), scopes)
                .await
            {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => location(ep, &resp).await,
                Ok(resp) => Err(status_error(&Method::PATCH, &loc, resp).await),
                Err(e) => Err(e),
            }
        }
        Err(e) => {
            rx.close();
            Err(e)
        }
    };

    let compressed = compressing
        .await
        .map_err(Error::Task)?
        .map_err(Error::store(format!("compress layer {key}")));
    let compressed = match compressed {
        Ok(c) => c,
        Err(e) => {
            if let Some(loc) = &opened {
                cancel_session(ep, scopes, loc).await;
            }
            return Err(e);
        }
    };

    let uploaded = match streamed {
        Ok(loc) => {
            let url = with_digest(&loc, &compressed.digest);
            match ep.send(&Req::new(Method::PUT, url.clone()), scopes).await {
                Ok(resp) => finish(resp, &url).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let outcome = match uploaded {
        Ok(()) => {
            progress.finished(&key, Outcome::Transferred);
            Ok(())
        }
        Err(_) => {
            // The stream broke (connection, 5xx, a registry that refuses stream uploads):
            // the blob is complete in the store, so push it from there with retries.
            if let Some(loc) = &opened {
                cancel_session(ep, scopes, loc).await;
            }
            progress.retrying(&key, 2);
            let blob = Blob {
                digest: compressed.digest.clone(),
                size: compressed.size,
            };
            let as_layer: Arc<dyn Progress> = Arc::new(ReportAs {
                inner: progress.clone(),
                key: key.clone(),
            });
            push_blob(ep, repo, scopes, store, &blob, &[], as_layer)
                .await
                .map(|_| ())
        }
    };

    // Remembered once the blob and the upload are done (even when the upload failed: the
    // blob is valid, and a retried push then only uploads it). Failing to write the record
    // costs a recompression next time, not this push.
    let s = store.clone();
    let l = layer.clone();
    let c = compressed.clone();
    let _ =
        tokio::task::spawn_blocking(move || s.remember_compressed_layer(&l, compression, &c)).await;
    outcome.map(|()| compressed)
}

/// POST `/v2/<repo>/blobs/uploads/`: the new session's absolute URL.
async fn open_session(ep: &Endpoint, repo: &str, scopes: &Scopes) -> Result<String> {
    let url = ep.url(&format!("/v2/{repo}/blobs/uploads/")).await?;
    let resp = ep
        .send_retry(&Req::new(Method::POST, url.clone()), scopes)
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Err(status_error(&Method::POST, &url, resp).await);
    }
    location(ep, &resp).await
}

/// Reports every blob's events under one digest (the layer's), so the fallback upload of the
/// compressed blob continues the layer's progress line.
struct ReportAs {
    inner: Arc<dyn Progress>,
    key: Digest,
}

impl Progress for ReportAs {
    fn started(&self, _: &Digest, size: u64) {
        self.inner.started(&self.key, size);
    }
    fn advanced(&self, _: &Digest, done: u64) {
        self.inner.advanced(&self.key, done);
    }
    fn finished(&self, _: &Digest, outcome: Outcome) {
        self.inner.finished(&self.key, outcome);
    }
    fn retrying(&self, _: &Digest, attempt: u32) {
        self.inner.retrying(&self.key, attempt);
    }
}
