//! Lazy transfers: an image's manifest and config without its layers, one blob fetched on
//! demand from a repository the store knows holds it, and pushing a manifest over blobs
//! that are in the store or only in a registry (mounted, else fetched and uploaded).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use rbuild_store::{
    canonical_json, Descriptor, Digest, Manifest, Platform, Reference, MEDIA_TYPE_OCI_MANIFEST,
};

use crate::auth::Scopes;
use crate::client::{Client, ImageManifest};
use crate::local::LocalStore;
use crate::manifest;
use crate::progress::{Outcome, Progress};
use crate::pull::{fetch_layer, stored_descriptor, PulledImage};
use crate::push::{put_manifest, PushedImage};
use crate::transport::Endpoint;
use crate::upload::{push_blob, Blob};
use crate::{Error, Result};

/// An image manifest and its config as a registry serves them, without the layers.
#[derive(Debug, Clone)]
pub struct ImageHead {
    /// The manifest's descriptor (for a multi-platform image: the chosen platform's).
    pub manifest: Descriptor,
    /// The manifest bytes as received (digest-verified).
    pub manifest_json: Vec<u8>,
    /// The config descriptor, with its media type as the manifest gives it.
    pub config: Descriptor,
    /// The config bytes (digest-verified).
    pub config_json: Vec<u8>,
    /// The layer descriptors, bottom first.
    pub layers: Vec<Descriptor>,
    /// What the reference resolved to (the index's digest for a multi-platform image).
    pub resolved: Digest,
}

impl Client {
    /// Fetches `reference`'s manifest and config, not its layers. With `platform`, an index
    /// is resolved to that platform's manifest; without, an index is refused. The config is
    /// refused when larger than `max_config` bytes.
    pub async fn fetch_image_head(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
        max_config: u64,
    ) -> Result<ImageHead> {
        let ep = self.endpoint(reference.registry())?;
        let what = reference.to_string();
        let ImageManifest {
            resolved,
            fetched,
            media_type,
            config,
            layers,
        } = self.image_manifest(&ep, reference, platform).await?;
        if config.size > max_config {
            return Err(Error::TooLarge {
                what: format!("{what} config"),
                limit: max_config,
            });
        }
        let config_digest = config.digest.clone();
        let scopes = Scopes::pull(reference.repository());
        let mut attempt = 1;
        let config_json = loop {
            match self
                .download_small_blob(&ep, reference.repository(), &scopes, &config_digest)
                .await
            {
                Ok(bytes) => break bytes,
                Err(e) if e.is_retryable() && attempt < ep.attempts() => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        if config_json.len() as u64 != config.size {
            return Err(Error::UnexpectedManifest {
                what,
                reason: format!(
                    "config is {} bytes, the manifest says {}",
                    config_json.len(),
                    config.size
                ),
            });
        }
        Ok(ImageHead {
            manifest: Descriptor::new(
                media_type.clone(),
                fetched.digest.clone(),
                fetched.bytes.len() as u64,
            ),
            manifest_json: fetched.bytes,
            config: stored_descriptor(&config),
            config_json,
            layers: layers.iter().map(stored_descriptor).collect(),
            resolved,
        })
    }

    /// Checks that `reference`'s repository holds every blob of `blobs` with the size its
    /// descriptor says (HEAD requests, in parallel; no bytes are downloaded).
    pub async fn check_blobs(&self, reference: &Reference, blobs: &[Descriptor]) -> Result<()> {
        let ep = self.endpoint(reference.registry())?;
        let repo = reference.repository();
        let scopes = Scopes::pull(repo);
        let parallel = self.options().parallel.max(1);
        futures::stream::iter(blobs.iter().map(|b| {
            let (ep, scopes) = (ep.clone(), scopes.clone());
            async move {
                let url = ep.url(&format!("/v2/{repo}/blobs/{}", b.digest)).await?;
                let req = crate::transport::Req::new(reqwest::Method::HEAD, url.clone());
                let resp = ep.send_retry(&req, &scopes).await?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    return Err(Error::NotFound {
                        what: format!("blob {} in {repo}", b.digest),
                    });
                }
                if !resp.status().is_success() {
                    return Err(
                        crate::transport::status_error(&reqwest::Method::HEAD, &url, resp).await,
                    );
                }
                let size = resp
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                match size {
                    Some(n) if n != b.size => Err(Error::UnexpectedManifest {
                        what: format!("blob {} in {repo}", b.digest),
                        reason: format!("is {n} bytes, the manifest says {}", b.size),
                    }),
                    _ => Ok(()),
                }
            }
        }))
        .buffer_unordered(parallel)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    /// [`Client::pull`] without the layers: the manifest and config go into the store and
    /// the image is tagged; the store remembers which repository holds each layer, and
    /// [`Client::fetch_blob`] brings a layer in when its contents are needed.
    pub async fn pull_lazy<S: LocalStore>(
        &self,
        store: &S,
        reference: &Reference,
        platform: Option<&Platform>,
    ) -> Result<PulledImage> {
        let host = Platform::host();
        let head = self
            .fetch_image_head(
                reference,
                Some(platform.unwrap_or(&host)),
                manifest::MAX_MANIFEST_SIZE,
            )
            .await?;
        let s = store.clone();
        let name = reference.to_string();
        let registry = reference.registry().to_string();
        let repo = reference.repository().to_string();
        let h = head.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            s.blobs()
                .put(&h.config_json)
                .map_err(Error::store(format!("write config {}", h.config.digest)))?;
            s.blobs()
                .put(&h.manifest_json)
                .map_err(Error::store(format!(
                    "write manifest {}",
                    h.manifest.digest
                )))?;
            let mut sources = rbuild_store::MountSources::default();
            for l in h.layers.iter().chain(std::iter::once(&h.config)) {
                sources.add(l.digest.as_str(), &registry, &repo);
            }
            // Written before the tag: the tag's missing layers are known to live there.
            s.save_mount_sources(&sources)
                .map_err(Error::store("record where the layers are"))?;
            s.tag(&name, &h.manifest)
                .map_err(Error::store(format!("tag {name}")))
        })
        .await
        .map_err(Error::Task)??;
        Ok(PulledImage {
            reference: reference.clone(),
            manifest: head.manifest,
            manifest_json: head.manifest_json,
            config_json: head.config_json,
            config: head.config,
            layers: head.layers,
            resolved: head.resolved,
        })
    }

