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
use rbuild_store::{ChainId, Descriptor, DiffId, Digest, Overlay, Snapshotter, Store};
use serde::{Deserialize, Serialize};

use super::cachekey::CacheKey;
use super::context_dir::ContextDir;
use super::remote_cache::ImportedCache;
use super::state::LayerRef;
use super::BuildOptions;
use crate::events::{BuildEvent, EventSink, StepId};
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
    /// The context.
    pub context: ContextDir,
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
    pub imported: ImportedCache,
    next_id: AtomicUsize,
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

impl BuildCtx {
    /// The context for one build.
    #[allow(clippy::too_many_arguments)] // each is one of the build's parts, once
    pub fn new(
        store: Store,
        registry: rbuild_registry::Client,
        options: BuildOptions,
        events: Arc<dyn EventSink>,
        context: ContextDir,
        dockerfile: String,
        graph: &StepGraph,
        next_id: usize,
    ) -> BuildCtx {
        let platform = options
            .platform
            .as_deref()
            .and_then(|p| parse_platform(p).ok())
            .unwrap_or_else(Platform::host);
        BuildCtx {
            snapshotter: Arc::new(Overlay::new(store.clone())),
            store,
            registry,
            options,
            events,
            context,
            dockerfile,
            lexer: graph.lexer(),
            global_args: graph.global_args.clone(),
            sandbox: rbuild_runner::Sandbox::new(),
            platform,
            imported: ImportedCache::default(),
            next_id: AtomicUsize::new(next_id),
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

    /// A base image: the local one when the store has it (unless `--pull` finds the
    /// registry's is different), else pulled.
    pub async fn base_image(&self, reference: &str, id: StepId) -> Result<BaseImage, Error> {
        let reg_err = |source| Error::Registry {
            reference: reference.to_string(),
            source,
        };
        let parsed = Reference::parse(reference).map_err(Error::Reference)?;
        let name = parsed.to_string();
        let _guard = self.pull_lock.lock().await;
        let store = self.store.clone();
        let raw = reference.to_string();
        let local = blocking(move || {
            store
                .find_image(&raw)
                .map_err(Error::store(format!("find {raw}")))
        })
        .await?;
        let refresh = match (&local, self.options.pull) {
            (None, _) => true,
            (Some(_), false) => false,
            (Some(img), true) => match self.registry.resolve_digest(&parsed).await {
                Ok(remote) => remote != img.manifest.digest,
                Err(source) => return Err(reg_err(source)),
            },
        };
        let image = if refresh {
            let platform = self.platform.clone();
            self.emit(BuildEvent::StepOutput {
                id,
                stream: crate::events::OutputStream::Stdout,
                line: format!("pulling {name}").into_bytes(),
            });
            // The pull future is not `Send` for every lifetime (a rustc limitation with the
            // closures inside it), so it runs on a blocking thread of its own.
            let (registry, store, p) = (self.registry.clone(), self.store.clone(), parsed.clone());
            let handle = tokio::runtime::Handle::current();
            // With a remote cache, only the manifest and config come now: the layers come
            // when a step needs their files, and a push mounts them.
            let lazy = !self.options.cache_from.is_empty();
            let pulled = tokio::task::spawn_blocking(move || {
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
            .map_err(Error::Task)?
            .map_err(reg_err)?;
            let store = self.store.clone();
            let n = pulled.reference.to_string();
            blocking(move || {
                store
                    .find_image(&n)
                    .map_err(Error::store(format!("find {n}")))?
                    .ok_or_else(|| Error::SourceNotFound { source_path: n })
            })
            .await?
        } else {
            match local {
                Some(i) => i,
                None => return Err(Error::SourceNotFound { source_path: name }),
            }
        };
        let config = ImageConfig::parse(&image.config_json).map_err(|source| Error::Config {
            what: name.clone(),
            source,
        })?;
        let descs = manifest_layers(&name, &image.manifest_json)?;
        let layers = descs
            .into_iter()
            .zip(config.rootfs.diff_ids.iter())
            .map(|(descriptor, d)| {
                let diff_id =
                    DiffId::from_str(d).map_err(Error::store(format!("read diff id {d}")))?;
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
    serde_json::from_value(rec.config_json.clone()).ok()
}
