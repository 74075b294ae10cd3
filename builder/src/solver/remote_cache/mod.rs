//! The remote cache: records imported from `--cache-from` before the steps run (a warning,
//! never a failure, when a ref is unreachable, missing, foreign or garbage) and the records
//! a build used exported to `--cache-to` after it, as one OCI image manifest per ref
//! (blobs first, manifest last) or an OCI layout directory.

pub mod format;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbuild_registry::NoProgress;
use rbuild_store::{error_chain, Descriptor, Digest, Index, LayerType, Manifest, Reference, Store};

use super::cachekey::CacheKey;
use super::ctx::{blocking, BuildCtx, StepRecord};
use super::state::{LayerRef, StageResult};
use crate::events::{BuildEvent, EventSink};
use crate::Error;
use format::{Decoded, CONFIG_MEDIA_TYPE, MAX_CONFIG_SIZE};
use spec::{CacheExport, CacheImport, CacheLocation, CacheMode};

/// A record read from a `--cache-from`, with where it came from.
#[derive(Debug, Clone)]
pub struct ImportedRecord {
    /// The record (its layer descriptor is the compressed blob of the cache).
    pub record: StepRecord,
    /// The cache it came from, as named on the command line.
    pub from: Arc<str>,
}

/// Everything the `--cache-from`s gave.
#[derive(Debug, Default)]
pub struct ImportedCache {
    /// Records by key; the first `--cache-from` that has a key wins.
    pub records: BTreeMap<CacheKey, ImportedRecord>,
    /// Blobs of `type=local` caches: digest → file.
    pub local_blobs: BTreeMap<Digest, PathBuf>,
    /// The names of the caches that were read, in command-line order.
    pub names: Vec<String>,
    /// The cache each imported record's layer blob came from: a blob that turns out not to
    /// be what its record says makes the build run again without that cache.
    pub layer_origin: BTreeMap<Digest, Arc<str>>,
}

impl ImportedCache {
    /// The cache `blob` was imported from, if it is a layer of an imported record.
    pub fn origin(&self, blob: &Digest) -> Option<&Arc<str>> {
        self.layer_origin.get(blob)
    }
}

fn progress(events: &dyn EventSink, line: String) {
    events.event(BuildEvent::Progress(line));
}

/// Reads every `--cache-from`. A cache that cannot be read is one warning line.
pub async fn import(
    store: &Store,
    registry: &rbuild_registry::Client,
    imports: &[CacheImport],
    events: &dyn EventSink,
) -> ImportedCache {
    let mut cache = ImportedCache::default();
    for i in imports {
        let name = i.location.name();
        progress(events, format!("importing cache manifest from {name}"));
        let got = match &i.location {
            CacheLocation::Registry(r) => import_registry(store, registry, r).await,
            CacheLocation::Local(dir) => import_local(dir).await,
            CacheLocation::Inline => Err("type=inline is an export type".to_string()),
        };
        match got {
            Ok((Decoded::Records(records), blobs)) => {
                progress(
                    events,
                    format!("imported {} cache records from {name}", records.len()),
                );
                let from: Arc<str> = name.clone().into();
                for (key, record) in records {
                    if let Some(l) = &record.layer {
                        cache
                            .layer_origin
                            .entry(l.descriptor.digest.clone())
                            .or_insert_with(|| from.clone());
                    }
                    cache.records.entry(key).or_insert_with(|| ImportedRecord {
                        record,
                        from: from.clone(),
                    });
                }
                for (d, p) in blobs {
                    cache.local_blobs.entry(d).or_insert(p);
                }
                cache.names.push(name);
            }
            Ok((Decoded::OtherKeyVersion(why), _)) => {
                events.event(BuildEvent::Warning(format!("cache {name} not used: {why}")))
            }
            Err(why) => events.event(BuildEvent::Warning(format!("cache {name} not used: {why}"))),
        }
    }
    cache
}

type ImportResult = Result<(Decoded, BTreeMap<Digest, PathBuf>), String>;