    /// Brings `blob` into the store from a registry repository the store knows holds it
    /// (its mount sources), verified against its digest. Nothing happens when it is there.
    pub async fn fetch_blob<S: LocalStore>(
        &self,
        store: &S,
        blob: &Descriptor,
        progress: Arc<dyn Progress>,
    ) -> Result<()> {
        let s = store.clone();
        let d = blob.digest.clone();
        let (present, holders) = tokio::task::spawn_blocking(move || {
            let holders: Vec<(String, String)> = s
                .mount_sources()
                .map(|m| {
                    m.holders(d.as_str())
                        .map(|(r, p)| (r.to_string(), p.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (s.blobs().contains(&d), holders)
        })
        .await
        .map_err(Error::Task)?;
        if present {
            progress.finished(&blob.digest, Outcome::Skipped);
            return Ok(());
        }
        let mut last = Error::BlobNotLocal {
            digest: blob.digest.to_string(),
        };
        for (registry, repo) in holders {
            let ep = self.endpoint(&registry)?;
            let scopes = Scopes::pull(&repo);
            match fetch_layer(
                &ep,
                &repo,
                &scopes,
                store,
                &blob.digest,
                blob,
                progress.clone(),
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// [`push_blob`], fetching the blob first when the store only knows it by descriptor
    /// and the destination could neither find nor mount it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn push_blob_fetching<S: LocalStore>(
        &self,
        ep: &Endpoint,
        repo: &str,
        scopes: &Scopes,
        store: &S,
        blob: &Blob,
        from: &[String],
        progress: Arc<dyn Progress>,
    ) -> Result<Outcome> {
        match push_blob(ep, repo, scopes, store, blob, from, progress.clone()).await {
            Err(Error::BlobNotLocal { .. }) => {
                let desc =
                    Descriptor::new("application/octet-stream", blob.digest.clone(), blob.size);
                self.fetch_blob(store, &desc, progress.clone()).await?;
                push_blob(ep, repo, scopes, store, blob, from, progress).await
            }
            other => other,
        }
    }

    /// Pushes one OCI image manifest whose config is `config_json` (of `config_media_type`)
    /// and whose layers are `layers`: blobs first (HEAD, mount from a repository the store
    /// knows holds them, else upload; a blob the store does not have is fetched first), the
    /// config, the manifest last, so the tag only ever names a manifest whose blobs exist.
    pub async fn push_artifact<S: LocalStore>(
        &self,
        store: &S,
        destination: &Reference,
        config_media_type: &str,
        config_json: &[u8],
        layers: &[Descriptor],
        progress: Arc<dyn Progress>,
    ) -> Result<PushedImage> {
        let what = destination.to_string();
        let ep = self.endpoint(destination.registry())?;
        let s = store.clone();
        let bytes = config_json.to_vec();
        let (config_digest, sources) = tokio::task::spawn_blocking(move || -> Result<_> {
            let d = s
                .blobs()
                .put(&bytes)
                .map_err(Error::store("write a config"))?;
            let m = s
                .mount_sources()
                .map_err(Error::store("read registry mount sources"))?;
            Ok((d, m))
        })
        .await
        .map_err(Error::Task)??;
        let config = Descriptor::new(config_media_type, config_digest, config_json.len() as u64);
        let registry = destination.registry().to_string();
        let repo = destination.repository().to_string();
        let mut unique: Vec<Blob> = Vec::new();
        for l in layers {
            if !unique.iter().any(|b| b.digest == l.digest) {
                unique.push(Blob {
                    digest: l.digest.clone(),
                    size: l.size,
                });
            }
        }
        let from_of = |d: &Digest| -> Vec<String> {
            sources
                .repositories(&registry, d.as_str())
                .filter(|r| *r != repo)
                .map(String::from)
                .collect()
        };
        let mount_sources: BTreeSet<String> =
            unique.iter().flat_map(|b| from_of(&b.digest)).collect();
        let scopes = Scopes::push(&repo, mount_sources.iter().map(String::as_str));
        let parallel = self.options().parallel.max(1);
        futures::stream::iter(unique.iter().map(|b| {
            let (ep, scopes, progress, from) = (
                ep.clone(),
                scopes.clone(),
                progress.clone(),
                from_of(&b.digest),
            );
            let repo = repo.clone();
            async move {
                self.push_blob_fetching(&ep, &repo, &scopes, store, b, &from, progress)
                    .await
            }
        }))
        .buffer_unordered(parallel)
        .try_collect::<Vec<Outcome>>()
        .await?;
        let config_blob = Blob {
            digest: config.digest.clone(),
            size: config.size,
        };
        push_blob(&ep, &repo, &scopes, store, &config_blob, &[], progress).await?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
            config,
            layers: layers.to_vec(),
            annotations: BTreeMap::new(),
        };
        let bytes = canonical_json(&manifest).map_err(|source| Error::InvalidManifest {
            what: what.clone(),
            source,
        })?;
        if let Err(detail) =
            put_manifest(&ep, destination, &scopes, &bytes, MEDIA_TYPE_OCI_MANIFEST).await?
        {
            return Err(Error::ManifestRefused {
                reference: what,
                detail,
            });
        }
        let mut sources = rbuild_store::MountSources::default();
        for b in unique.iter().chain(std::iter::once(&config_blob)) {
            sources.add(b.digest.as_str(), &registry, &repo);
        }
        let s = store.clone();
        // Only a hint for later mounts: failing to record it does not fail the push.
        let _ = tokio::task::spawn_blocking(move || s.save_mount_sources(&sources)).await;
        Ok(PushedImage {
            reference: destination.clone(),
            digest: Digest::of(&bytes),
            size: bytes.len() as u64,
            media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(),
        })
    }
}
