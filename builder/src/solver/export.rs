//! The end of a build: the target stage's config finished (`created`, `--label`s, diff
//! ids), written with its manifest into the store, and tagged; for several platforms, the
//! images joined in one index, which is tagged.

use rbuild_store::{Descriptor, Digest, Platform};

use super::ctx::{blocking, BuildCtx};
use super::remote_cache::format;
use super::remote_cache::selected_records;
use super::remote_cache::spec::{CacheLocation, CacheMode};
use super::state::StageResult;
use crate::Error;

/// A built image.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image ID: the config's digest (the index's digest for several platforms).
    pub image_id: Digest,
    /// The manifest's descriptor in the store (the index's for several platforms).
    pub manifest: Descriptor,
    /// The names it was tagged as.
    pub tags: Vec<String>,
    /// For several platforms, each one's manifest (with its `platform`); else empty.
    pub platforms: Vec<Descriptor>,
}

/// Writes the target's image and tags it.
pub async fn export(ctx: &BuildCtx, target: &StageResult) -> Result<Built, Error> {
    let (image_id, manifest) = write_image(ctx, target).await?;
    let store = ctx.store.clone();
    let tags = ctx.options.tags.clone();
    blocking(move || {
        for t in &tags {
            store
                .tag(t, &manifest)
                .map_err(Error::store(format!("tag {t}")))?;
        }
        Ok(Built {
            image_id,
            manifest,
            tags,
            platforms: Vec::new(),
        })
    })
    .await
}

/// Writes one index over the images of each platform (`images`: platform, manifest) and
/// tags it with `tags`.
pub async fn export_index(
    ctx: &BuildCtx,
    images: Vec<(Platform, Descriptor)>,
) -> Result<Built, Error> {
    let store = ctx.store.clone();
    let tags = ctx.options.tags.clone();
    let descriptor_annotations = ctx.options.descriptor_annotations.clone();
    blocking(move || {
        let entries: Vec<Descriptor> = images
            .into_iter()
            .map(|(platform, mut d)| {
                d.annotations.clear();
                d.platform = Some(platform);
                d
            })
            .collect();
        let mut index = store
            .put_index(&entries)
            .map_err(Error::store("write the image index"))?;
        index.annotations.extend(descriptor_annotations);
        for t in &tags {
            store
                .tag(t, &index)
                .map_err(Error::store(format!("tag {t}")))?;
        }
        Ok(Built {
            image_id: index.digest.clone(),
            manifest: index,
            tags,
            platforms: entries,
        })
    })
    .await
}

/// Writes the target's config and manifest into the store: (image ID, manifest).
pub async fn write_image(
    ctx: &BuildCtx,
    target: &StageResult,
) -> Result<(Digest, Descriptor), Error> {
    let mut config = target.config.clone();
    // The image's time is its last step's (BuildKit's rule): a rebuild from the cache
    // gives the same config, so the same image ID.
    config.created = match ctx.options.source_date_epoch {
        Some(epoch) => Some(super::time::created(Some(epoch))),
        None => config
            .history
            .last()
            .and_then(|h| h.created.clone())
            .or_else(|| Some(super::time::created(None))),
    };
    if !ctx.options.labels.is_empty() {
        let labels = config.config.labels.get_or_insert_with(Default::default);
        for (k, v) in &ctx.options.labels {
            labels.insert(k.clone(), v.clone());
        }
    }
    // `--cache-to type=inline`: the records of the image's layers ride in its config.
    let inline = ctx
        .options
        .cache_to
        .iter()
        .any(|e| e.location == CacheLocation::Inline);
    if inline {
        let records = selected_records(&ctx.used_records(), target, CacheMode::Min);
        config.extra.insert(
            format::INLINE_KEY.to_string(),
            format::encode_inline(&records, &target.layers),
        );
    }
    config.rootfs.diff_ids = target
        .layers
        .iter()
        .map(|l| l.diff_id.to_string())
        .collect();
    if config.architecture.is_empty() {
        config.architecture = ctx.platform.architecture.clone();
    }
    if config.os.is_empty() {
        config.os = ctx.platform.os.clone();
    }
    let json = config.to_json();
    let layers: Vec<Descriptor> = target.layers.iter().map(|l| l.descriptor.clone()).collect();
    let store = ctx.store.clone();
    let manifest_annotations = ctx.options.manifest_annotations.clone();
    let descriptor_annotations = ctx.options.descriptor_annotations.clone();
    blocking(move || {
        let mut manifest = store
            .put_image_annotated(&json, &layers, &manifest_annotations)
            .map_err(Error::store("write the image"))?;
        manifest.annotations.extend(descriptor_annotations);
        Ok((Digest::of(&json), manifest))
    })
    .await
}
