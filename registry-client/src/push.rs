//! Push: layers whose compressed form the store remembers go HEAD → mount → upload
//! (monolithic, chunked as fallback) with retries; the others are compressed while they
//! stream into the upload (`compress_upload`); layers in parallel, config, the manifest last.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use rbuild_store::{
    is_nondistributable, Descriptor, Digest, Image, ImageFormat, LayerCompression, LayerType,
    Manifest, MountSources,
};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};

use crate::auth::Scopes;
use crate::client::Client;
use crate::compress_upload::compress_and_push;
use crate::local::LocalStore;
use crate::progress::Progress;
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
    /// Non-distributable: never uploaded, its descriptor goes into the manifest as it is.
    Foreign(Descriptor),
}

/// One parallel unit of a push.
enum Job<'a> {
    Upload(&'a Blob),
    CompressUpload(&'a Descriptor),
}

impl Client {
    /// Pushes the store image named `image` (a tag or an image-id prefix) to `destination`
    /// as a `format` image.
    pub async fn push<S: LocalStore>(
        &self,
        store: &S,
        image: &str,
        destination: &Reference,
        compression: LayerCompression,
        format: ImageFormat,
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
        if let Some(index) = &image_found.index {
            return crate::push_index::push_index(
                self,
                store,
                index,
                destination,
                compression,
                format,
                progress,
            )
            .await;
        }
        self.push_image(
            store,
            &image_found,
            destination,
            compression,
            format,
            progress,
        )
        .await
    }

    /// Pushes a store image to `destination`, compressing layers with `compression` (format
    /// and level) unless the store already has that form, with a manifest in `format`
    /// (media types converted, blobs and digests the same). Non-distributable (foreign)
    /// layers are never uploaded: their descriptors, `urls` included, go into the manifest
    /// as they are.
    pub async fn push_image<S: LocalStore>(
        &self,
        store: &S,
        image: &Image,
        destination: &Reference,
        compression: LayerCompression,
        format: ImageFormat,
        progress: Arc<dyn Progress>,
    ) -> Result<PushedImage> {
        let to = ManifestPut::Tag(destination);
        self.push_image_to(store, image, to, compression, format, progress)
            .await
    }

    /// [`Client::push_image`], the manifest put by tag or (an index's entry) by digest.
    pub(crate) async fn push_image_to<S: LocalStore>(
        &self,
        store: &S,
        image: &Image,
        to: ManifestPut<'_>,
        compression: LayerCompression,
        format: ImageFormat,
        progress: Arc<dyn Progress>,
    ) -> Result<PushedImage> {
        let destination = to.reference();
        let what = destination.to_string();
        let local = local_manifest(image, &what)?;
        let layers = local.layers.clone();

        let ep = self.endpoint(destination.registry())?;
        let forms = self.layer_forms(&ep, store, &layers, compression).await?;

        let repo = destination.repository().to_string();
        let registry = destination.registry().to_string();
        let s = store.clone();
        let mut sources = tokio::task::spawn_blocking(move || s.mount_sources())
            .await
            .map_err(Error::Task)?
            .map_err(Error::store("read registry mount sources"))?;

        let (mut blobs, to_compress) = uploads(&forms);
        let config_blob = Blob {
            digest: local.config.digest.clone(),
            size: local.config.size,
        };
        let mount_sources: BTreeSet<String> = blobs
            .iter()
            .chain(std::iter::once(&config_blob))
            .flat_map(|b| other_holders(&sources, &registry, &repo, &b.digest))
            .collect();
        let scopes = Scopes::push(&repo, mount_sources.iter().map(String::as_str));
        let target = BlobTarget {
            ep: &ep,
            registry: &registry,
            repo: &repo,
            scopes: &scopes,
            sources: &sources,
        };

        // Layers in parallel, config after them, manifest last.
        let uploaded: Vec<&Blob> = blobs
            .iter()
            .filter(|b| b.digest != config_blob.digest)
            .collect();
        let made = self
            .push_layers(
                store,
                &target,
                &uploaded,
                &to_compress,
                compression,
                &progress,
            )
            .await?;
        let config_from = other_holders(&sources, &registry, &repo, &config_blob.digest);
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

        let pushed_layers = pushed_descriptors(&forms, &layers, &made, &what)?;
        for (_, c) in &made {
            blobs.push(Blob {
                digest: c.digest.clone(),
                size: c.size,
            });
        }
        blobs.push(config_blob);

        let (bytes, media_type) = remote_manifest(image, &local, pushed_layers, format, &what)?;
        let pushed = put_manifest_or_docker(&ep, to, &scopes, bytes, media_type, &what).await?;

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

    /// Pushes the layer blobs in parallel: `blobs` as they are (mounted from another
    /// repository that holds them when one does), `to_compress` compressed while uploading.
    /// Returns the compressed form made of each of `to_compress`, by its digest.
    async fn push_layers<S: LocalStore>(
        &self,
        store: &S,
        target: &BlobTarget<'_>,
        blobs: &[&Blob],
        to_compress: &[&Descriptor],
        compression: LayerCompression,
        progress: &Arc<dyn Progress>,
    ) -> Result<Vec<(Digest, Descriptor)>> {
        let parallel = self.options().parallel.max(1);
        let jobs = blobs
            .iter()
            .map(|b| Job::Upload(b))
            .chain(to_compress.iter().map(|d| Job::CompressUpload(d)));
        let made: Vec<Option<(Digest, Descriptor)>> = futures::stream::iter(jobs.map(|job| {
            let progress = progress.clone();
            let BlobTarget {
                ep,
                registry,
                repo,
                scopes,
                sources,
            } = *target;
            async move {
                match job {
                    Job::Upload(b) => {
                        let from = other_holders(sources, registry, repo, &b.digest);
                        self.push_blob_fetching(ep, repo, scopes, store, b, &from, progress)
                            .await
                            .map(|_| None)
                    }
                    Job::CompressUpload(layer) => {
                        compress_and_push(ep, repo, scopes, store, layer, compression, progress)
                            .await
                            .map(|c| Some((layer.digest.clone(), c)))
                    }
                }
            }
        }))
        .buffer_unordered(parallel)
        .try_collect()
        .await?;
        Ok(made.into_iter().flatten().collect())
    }

    /// The form each layer is pushed in. Compression happens at the edge, once per layer
    /// and level (the store remembers it); a layer whose form is not known yet is
    /// compressed while it uploads, or, for a registry that only takes chunked uploads,
    /// before. Layers resolved lazily are fetched when they must be compressed.
    async fn layer_forms<S: LocalStore>(
        &self,
        ep: &Endpoint,
        store: &S,
        layers: &[Descriptor],
        compression: LayerCompression,
    ) -> Result<Vec<LayerForm>> {
        // Compression happens at the edge, once per layer and level (the store remembers it).
        // A layer whose form is not known yet is compressed while it uploads; a registry that
        // only takes chunked uploads gets the blobs compressed first.
        let stream = !ep.always_chunked();
        if !stream {
            // The blobs are compressed before uploading: a layer the store knows only by
            // descriptor (resolved lazily) and that is not in the wanted format comes first.
            for l in layers {
                let current = LayerType::parse(&l.media_type).and_then(|t| t.compression);
                if current != Some(compression.compression()) {
                    self.fetch_blob(store, l, Arc::new(crate::NoProgress))
                        .await?;
                }
            }
        }
        let s = store.clone();
        let originals = layers.to_vec();
        let forms: Vec<LayerForm> = tokio::task::spawn_blocking(move || {
            originals
                .iter()
                .map(|desc| {
                    if is_nondistributable(&desc.media_type) {
                        return Ok(LayerForm::Foreign(desc.clone()));
                    }
                    let what = || format!("compress layer {}", desc.digest);
                    let known = if stream {
                        s.remembered_compressed_layer(desc, compression)
                            .map_err(Error::store(what()))?
                    } else {
                        Some(
                            s.compressed_layer(desc, compression)
                                .map_err(Error::store(what()))?,
                        )
                    };
                    Ok(match known {
                        Some(c) => LayerForm::Known(c),
                        None => LayerForm::Compress(desc.clone()),
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
        Ok(forms)
    }
}

/// Where a pushed manifest goes.
#[derive(Clone, Copy)]
pub(crate) enum ManifestPut<'a> {
    /// Under the reference's tag (or digest).
    Tag(&'a Reference),
    /// Under its own digest in the reference's repository (an index's entry).
    Digest(&'a Reference),
}

impl ManifestPut<'_> {
    fn reference(&self) -> &Reference {
        match self {
            ManifestPut::Tag(r) | ManifestPut::Digest(r) => r,
        }
    }

    /// The reference to PUT `bytes` to.
    fn for_bytes(&self, bytes: &[u8]) -> Reference {
        match self {
            ManifestPut::Tag(r) => (*r).clone(),
            ManifestPut::Digest(r) => r.with_digest(Digest::of(bytes)),
        }
    }
}

/// PUTs the manifest; a registry that refuses it (an OCI manifest, on an old registry) gets
/// the same image as Docker schema2 when every layer has a Docker media type. Returns the
/// bytes and media type the registry took.
async fn put_manifest_or_docker(
    ep: &Endpoint,
    to: ManifestPut<'_>,
    scopes: &Scopes,
    bytes: Vec<u8>,
    media_type: String,
    what: &str,
) -> Result<(Vec<u8>, String)> {
    let refused = |detail| Error::ManifestRefused {
        reference: what.to_string(),
        detail,
    };
    let destination = to.for_bytes(&bytes);
    let detail = match put_manifest(ep, &destination, scopes, &bytes, &media_type).await? {
        Ok(()) => return Ok((bytes, media_type)),
        Err(detail) => detail,
    };
    let Some(docker) = serde_json::from_slice::<Manifest>(&bytes)
        .ok()
        .and_then(|m| ImageFormat::Docker.convert(&m).ok().flatten())
    else {
        return Err(refused(detail));
    };
    let dbytes = canonical(&docker, what)?;
    let docker_type = ImageFormat::Docker.manifest_media_type();
    let destination = to.for_bytes(&dbytes);
    match put_manifest(ep, &destination, scopes, &dbytes, docker_type).await? {
        Ok(()) => Ok((dbytes, docker_type.to_string())),
        Err(detail) => Err(refused(detail)),
    }
}

/// Where the blobs of one push go, and which other repositories may lend them.
#[derive(Clone, Copy)]
struct BlobTarget<'a> {
    ep: &'a Endpoint,
    registry: &'a str,
    repo: &'a str,
    scopes: &'a Scopes,
    sources: &'a MountSources,
}

/// The repositories of `registry` other than `repo` known to hold `digest`.
fn other_holders(
    sources: &MountSources,
    registry: &str,
    repo: &str,
    digest: &Digest,
) -> Vec<String> {
    sources
        .repositories(registry, &digest.to_string())
        .filter(|r| *r != repo)
        .map(String::from)
        .collect()
}

/// The image's manifest, refused unless it is a schema-2 image manifest we can push.
fn local_manifest(image: &Image, what: &str) -> Result<Manifest> {
    let media_type = image.manifest.media_type.clone();
    let unsupported = || Error::UnsupportedMediaType {
        what: what.to_string(),
        media_type: media_type.clone(),
    };
    if ImageFormat::of_manifest(&media_type).is_none() && !media_type.is_empty() {
        return Err(unsupported());
    }
    let local: Manifest = image
        .parsed_manifest()
        .map_err(Error::store(format!("read the manifest of {what}")))?;
    if local.schema_version != 2 {
        return Err(unsupported());
    }
    Ok(local)
}

/// The manifest to put and its media type: the stored bytes when no layer changed and the
/// image already is in `format` (the digest stays the local image's), else the local
/// manifest with the pushed layer descriptors, in `format`.
fn remote_manifest(
    image: &Image,
    local: &Manifest,
    pushed_layers: Vec<Descriptor>,
    format: ImageFormat,
    what: &str,
) -> Result<(Vec<u8>, String)> {
    let media_type = &image.manifest.media_type;
    let mut remote = local.clone();
    remote.layers = pushed_layers;
    let mut target = format
        .convert(&remote)
        .map_err(Error::store(format!("write {what} as {}", format.name())))?
        .unwrap_or(remote);
    if local.media_type.is_none() && *media_type == format.manifest_media_type() {
        // The local manifest names its type only in its descriptor: keep it that way.
        target.media_type = None;
    }
    Ok(if target == *local {
        (image.manifest_json.clone(), media_type.clone())
    } else {
        (
            canonical(&target, what)?,
            format.manifest_media_type().to_string(),
        )
    })
}

/// What a push uploads: the blobs whose compressed form is known (each once), and the
/// layers to compress while uploading (each once). Foreign layers are not uploaded.
fn uploads(forms: &[LayerForm]) -> (Vec<Blob>, Vec<&Descriptor>) {
    let mut blobs: Vec<Blob> = Vec::new();
    let mut to_compress: Vec<&Descriptor> = Vec::new();
    for form in forms {
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
            LayerForm::Foreign(_) => {}
        }
    }
    (blobs, to_compress)
}

/// The pushed manifest's layer descriptors: each layer's pushed form (`made` maps a layer
/// compressed during the upload to its compressed descriptor), with the local layer's
/// annotations and urls.
fn pushed_descriptors(
    forms: &[LayerForm],
    layers: &[Descriptor],
    made: &[(Digest, Descriptor)],
    what: &str,
) -> Result<Vec<Descriptor>> {
    forms
        .iter()
        .zip(layers)
        .map(|(form, l)| {
            let c = match form {
                LayerForm::Known(c) | LayerForm::Foreign(c) => c,
                LayerForm::Compress(d) => made
                    .iter()
                    .find(|(source, _)| *source == d.digest)
                    .map(|(_, c)| c)
                    .ok_or_else(|| Error::LayerNotCompressed {
                        what: what.to_string(),
                        layer: d.digest.to_string(),
                    })?,
            };
            let mut r = Descriptor::new(c.media_type.clone(), c.digest.clone(), c.size);
            r.annotations = l.annotations.clone();
            r.urls = l.urls.clone();
            Ok(r)
        })
        .collect()
}

fn canonical(m: &Manifest, what: &str) -> Result<Vec<u8>> {
    // Sorted keys, no empty optional fields: the store's canonical form.
    rbuild_store::canonical_json(m).map_err(|source| Error::InvalidManifest {
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
