//! Push: layers whose compressed form the store remembers go HEAD → mount → upload
//! (monolithic, chunked as fallback) with retries; the others are compressed while they
//! stream into the upload (`compress_upload`); layers in parallel, config, the manifest last.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use rbuild_store::{Descriptor, Digest, Image, LayerCompression, Store};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};

use crate::auth::Scopes;
use crate::client::Client;
use crate::compress_upload::compress_and_push;
use crate::manifest::{self, BlobRef};
use crate::progress::Progress;
use crate::store_desc;
use crate::transport::{registry_error_detail, status_error, Body, Endpoint, Req};
use crate::upload::{push_blob, Blob};
use crate::{Error, Result};
use rbuild_store::Reference;

/// What a push put in the registry.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// Where it went.
    pub reference: Reference,
    /// The manifest digest in the registry.
    pub digest: Digest,
    /// The manifest size in bytes.
    pub size: u64,
    /// The manifest media type the registry accepted (OCI, or Docker schema2 as fallback).
    pub media_type: String,
}

/// A layer's compressed form: known before the upload, or made while uploading it.
enum LayerForm {
    /// In the store already (remembered, or the layer is in this format).
    Known(Descriptor),
    /// To compress from this layer blob while uploading.
    Compress(Descriptor),
}

/// One parallel unit of a push.
enum Job<'a> {
    Upload(&'a Blob),
    CompressUpload(&'a Descriptor),
}

impl Client {
    /// Pushes the store image named `image` (a tag or an image-id prefix) to `destination`.
    pub async fn push(
        &self,
        store: &Store,
        image: &str,
        destination: &Reference,
        compression: LayerCompression,
        progress: Arc<dyn Progress>,
    ) -> Result<PushedImage> {
        let s = store.clone();
        let name = image.to_string();
        let found = tokio::task::spawn_blocking(move || -> Result<Option<Image>> {
            s.find_image(&name)
                .map_err(Error::store(format!("find {name}")))
        })
        .await
        .map_err(Error::Task)??;
        let image_found = found.ok_or_else(|| Error::ImageNotInStore {
            name: image.to_string(),
        })?;
        self.push_image(store, &image_found, destination, compression, progress)
            .await
    }

    /// Pushes a store image to `destination`, compressing layers with `compression` (format
    /// and level) unless the store already has that form.
    pub async fn push_image(
        &self,
        store: &Store,
        image: &Image,
        destination: &Reference,
        compression: LayerCompression,
        progress: Arc<dyn Progress>,
    ) -> Result<PushedImage> {
        let what = destination.to_string();
        let manifest_value: serde_json::Value = serde_json::from_slice(&image.manifest_json)
            .map_err(|source| Error::InvalidManifest {
                what: what.clone(),
                source,
            })?;
        let (_, parsed) = manifest::parse(
            &what,
            &image.manifest_json,
            Some(&store_desc::media_type(&image.manifest)),
        )?;
        let manifest::Parsed::Image { config, layers } = parsed else {
            return Err(Error::UnsupportedMediaType {
                what,
                media_type: store_desc::media_type(&image.manifest),
            });
        };

        // Compression happens at the edge, once per layer and level (the store remembers it).
        // A layer whose form is not known yet is compressed while it uploads; a registry that
        // only takes chunked uploads gets the blobs compressed first.
        let ep = self.endpoint(destination.registry())?;
        let stream = !ep.always_chunked();
        if !stream {
            // The blobs are compressed before uploading: a layer the store knows only by
            // descriptor (resolved lazily) and that is not in the wanted format comes first.
            for l in &layers {
                let desc = store_desc::from_ref(&what, l)?;
                let wanted = compression.compression().name();
                if !desc.media_type.ends_with(wanted) {
                    self.fetch_blob(store, &desc, Arc::new(crate::NoProgress))
                        .await?;
                }
            }
        }
        let s = store.clone();
        let originals = layers.clone();
        let w = what.clone();
        let forms: Vec<LayerForm> = tokio::task::spawn_blocking(move || {
            originals
                .iter()
                .map(|l| {
                    let desc = store_desc::from_ref(&w, l)?;
                    let what = || format!("compress layer {}", l.digest);
                    let known = if stream {
                        s.remembered_compressed_layer(&desc, compression)
                            .map_err(Error::store(what()))?
                    } else {
                        Some(
                            s.compressed_layer(&desc, compression)
                                .map_err(Error::store(what()))?,
                        )
                    };
                    Ok(match known {
                        Some(c) => LayerForm::Known(c),
                        None => LayerForm::Compress(desc),
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(Error::Task)??;

        // A layer to compress must be here: a lazily resolved one is fetched first.
        for form in &forms {
            if let LayerForm::Compress(d) = form {
                self.fetch_blob(store, d, Arc::new(crate::NoProgress))
                    .await?;
            }
        }

        let repo = destination.repository().to_string();
        let registry = destination.registry().to_string();
        let s = store.clone();
        let mut sources = tokio::task::spawn_blocking(move || s.mount_sources())
            .await
            .map_err(Error::Task)?
            .map_err(Error::store("read registry mount sources"))?;

        let mut blobs: Vec<Blob> = Vec::new();
        let mut to_compress: Vec<&Descriptor> = Vec::new();
        for form in &forms {
            match form {
                LayerForm::Known(c) => {
                    if !blobs.iter().any(|b| b.digest == c.digest) {
                        blobs.push(Blob {
                            digest: c.digest.clone(),
                            size: c.size,
                        });
                    }
                }
                LayerForm::Compress(d) => {
                    if !to_compress.iter().any(|t| t.digest == d.digest) {
                        to_compress.push(d);
                    }
                }
            }
        }
        let config_blob = Blob {
            digest: Digest::from_str(&config.digest).map_err(|_| Error::InvalidDigest {
                what: what.to_string(),
                digest: config.digest.clone(),
            })?,
            size: config.size,
        };
        let mount_sources: BTreeSet<String> = blobs
            .iter()
            .chain(std::iter::once(&config_blob))
            .flat_map(|b| sources.repositories(&registry, &b.digest.to_string()))
            .filter(|r| *r != repo)
            .map(String::from)
            .collect();
        let scopes = Scopes::push(&repo, mount_sources.iter().map(String::as_str));

        // Layers in parallel, config after them, manifest last.
        let parallel = self.options().parallel.max(1);
        let sources_ref = &sources;
        let jobs = blobs
            .iter()
            .filter(|b| b.digest != config_blob.digest)
            .map(Job::Upload)
            .chain(to_compress.iter().map(|d| Job::CompressUpload(d)));
        let made: Vec<Option<(Digest, Descriptor)>> = futures::stream::iter(jobs.map(|job| {
            let ep = ep.clone();
            let scopes = scopes.clone();
            let progress = progress.clone();
            let repo = repo.clone();
            let registry = registry.clone();
            async move {
                match job {
                    Job::Upload(b) => {
                        let from: Vec<String> = sources_ref
                            .repositories(&registry, &b.digest.to_string())
                            .filter(|r| *r != repo)
                            .map(String::from)
                            .collect();
                        self.push_blob_fetching(&ep, &repo, &scopes, store, b, &from, progress)
                            .await
                            .map(|_| None)
                    }
                    Job::CompressUpload(layer) => {
                        compress_and_push(&ep, &repo, &scopes, store, layer, compression, progress)
                            .await
                            .map(|c| Some((layer.digest.clone(), c)))
                    }
                }
            }
        }))
        .buffer_unordered(parallel)
        .try_collect()
        .await?;
        let config_from: Vec<String> = sources
            .repositories(&registry, &config_blob.digest.to_string())
            .filter(|r| *r != repo)
            .map(String::from)
            .collect();
        push_blob(
            &ep,
            &repo,
            &scopes,
            store,
            &config_blob,
            &config_from,
            progress.clone(),
        )
        .await?;

        let made: Vec<(Digest, Descriptor)> = made.into_iter().flatten().collect();
        let mut compressed: Vec<BlobRef> = Vec::with_capacity(layers.len());
        for (form, l) in forms.iter().zip(&layers) {
            let c = match form {
                LayerForm::Known(c) => c,
                LayerForm::Compress(d) => made
                    .iter()
                    .find(|(source, _)| *source == d.digest)
                    .map(|(_, c)| c)
                    .ok_or_else(|| Error::LayerNotCompressed {
                        what: what.to_string(),
                        layer: d.digest.to_string(),
                    })?,
            };
            let mut r = store_desc::to_ref(c);
            r.annotations = l.annotations.clone();
            compressed.push(r);
        }
        for (_, c) in &made {
            blobs.push(Blob {
                digest: c.digest.clone(),
                size: c.size,
            });
        }
        blobs.push(config_blob);

        // The manifest: the stored bytes when no layer changed (the digest stays the
        // local image's), else the local manifest with the compressed descriptors.
        let unchanged = compressed
            .iter()
            .zip(&layers)
            .all(|(c, l)| c.digest == l.digest && c.media_type == l.media_type);
        let (bytes, media_type) = if unchanged {
            (
                image.manifest_json.clone(),
                store_desc::media_type(&image.manifest),
            )
        } else {
            let mut m = manifest_value.clone();
            m["layers"] =
                serde_json::to_value(&compressed).map_err(|source| Error::InvalidManifest {
                    what: what.clone(),
                    source,
                })?;
            if m.get("mediaType").is_none() {
                m["mediaType"] = manifest::OCI_MANIFEST.into();
            }
            let mt = m["mediaType"]
                .as_str()
                .unwrap_or(manifest::OCI_MANIFEST)
                .to_string();
            (canonical(&m, &what)?, mt)
        };
        let pushed = match put_manifest(&ep, destination, &scopes, &bytes, &media_type).await? {
            Ok(()) => (bytes, media_type),
            Err(detail) => {
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|source| Error::InvalidManifest {
                        what: what.clone(),
                        source,
                    })?;
                let docker = match manifest::to_docker(&value) {
                    Some(d) if media_type != manifest::DOCKER_MANIFEST => d,
                    _ => {
                        return Err(Error::ManifestRefused {
                            reference: what,
                            detail,
                        })
                    }
                };
                let dbytes = canonical(&docker, &what)?;
                match put_manifest(
                    &ep,
                    destination,
                    &scopes,
                    &dbytes,
                    manifest::DOCKER_MANIFEST,
                )
                .await?
                {
                    Ok(()) => (dbytes, manifest::DOCKER_MANIFEST.to_string()),
                    Err(detail) => {
                        return Err(Error::ManifestRefused {
                            reference: what,
                            detail,
                        })
                    }
                }
            }
        };

        for b in &blobs {
            sources.add(&b.digest.to_string(), &registry, &repo);
        }
        let s = store.clone();
        // Only a hint for later mounts: failing to record it does not fail the push.
        let _ = tokio::task::spawn_blocking(move || s.save_mount_sources(&sources)).await;

        Ok(PushedImage {
            reference: destination.clone(),
            digest: Digest::of(&pushed.0),
            size: pushed.0.len() as u64,
            media_type: pushed.1,
        })
    }
}

fn canonical(v: &serde_json::Value, what: &str) -> Result<Vec<u8>> {
    // serde_json's Value keeps object keys sorted: this is our canonical form.
    serde_json::to_vec(v).map_err(|source| Error::InvalidManifest {
        what: what.to_string(),
        source,
    })
}

/// PUTs a manifest. `Ok(Err(detail))` when the registry refused its content (400/415),
/// so the caller may retry with Docker media types.
pub(crate) async fn put_manifest(
    ep: &Endpoint,
    destination: &Reference,
    scopes: &Scopes,
    bytes: &[u8],
    media_type: &str,
) -> Result<std::result::Result<(), String>> {
    let url = ep
        .url(&format!(
            "/v2/{}/manifests/{}",
            destination.repository(),
            destination.manifest_ref()
        ))
        .await?;
    let req = Req::new(Method::PUT, url.clone())
        .header(CONTENT_TYPE, media_type)
        .body(Body::Bytes(bytes.to_vec().into()));
    let resp = ep.send_retry(&req, scopes).await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(Ok(()));
    }
    if status == StatusCode::BAD_REQUEST || status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        let body = crate::body::read_limited(resp, 64 * 1024, &url)
            .await
            .unwrap_or_default();
        let detail = registry_error_detail(&body).unwrap_or_else(|| format!("status {status}"));
        return Ok(Err(detail));
    }
    Err(status_error(&Method::PUT, &url, resp).await)
}