async fn import_registry(
    store: &Store,
    registry: &rbuild_registry::Client,
    r: &Reference,
) -> ImportResult {
    let head = registry
        .fetch_image_head(r, None, MAX_CONFIG_SIZE)
        .await
        .map_err(|e| error_chain(&e))?;
    let manifest: Manifest = serde_json::from_slice(&head.manifest_json)
        .map_err(|e| format!("manifest does not parse: {e}"))?;
    let decoded = format::decode(&manifest, &head.config_json).map_err(|r| r.0)?;
    // Every layer must be there, with its size: a record whose layer is gone would fail the
    // build later, when a step needs it.
    registry
        .check_blobs(r, &manifest.layers)
        .await
        .map_err(|e| error_chain(&e))?;
    // The layers stay in the registry: the store notes where, so that a step that needs a
    // layer's files fetches it and a push mounts it.
    let (s, registry_name, repo) = (
        store.clone(),
        r.registry().to_string(),
        r.repository().to_string(),
    );
    let layers = manifest.layers.clone();
    tokio::task::spawn_blocking(move || {
        let mut sources = rbuild_store::MountSources::default();
        for l in &layers {
            sources.add(l.digest.as_str(), &registry_name, &repo);
        }
        s.save_mount_sources(&sources)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| {
        format!(
            "cannot record where the cache's layers are: {}",
            error_chain(&e)
        )
    })?;
    Ok((decoded, BTreeMap::new()))
}

/// Reads a blob of an OCI layout, verified, at most `max` bytes.
fn layout_blob(dir: &Path, d: &Descriptor, max: u64) -> Result<Vec<u8>, String> {
    if d.size > max {
        return Err(format!("{} is larger than {max} bytes", d.digest));
    }
    let path = blob_path(dir, &d.digest);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if Digest::of(&bytes) != d.digest || bytes.len() as u64 != d.size {
        return Err(format!("{} does not match its descriptor", path.display()));
    }
    Ok(bytes)
}

fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs/sha256").join(d.hex())
}

