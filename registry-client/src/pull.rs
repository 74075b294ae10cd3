//! Pull: manifest (index → platform), config and layers into the store, layers in parallel,
//! streamed through a `BlobWriter` that verifies the digest, resumed with HTTP Range after
//! a dropped connection; then the tag.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rbuild_store::{Descriptor, Digest, Platform, Reference};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;

use crate::auth::Scopes;
use crate::body::read_limited;
use crate::client::{Client, ImageManifest};
use crate::local::LocalStore;
use crate::manifest;
use crate::progress::{Outcome, Progress};
use crate::transport::{status_error, Endpoint, Req};
use crate::{Error, Result};

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The normalised reference the image was tagged as in the store.
    pub reference: Reference,
    /// The image manifest's descriptor (for a multi-platform image: the chosen platform's).
    pub manifest: rbuild_store::Descriptor,
    /// The manifest bytes as received.
    pub manifest_json: Vec<u8>,
    /// The config bytes as received.
    pub config_json: Vec<u8>,
    /// The config descriptor.
    pub config: rbuild_store::Descriptor,
    /// The layer descriptors, base first.
    pub layers: Vec<rbuild_store::Descriptor>,
    /// The digest the reference resolved to (the index's for a multi-platform image).
    pub resolved: Digest,
}

enum Chunk {
    Data(Bytes),
    Restart,
}

impl Client {
    /// Pulls `reference` into `store` and tags it there as the normalised reference.
    /// `platform` picks from a multi-platform image (default: [`Platform::host`]).
    pub async fn pull<S: LocalStore>(
        &self,
        store: &S,
        reference: &Reference,
        platform: Option<&Platform>,
        progress: Arc<dyn Progress>,
    ) -> Result<PulledImage> {
        let ep = self.endpoint(reference.registry())?;
        let host = Platform::host();
        let platform = platform.unwrap_or(&host);

        let ImageManifest {
            resolved,
            fetched,
            media_type,
            config,
            layers,
        } = self.image_manifest(&ep, reference, Some(platform)).await?;

        let scopes = Scopes::pull(reference.repository());
        let repo = reference.repository();
        let config_digest = config.digest.clone();
        let config_json = self
            .fetch_small_blob(&ep, repo, &scopes, store, &config_digest)
            .await?;

        let parallel = self.options().parallel.max(1);
        futures::stream::iter(layers.iter().map(|l| {
            let ep = ep.clone();
            let scopes = scopes.clone();
            let progress = progress.clone();
            async move { fetch_layer(&ep, repo, &scopes, store, &l.digest, l, progress).await }
        }))
        .buffer_unordered(parallel)
        .try_collect::<Vec<()>>()
        .await?;

        let manifest_desc = Descriptor::new(
            media_type,
            fetched.digest.clone(),
            fetched.bytes.len() as u64,
        );
        let name = reference.to_string();
        let manifest_bytes = fetched.bytes.clone();
        let layer_descs: Vec<Descriptor> = layers.iter().map(stored_descriptor).collect();
        let config_desc = stored_descriptor(&config);
        {
            let store = store.clone();
            let desc = manifest_desc.clone();
            let registry = reference.registry().to_string();
            let repo = repo.to_string();
            let blobs: Vec<String> = layers
                .iter()
                .chain(std::iter::once(&config))
                .map(|l| l.digest.to_string())
                .collect();
            let expected = fetched.digest.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let got = store
                    .blobs()
                    .put(&manifest_bytes)
                    .map_err(Error::store(format!("write manifest {expected}")))?;
                debug_assert_eq!(got, expected);
                store
                    .tag(&name, &desc)
                    .map_err(Error::store(format!("tag {name}")))?;
                let mut sources = rbuild_store::MountSources::default();
                for b in &blobs {
                    sources.add(b, &registry, &repo);
                }
                // Only a hint for later mounts: a failure to record it is not a failed pull.
                let _ = store.save_mount_sources(&sources);
                Ok(())
            })
            .await
            .map_err(Error::Task)??;
        }
        Ok(PulledImage {
            reference: reference.clone(),
            manifest: manifest_desc,
            manifest_json: fetched.bytes,
            config_json,
            config: config_desc,
            layers: layer_descs,
            resolved,
        })
    }

    /// A config blob: from the store if present, else fetched (size-capped), verified, stored.
    async fn fetch_small_blob<S: LocalStore>(
        &self,
        ep: &Endpoint,
        repo: &str,
        scopes: &Scopes,
        store: &S,
        digest: &Digest,
    ) -> Result<Vec<u8>> {
        let s = store.clone();
        let d = digest.clone();
        let local = tokio::task::spawn_blocking(move || {
            if s.blobs().contains(&d) {
                s.blobs().read(&d).map(Some)
            } else {
                Ok(None)
            }
        })
        .await
        .map_err(Error::Task)?
        .map_err(Error::store(format!("read {digest}")))?;
        if let Some(bytes) = local {
            return Ok(bytes);
        }
        // A body cut short after the headers is retried like a failed request.
        let mut attempt = 1;
        let bytes = loop {
            match self.download_small_blob(ep, repo, scopes, digest).await {
                Ok(bytes) => break bytes,
                Err(e) if e.is_retryable() && attempt < ep.attempts() => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        let s = store.clone();
        let b = bytes.clone();
        tokio::task::spawn_blocking(move || s.blobs().put(&b))
            .await
            .map_err(Error::Task)?
            .map_err(Error::store(format!("write {digest}")))?;
        Ok(bytes)
    }

    /// One download of a small blob, size-capped and verified against `digest`.
    pub(crate) async fn download_small_blob(
        &self,
        ep: &Endpoint,
        repo: &str,
        scopes: &Scopes,
        digest: &Digest,
    ) -> Result<Vec<u8>> {
        let url = ep.url(&format!("/v2/{repo}/blobs/{digest}")).await?;
        let resp = ep
            .send_retry(&Req::new(Method::GET, url.clone()), scopes)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound {
                what: format!("blob {digest}"),
            });
        }
        if !resp.status().is_success() {
            return Err(status_error(&Method::GET, &url, resp).await);
        }
        let bytes = read_limited(resp, manifest::MAX_MANIFEST_SIZE, &digest.to_string()).await?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                what: url,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }
}

