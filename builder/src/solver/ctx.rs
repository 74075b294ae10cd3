//! What every stage of one build shares: the store, the registry client, the options, the
//! event sink, the context directory, the sandbox; and the operations on them that several
//! instructions need (base images, snapshot chains, cache records, blocking calls).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rbuild_registry::NoProgress;
use rbuild_store::Reference;
use rbuild_store::{
    ChainId, CopySnapshotter, Descriptor, DiffId, Digest, Overlay, Snapshotter, Store,
};
use serde::{Deserialize, Serialize};

use super::cachekey::CacheKey;
use super::context_dir::ContextDir;
use super::flights::Flights;
use super::named_context::OpenedContext;
use super::remote_cache::ImportedCache;
use super::state::LayerRef;
use super::BuildOptions;
use crate::events::{BuildEvent, EventSink, StepId};
use crate::frontend::checks::CheckConfig;
use crate::frontend::{Lexer, StepGraph};
use crate::Error;
use rbuild_store::ImageConfig;
use rbuild_store::Platform;

/// Shared by all stages of one build.
pub struct BuildCtx {
    /// The store.
    pub store: Store,
    /// Makes the writable snapshots steps fill and commits them as layers.
    pub snapshotter: Arc<dyn Snapshotter>,
    /// The registry client.
    pub registry: rbuild_registry::Client,
    /// The options.
    pub options: BuildOptions,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    /// The context (one for every target platform of the build).
    pub context: Arc<ContextDir>,
    /// The Dockerfile's name, for messages (`Dockerfile:7: ...`).
    pub dockerfile: String,
    /// The Dockerfile's lexer (escape character).
    pub lexer: Lexer,
    /// Global args (for ONBUILD triggers).
    pub global_args: Vec<(String, String)>,
    /// Runs RUN steps.
    pub sandbox: rbuild_runner::Sandbox,
    /// The target platform.
    pub platform: Platform,
    /// Records read from `--cache-from` (empty without it).
    pub imported: Arc<ImportedCache>,
    /// Steps running now, by cache key, shared by the build's target platforms.
    pub flights: Arc<Flights>,
    /// `--build-context`s by lower-case name.
    pub named: Arc<BTreeMap<String, OpenedContext>>,
    /// The build checks' config (for the check FROM runs, InvalidBaseImagePlatform).
    pub checks: CheckConfig,
    /// The `--ssh` agents (own agents started on first use, killed with the context).
    pub ssh: Arc<super::ssh::SshAgents>,
    next_id: Arc<AtomicUsize>,
    /// One pull at a time, so two stages on the same base pull it once.
    pull_lock: tokio::sync::Mutex<()>,
    /// The records this build hit or wrote, for `--cache-to`.
    used: Mutex<BTreeMap<CacheKey, StepRecord>>,
}

/// A base image, resolved into the store.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// Its config.
    pub config: ImageConfig,
    /// Its layers, base first.
    pub layers: Vec<LayerRef>,
    /// Its manifest digest (what FROM's cache key uses).
    pub manifest: Digest,
}

/// What the cache remembers for a step: the state after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// The image config after the step.
    pub config: ImageConfig,
    /// The layer the step added, if any.
    pub layer: Option<LayerRef>,
    /// Per-source content digests of a COPY/ADD (to name what changed on a later miss).
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
}

/// Parses `os/arch[/variant]` (normalised as containerd does).
pub fn parse_platform(s: &str) -> Result<Platform, Error> {
    s.parse().map_err(Error::Platform)
}

/// Runs blocking work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(Error::Task)?
}