async fn import_local(dir: &Path) -> ImportResult {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let index_path = dir.join("index.json");
        let index: Index = serde_json::from_slice(
            &std::fs::read(&index_path).map_err(|e| format!("{}: {e}", index_path.display()))?,
        )
        .map_err(|e| format!("{}: {e}", index_path.display()))?;
        let entry = index
            .manifests
            .iter()
            .find(|m| m.media_type == rbuild_store::MEDIA_TYPE_OCI_MANIFEST)
            .ok_or_else(|| format!("{} names no image manifest", index_path.display()))?;
        let manifest: Manifest = serde_json::from_slice(&layout_blob(
            &dir,
            entry,
            rbuild_registry::MAX_MANIFEST_SIZE,
        )?)
        .map_err(|e| format!("manifest does not parse: {e}"))?;
        let config = layout_blob(&dir, &manifest.config, MAX_CONFIG_SIZE)?;
        let decoded = format::decode(&manifest, &config).map_err(|r| r.0)?;
        let mut blobs = BTreeMap::new();
        for l in &manifest.layers {
            let path = blob_path(&dir, &l.digest);
            match std::fs::metadata(&path) {
                Ok(m) if m.len() == l.size => {}
                Ok(m) => {
                    return Err(format!(
                        "{} is {} bytes, the manifest says {}",
                        path.display(),
                        m.len(),
                        l.size
                    ))
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
            blobs.insert(l.digest.clone(), path);
        }
        Ok((decoded, blobs))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Writes every `--cache-to`. A failed export fails the build unless `ignore-error=true`.
pub async fn export(ctx: &BuildCtx, target: &StageResult) -> Result<(), Error> {
    for e in &ctx.options.cache_to {
        if e.location == CacheLocation::Inline {
            continue;
        }
        let name = e.location.name();
        match export_one(ctx, target, e).await {
            Ok(()) => {}
            Err(err) if e.ignore_error => ctx.emit(BuildEvent::Warning(format!(
                "cache export to {name} failed (ignore-error=true): {}",
                error_chain(&err)
            ))),
            Err(err) => {
                return Err(Error::CacheExport {
                    cache: name,
                    source: Box::new(err),
                })
            }
        }
    }
    Ok(())
}

/// The records an export holds: with `mode=min` those whose layer is in the final image.
pub fn selected_records(
    used: &BTreeMap<CacheKey, StepRecord>,
    target: &StageResult,
    mode: CacheMode,
) -> BTreeMap<CacheKey, StepRecord> {
    used.iter()
        .filter(|(_, r)| match (mode, &r.layer) {
            (CacheMode::Max, _) => true,
            (CacheMode::Min, Some(l)) => target.layers.iter().any(|t| t.diff_id == l.diff_id),
            (CacheMode::Min, None) => false,
        })
        .map(|(k, r)| (*k, r.clone()))
        .collect()
}

async fn export_one(ctx: &BuildCtx, target: &StageResult, e: &CacheExport) -> Result<(), Error> {
    let name = e.location.name();
    let mut records = selected_records(&ctx.used_records(), target, e.mode);
    // Each layer compressed once, whatever the number of records naming it.
    let mut compressed: BTreeMap<Digest, Descriptor> = BTreeMap::new();
    for record in records.values_mut() {
        let Some(layer) = &mut record.layer else {
            continue;
        };
        let d = match compressed.get(&layer.descriptor.digest) {
            Some(d) => d.clone(),
            None => {
                let d = compressed_layer(ctx, &layer.descriptor, e).await?;
                compressed.insert(layer.descriptor.digest.clone(), d.clone());
                d
            }
        };
        *layer = LayerRef {
            descriptor: d,
            diff_id: layer.diff_id.clone(),
        };
    }
    let (config, layers) = format::encode(&records);
    ctx.emit(BuildEvent::Progress(format!(
        "exporting cache to {name}: {} records, {} layers",
        records.len(),
        layers.len()
    )));
    match &e.location {
        CacheLocation::Registry(r) => {
            let pushed = ctx
                .registry
                .push_artifact(
                    &ctx.store,
                    r,
                    CONFIG_MEDIA_TYPE,
                    &config,
                    &layers,
                    Arc::new(NoProgress),
                )
                .await
                .map_err(|source| Error::Registry {
                    reference: name.clone(),
                    source,
                })?;
            ctx.emit(BuildEvent::Progress(format!(
                "exported cache to {name}: digest: {} size: {}",
                pushed.digest, pushed.size
            )));
        }
        CacheLocation::Local(dir) => {
            for l in &layers {
                ctx.fetch_blob(l).await?;
            }
            let (store, dir, layers) = (ctx.store.clone(), dir.clone(), layers.clone());
            let digest = blocking(move || write_layout(&store, &dir, &config, &layers)).await?;
            ctx.emit(BuildEvent::Progress(format!(
                "exported cache to {name}: digest: {digest}"
            )));
        }
        CacheLocation::Inline => {}
    }
    Ok(())
}

/// The form of a record's layer in the cache: compressed as a push does (made once per
/// level and remembered), or as it is when it is compressed already (a layer imported from
/// a cache or pulled) unless `force-compression` asks for another format.
async fn compressed_layer(
    ctx: &BuildCtx,
    layer: &Descriptor,
    e: &CacheExport,
) -> Result<Descriptor, Error> {
    let wanted = e.compression.compression();
    match LayerType::parse(&layer.media_type).and_then(|t| t.compression) {
        Some(c) if c == wanted || !e.force_compression => return Ok(layer.clone()),
        _ => {}
    }
    ctx.fetch_blob(layer).await?;
    let (store, layer, compression) = (ctx.store.clone(), layer.clone(), e.compression);
    blocking(move || {
        store
            .compressed_layer(&layer, compression)
            .map_err(Error::store(format!("compress layer {}", layer.digest)))
    })
    .await
}

/// Writes an OCI layout at `dir`: blobs first (copied from the store), then `index.json`
/// naming the manifest, replaced by rename so a reader sees the old or the new one.
fn write_layout(
    store: &Store,
    dir: &Path,
    config: &[u8],
    layers: &[Descriptor],
) -> Result<Digest, Error> {
    let io = |what: &'static str, p: &Path| Error::io(what, p.to_path_buf());
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io("create directory", &blobs))?;
    let put = |bytes: &[u8]| -> Result<Digest, Error> {
        let d = Digest::of(bytes);
        let path = blob_path(dir, &d);
        if !path.is_file() {
            let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        }
        Ok(d)
    };
    for l in layers {
        let path = blob_path(dir, &l.digest);
        if path.is_file() {
            continue;
        }
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let mut reader = store
            .blobs()
            .open_verified(&l.digest)
            .map_err(Error::store(format!("read layer {}", l.digest)))?;
        let mut out = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        std::io::copy(&mut reader, &mut out).map_err(io("write", &tmp))?;
        out.sync_all().map_err(io("sync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    }
    let config_digest = put(config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(rbuild_store::MEDIA_TYPE_OCI_MANIFEST.to_string()),
        config: Descriptor::new(CONFIG_MEDIA_TYPE, config_digest, config.len() as u64),
        layers: layers.to_vec(),
        annotations: BTreeMap::new(),
    };
    let bytes = rbuild_store::canonical_json(&manifest).unwrap_or_default();
    let manifest_digest = put(&bytes)?;
    let layout = dir.join("oci-layout");
    std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io("write", &layout))?;
    let mut entry = Descriptor::new(
        rbuild_store::MEDIA_TYPE_OCI_MANIFEST,
        manifest_digest.clone(),
        bytes.len() as u64,
    );
    entry.annotations.insert(
        rbuild_store::ANNOTATION_REF_NAME.to_string(),
        "rbuild-cache".to_string(),
    );
    let index = Index {
        manifests: vec![entry],
        ..Index::default()
    };
    let index_bytes = rbuild_store::canonical_json(&index).unwrap_or_default();
    let index_path = dir.join("index.json");
    let tmp = dir.join(format!("index.json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &index_bytes).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, &index_path).map_err(io("rename", &index_path))?;
    Ok(manifest_digest)
}