/// What the store records of a manifest's blob: its media type, digest, size and, for
/// foreign layers, where else it lives; the registry's annotations are not the image's.
pub(crate) fn stored_descriptor(d: &Descriptor) -> Descriptor {
    let mut stored = Descriptor::new(d.media_type.clone(), d.digest.clone(), d.size);
    stored.urls = d.urls.clone();
    stored
}

/// Streams one layer into the store unless it is there already. A non-distributable
/// (foreign) layer is fetched from its `urls` first (as docker does), then from the registry.
pub(crate) async fn fetch_layer<S: LocalStore>(
    ep: &Endpoint,
    repo: &str,
    scopes: &Scopes,
    store: &S,
    digest: &Digest,
    layer: &Descriptor,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let size = layer.size;
    let s = store.clone();
    let d = digest.clone();
    let present = tokio::task::spawn_blocking(move || s.blobs().contains(&d))
        .await
        .map_err(Error::Task)?;
    if present {
        progress.finished(digest, Outcome::Skipped);
        return Ok(());
    }
    progress.started(digest, size);

    // The writer lives on a blocking thread; chunks reach it over a bounded channel, so
    // memory stays constant whatever the layer size.
    let (tx, mut rx) = mpsc::channel::<Chunk>(8);
    let s = store.clone();
    let expected = digest.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<Digest> {
        let what = format!("ingest {expected}");
        let mut w = s.blobs().writer().map_err(Error::store(what.clone()))?;
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(b) => w.write_all(&b).map_err(|source| Error::Io {
                    path: s.blobs().path(&expected),
                    source,
                })?,
                Chunk::Restart => w = s.blobs().writer().map_err(Error::store(what.clone()))?,
            }
        }
        w.commit(Some(&expected))
            .map_err(Error::store(format!("verify {expected}")))
    });

    let mut urls: Vec<(String, bool)> = Vec::new();
    if rbuild_store::is_nondistributable(&layer.media_type) {
        urls.extend(
            layer
                .urls
                .iter()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .map(|u| (u.clone(), true)),
        );
    }
    urls.push((ep.url(&format!("/v2/{repo}/blobs/{digest}")).await?, false));
    let mut offset: u64 = 0;
    let download = async {
        let last = urls.len() - 1;
        for (i, (url, foreign)) in urls.iter().enumerate() {
            if offset > 0 {
                // What an earlier source sent is dropped: this one starts over.
                if tx.send(Chunk::Restart).await.is_err() {
                    return Err(writer_gone(url));
                }
                offset = 0;
                progress.advanced(digest, 0);
            }
            let mut attempt: u32 = 0;
            loop {
                attempt += 1;
                if attempt > 1 {
                    progress.retrying(digest, attempt);
                }
                let from = Source {
                    url,
                    foreign: *foreign,
                };
                match download_from(ep, from, scopes, offset, size, &tx, digest, &*progress).await {
                    Ok(n) => {
                        offset = n;
                        return Ok(());
                    }
                    Err((e, reached)) => {
                        offset = reached;
                        if e.is_retryable() && attempt < ep.attempts() {
                            ep.log_retry(&format!("download of {digest}"), attempt + 1, &e);
                            ep.pause(attempt, None).await;
                            continue;
                        }
                        if i == last || tx.is_closed() {
                            return Err(e);
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    };
    let result: Result<()> = download.await;
    // A closed channel means the writer thread stopped first: its error is the cause.
    let writer_failed = tx.is_closed();
    drop(tx);
    let committed = writer.await.map_err(Error::Task)?;
    match (result, committed) {
        (Err(_), Err(w)) if writer_failed => return Err(w),
        (Err(e), _) => return Err(e),
        (Ok(()), Err(w)) => return Err(w),
        (Ok(()), Ok(_)) => {}
    }
    progress.finished(digest, Outcome::Transferred);
    Ok(())
}

/// Where a layer is downloaded from.
#[derive(Clone, Copy)]
struct Source<'a> {
    url: &'a str,
    /// A foreign layer's own URL: sent without the registry's credentials.
    foreign: bool,
}

/// One GET from `offset` (Range if > 0). Returns the offset reached, with it on error so
/// the next attempt resumes there.
#[allow(clippy::too_many_arguments)]
async fn download_from(
    ep: &Endpoint,
    from: Source<'_>,
    scopes: &Scopes,
    mut offset: u64,
    size: u64,
    tx: &mpsc::Sender<Chunk>,
    digest: &Digest,
    progress: &dyn Progress,
) -> std::result::Result<u64, (Error, u64)> {
    let url = from.url;
    let mut req = Req::new(Method::GET, url.to_string());
    if offset > 0 {
        req = req.header(RANGE, &format!("bytes={offset}-"));
    }
    let resp = if from.foreign {
        ep.send_unauthenticated(&req).await
    } else {
        ep.send(&req, scopes).await
    }
    .map_err(|e| (e, offset))?;
    let status = resp.status();
    let resumed = status == StatusCode::PARTIAL_CONTENT
        && resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok())
            == Some(offset);
    if status == StatusCode::OK || (status == StatusCode::PARTIAL_CONTENT && !resumed) {
        if offset > 0 {
            // The registry ignored our Range: start the blob over.
            offset = 0;
            if tx.send(Chunk::Restart).await.is_err() {
                return Err((writer_gone(url), 0));
            }
            progress.advanced(digest, 0);
        }
        if status == StatusCode::PARTIAL_CONTENT {
            return Err((
                Error::Status {
                    method: "GET".into(),
                    url: url.to_string(),
                    status: 206,
                    detail: Some("unexpected Content-Range".into()),
                },
                0,
            ));
        }
    } else if !resumed {
        if status == StatusCode::NOT_FOUND {
            return Err((
                Error::NotFound {
                    what: format!("blob {digest}"),
                },
                offset,
            ));
        }
        return Err((status_error(&Method::GET, url, resp).await, offset));
    }
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| {
            (
                Error::Connection {
                    method: "GET".into(),
                    url: url.to_string(),
                    source,
                },
                offset,
            )
        })?;
        offset += chunk.len() as u64;
        if offset > size {
            return Err((
                Error::TooLarge {
                    what: format!("blob {digest}"),
                    limit: size,
                },
                offset,
            ));
        }
        if tx.send(Chunk::Data(chunk)).await.is_err() {
            return Err((writer_gone(url), offset));
        }
        progress.advanced(digest, offset);
    }
    if offset < size {
        // The connection ended cleanly but early: resume from here.
        return Err((
            Error::Truncated {
                what: format!("blob {digest}"),
                got: offset,
                expected: size,
            },
            offset,
        ));
    }
    Ok(offset)
}

/// The writer thread stopped early; its own error is reported when it is joined.
fn writer_gone(url: &str) -> Error {
    Error::Status {
        method: "GET".into(),
        url: url.to_string(),
        status: 0,
        detail: Some("blob writer stopped".into()),
    }
}