/// The layers a manifest lists.
fn manifest_layers(what: &str, manifest: &[u8]) -> Result<Vec<Descriptor>, Error> {
    #[derive(Deserialize)]
    struct M {
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let m: M = serde_json::from_slice(manifest).map_err(|source| Error::Config {
        what: format!("{what} (manifest)"),
        source,
    })?;
    Ok(m.layers)
}

/// What every target platform of one build shares (each target's [`BuildCtx`] holds it).
#[derive(Clone)]
pub struct Shared {
    /// The store.
    pub store: Store,
    /// The registry client.
    pub registry: rbuild_registry::Client,
    /// The build's options.
    pub options: BuildOptions,
    /// Where progress goes.
    pub events: Arc<dyn EventSink>,
    /// The build context.
    pub context: Arc<ContextDir>,
    /// The Dockerfile's name, for errors.
    pub dockerfile: String,
    /// Records read from `--cache-from`.
    pub imported: Arc<ImportedCache>,
    /// Steps running now, by cache key.
    pub flights: Arc<Flights>,
    /// `--build-context`s by lower-case name.
    pub named: Arc<BTreeMap<String, OpenedContext>>,
    /// The build checks' config.
    pub checks: CheckConfig,
    /// The `--ssh` agents.
    pub ssh: Arc<super::ssh::SshAgents>,
    /// The next step id (ONBUILD triggers), across targets.
    pub next_id: Arc<AtomicUsize>,
}

impl BuildCtx {
    /// The context for one target platform of a build.
    pub fn new(shared: Shared, graph: &StepGraph, platform: Platform) -> BuildCtx {
        let Shared {
            store,
            registry,
            options,
            events,
            context,
            dockerfile,
            imported,
            flights,
            named,
            checks,
            ssh,
            next_id,
        } = shared;
        let isolation = options.isolation;
        // Without namespaces, or where overlayfs refuses the store's filesystem, there is
        // no overlayfs mount: the step's root is a copy.
        let copied = isolation == rbuild_runner::Isolation::Chroot || options.copied_roots;
        let snapshotter: Arc<dyn Snapshotter> = if copied {
            Arc::new(CopySnapshotter::new(store.clone()))
        } else {
            Arc::new(Overlay::new(store.clone()))
        };
        BuildCtx {
            snapshotter,
            store,
            registry,
            options,
            events,
            context,
            dockerfile,
            lexer: graph.lexer(),
            global_args: graph.global_args.clone(),
            sandbox: rbuild_runner::Sandbox::new().with_isolation(isolation),
            platform,
            imported,
            flights,
            named,
            checks,
            ssh,
            next_id,
            pull_lock: tokio::sync::Mutex::new(()),
            used: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sends an event.
    pub fn emit(&self, event: BuildEvent) {
        self.events.event(event);
    }

    /// A fresh step id (ONBUILD triggers).
    pub fn new_step_id(&self) -> StepId {
        StepId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A base image for `platform`: the local one when the store has it for that platform
    /// (unless `--pull` finds the registry's is different), else pulled for it.
    pub async fn base_image(
        &self,
        reference: &str,
        platform: &Platform,
        id: StepId,
    ) -> Result<BaseImage, Error> {
        let reg_err = |source| match source {
            rbuild_registry::Error::NoMatchingPlatform { available, .. } => {
                Error::BaseLacksPlatform {
                    base: reference.to_string(),
                    platform: platform.to_string(),
                    available,
                }
            }
            source => Error::Registry {
                reference: reference.to_string(),
                source,
            },
        };
        let parsed = Reference::parse(reference).map_err(Error::Reference)?;
        let name = parsed.to_string();
        let _guard = self.pull_lock.lock().await;
        let local = self.local_base(reference, platform).await?;
        let refresh = match (&local, self.options.pull) {
            (None, _) => true,
            (Some(_), false) => false,
            (Some(img), true) => match self.registry.resolve_digest(&parsed).await {
                Ok(remote) => {
                    remote != img.manifest.digest
                        && img.index.as_ref().map(|i| &i.digest) != Some(&remote)
                }
                Err(source) => return Err(reg_err(source)),
            },
        };
        let image = if refresh {
            self.emit(BuildEvent::StepOutput {
                id,
                stream: crate::events::OutputStream::Stdout,
                line: format!("pulling {name} ({platform})").into_bytes(),
            });
            let pulled = self.pull_base(&parsed, platform).await.map_err(reg_err)?;
            // By descriptor, not by name: another target may retag the name meanwhile.
            let store = self.store.clone();
            blocking(move || {
                store
                    .load_image(Some(pulled.reference.to_string()), &pulled.manifest)
                    .map_err(Error::store(format!("read {}", pulled.reference)))
            })
            .await?
        } else {
            match local {
                Some(i) => i,
                None => return Err(Error::SourceNotFound { source_path: name }),
            }
        };
        base_from(&name, &image)
    }

    /// The image a `--build-context` names (`docker-image://`, `oci-layout://`); a
    /// directory context is not an image.
    pub async fn context_image(
        &self,
        name: &str,
        platform: &Platform,
        id: StepId,
    ) -> Result<BaseImage, Error> {
        match self.named.get(&name.to_ascii_lowercase()) {
            Some(OpenedContext::Image(reference)) => self.base_image(reference, platform, id).await,
            Some(OpenedContext::OciLayout { path, tag, digest }) => {
                let (store, path, tag, digest) = (
                    self.store.clone(),
                    path.clone(),
                    tag.clone(),
                    digest.clone(),
                );
                let shown = path.display().to_string();
                let image = blocking(move || {
                    store
                        .load_layout_image(&path, tag.as_deref(), digest.as_ref())
                        .map_err(Error::store(format!(
                            "read the OCI layout {}",
                            path.display()
                        )))
                })
                .await?;
                base_from(&shown, &image)
            }
            Some(OpenedContext::Dir(_)) => Err(Error::ContextKind {
                name: name.to_string(),
                reason: "it has files, not an image",
            }),
            None => Err(Error::SourceNotFound {
                source_path: format!("build context {name}"),
            }),
        }
    }

    /// The store's image `reference` for `platform`: an index tag's entry for it, or a
    /// single image whose config is for it (one for another platform is not used).
    async fn local_base(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<rbuild_store::Image>, Error> {
        let store = self.store.clone();
        let (raw, want) = (reference.to_string(), platform.clone());
        let found = blocking(move || match store.find_image_for(&raw, &want) {
            Err(rbuild_store::Error::NoPlatform(missing)) => Err(Error::BaseLacksPlatform {
                base: raw,
                platform: want.to_string(),
                available: missing.available,
            }),
            r => r.map_err(Error::store(format!("find {raw}"))),
        })
        .await?;
        Ok(found.filter(|image| {
            image.index.is_some()
                || ImageConfig::parse(&image.config_json)
                    .map(|c| c.os.is_empty() || platform.matches(&c.platform()))
                    .unwrap_or(true)
        }))
    }

    /// Pulls `reference` for `platform` (only its manifest and config with a remote cache).
    async fn pull_base(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<rbuild_registry::PulledImage, rbuild_registry::Error> {
        // The pull future is not `Send` for every lifetime (a rustc limitation with the
        // closures inside it), so it runs on a blocking thread of its own.
        let (registry, store, p) = (self.registry.clone(), self.store.clone(), reference.clone());
        let platform = platform.clone();
        let handle = tokio::runtime::Handle::current();
        // With a remote cache, only the manifest and config come now: the layers come
        // when a step needs their files, and a push mounts them.
        let lazy = !self.options.cache_from.is_empty();
        tokio::task::spawn_blocking(move || {
            handle.block_on(async {
                if lazy {
                    registry.pull_lazy(&store, &p, Some(&platform)).await
                } else {
                    registry
                        .pull(&store, &p, Some(&platform), Arc::new(NoProgress))
                        .await
                }
            })
        })
        .await
        .unwrap_or_else(|e| Err(rbuild_registry::Error::Task(e)))
    }

    /// The overlay lowers of `layers`, top-most first (unpacking what is not yet, and
    /// fetching first the blobs of lazily resolved layers that are not unpacked). A failure
    /// while a layer of an imported record is among them is [`Error::CachedLayer`].
    pub async fn lowers(&self, layers: &[LayerRef]) -> Result<Vec<PathBuf>, Error> {
        let store = self.store.clone();
        let diffs: Vec<DiffId> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let missing: Vec<usize> = blocking(move || {
            let mut parent: Option<ChainId> = None;
            let mut missing = Vec::new();
            for (i, d) in diffs.iter().enumerate() {
                let chain = ChainId::child(parent.as_ref(), d);
                if store.snapshot_path(&chain).is_none() {
                    missing.push(i);
                }
                parent = Some(chain);
            }
            Ok(missing)
        })
        .await?;
        let fetches = missing
            .iter()
            .map(|&i| self.fetch_blob(&layers[i].descriptor));
        futures::future::try_join_all(fetches).await?;
        let snapshotter = self.snapshotter.clone();
        let descs: Vec<Descriptor> = layers.iter().map(|l| l.descriptor.clone()).collect();
        let diffs: Vec<DiffId> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let viewed = blocking(move || {
            snapshotter
                .view(&descs, &diffs)
                .map_err(Error::store("unpack the layers"))
        })
        .await;
        // A layer of an imported record unpacked here for the first time is the likely
        // culprit (a diffID that does not match, or no layer tar at all).
        let imported = missing.iter().find_map(|&i| {
            let digest = &layers[i].descriptor.digest;
            self.imported.origin(digest).map(|c| (c, digest))
        });
        match (viewed, imported) {
            (Err(source), Some((cache, digest))) => Err(Error::CachedLayer {
                cache: cache.to_string(),
                layer: digest.clone(),
                source: Box::new(source),
            }),
            (viewed, _) => viewed,
        }
    }

    /// Makes sure `blob` is in the store: from a `type=local` cache directory, else from a
    /// registry repository the store knows holds it. Nothing happens when it is there. A
    /// failure for a layer of an imported record is [`Error::CachedLayer`].
    pub async fn fetch_blob(&self, blob: &Descriptor) -> Result<(), Error> {
        let fetched = self.fetch_blob_from_source(blob).await;
        match (fetched, self.imported.origin(&blob.digest)) {
            (Err(source), Some(cache)) => Err(Error::CachedLayer {
                cache: cache.to_string(),
                layer: blob.digest.clone(),
                source: Box::new(source),
            }),
            (fetched, _) => fetched,
        }
    }

    async fn fetch_blob_from_source(&self, blob: &Descriptor) -> Result<(), Error> {
        if self.store.blobs().contains(&blob.digest) {
            return Ok(());
        }
        if let Some(path) = self.imported.local_blobs.get(&blob.digest) {
            let (store, path, digest) = (self.store.clone(), path.clone(), blob.digest.clone());
            return blocking(move || {
                let file = std::fs::File::open(&path).map_err(Error::io("open", &path))?;
                store
                    .blobs()
                    .ingest(file, Some(&digest))
                    .map_err(Error::store(format!("ingest {}", path.display())))?;
                Ok(())
            })
            .await;
        }
        self.emit(BuildEvent::Progress(format!(
            "fetching layer {} ({} bytes) from the registry",
            blob.digest, blob.size
        )));
        self.registry
            .fetch_blob(&self.store, blob, Arc::new(NoProgress))
            .await
            .map_err(|source| Error::Registry {
                reference: format!("layer {}", blob.digest),
                source,
            })
    }

    /// The record under `key`: this store's, else an imported one (with the name of the
    /// cache it came from).
    pub async fn cache_find(
        &self,
        key: &CacheKey,
    ) -> Result<Option<(StepRecord, Option<Arc<str>>)>, Error> {
        if let Some(r) = self.cache_get(key).await? {
            return Ok(Some((r, None)));
        }
        Ok(self
            .imported
            .records
            .get(key)
            .map(|i| (i.record.clone(), Some(i.from.clone()))))
    }

    /// Notes that this build used `record` under `key` (hit or written), for `--cache-to`.
    pub fn note_used(&self, key: &CacheKey, record: &StepRecord) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*key, record.clone());
    }

    /// The records this build used.
    pub fn used_records(&self) -> BTreeMap<CacheKey, StepRecord> {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The record cached under `key` in this store, if any.
    pub async fn cache_get(&self, key: &CacheKey) -> Result<Option<StepRecord>, Error> {
        let store = self.store.clone();
        let digest = key_digest(key);
        blocking(move || {
            let Some(rec) = store
                .cache_get(&digest)
                .map_err(Error::store(format!("read cache record {digest}")))?
            else {
                return Ok(None);
            };
            // A record this version cannot read is a miss, not an error.
            Ok(record_from_store(&rec))
        })
        .await
    }

    /// Remembers `record` under `key`.
    pub async fn cache_put(&self, key: &CacheKey, record: StepRecord) -> Result<(), Error> {
        self.note_used(key, &record);
        let store = self.store.clone();
        let digest = key_digest(key);
        let created = super::time::created(self.options.source_date_epoch);
        blocking(move || {
            let rec = record_to_store(&record, created);
            store
                .cache_put(&digest, &rec)
                .map_err(Error::store(format!("write cache record {digest}")))
        })
        .await
    }
}

fn key_digest(key: &CacheKey) -> Digest {
    // A CacheKey is always 32 bytes of hex: from_hex cannot fail on it.
    Digest::from_hex(&key.hex()).unwrap_or_else(|_| Digest::of(key.hex().as_bytes()))
}

fn record_to_store(record: &StepRecord, created: String) -> rbuild_store::CacheRecord {
    rbuild_store::CacheRecord {
        // The store's CACHE_RECORD_VERSION (not re-exported by the store).
        version: 1,
        chain_id: None,
        layer: record.layer.as_ref().map(|l| l.descriptor.clone()),
        config_json: serde_json::to_value(record).unwrap_or_default(),
        created,
    }
}

fn record_from_store(rec: &rbuild_store::CacheRecord) -> Option<StepRecord> {
    // Read in place: a clone of the value first would copy every map of the config.
    serde::Deserialize::deserialize(&rec.config_json).ok()
}

/// A stored image as a stage's base: its config and layers.
fn base_from(name: &str, image: &rbuild_store::Image) -> Result<BaseImage, Error> {
    let config = ImageConfig::parse(&image.config_json).map_err(|source| Error::Config {
        what: name.to_string(),
        source,
    })?;
    let descs = manifest_layers(name, &image.manifest_json)?;
    let layers = descs
        .into_iter()
        .zip(config.rootfs.diff_ids.iter())
        .map(|(descriptor, d)| {
            let diff_id = DiffId::from_str(d).map_err(Error::store(format!("read diff id {d}")))?;
            Ok(LayerRef {
                descriptor,
                diff_id,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(BaseImage {
        config,
        layers,
        manifest: image.manifest.digest.clone(),
    })
}
