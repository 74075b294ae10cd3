//! The remote cache's one document: the config blob of the exported OCI image manifest
//! (media type [`CONFIG_MEDIA_TYPE`]) holding the records (cache key → the image config after
//! the step, the index of its layer among the manifest's layers and that layer's diffID),
//! and its decoder, which refuses anything it cannot fully check.

use std::collections::{BTreeMap, BTreeSet};

use rbuild_store::{Descriptor, DiffId, Digest, ImageConfig, Manifest};
use serde::{Deserialize, Serialize};

use crate::solver::cachekey::{CacheKey, VERSION};
use crate::solver::ctx::StepRecord;
use crate::solver::state::LayerRef;

/// The media type of the config of an exported cache manifest.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The largest cache config an import reads: the registry client's cap on small blobs
/// (records carry the image config after each step, ~2-8 KiB each for usual builds).
pub const MAX_CONFIG_SIZE: u64 = rbuild_registry::MAX_MANIFEST_SIZE;

const SCHEMA_VERSION: u32 = 1;

const LAYER_MEDIA_TYPES: [&str; 5] = [
    rbuild_store::MEDIA_TYPE_OCI_LAYER,
    rbuild_store::MEDIA_TYPE_OCI_LAYER_GZIP,
    rbuild_store::MEDIA_TYPE_OCI_LAYER_ZSTD,
    rbuild_store::MEDIA_TYPE_DOCKER_LAYER,
    rbuild_store::MEDIA_TYPE_DOCKER_LAYER_GZIP,
];

/// The config document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CacheConfig {
    schema_version: u32,
    /// [`VERSION`] of the keys: records of another key schema can never match.
    key_version: String,
    records: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    /// The cache key, 64 hex digits.
    key: String,
    /// Index into the manifest's layers of the layer the step added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer: Option<usize>,
    /// That layer's diffID.
    #[serde(default, rename = "diffID", skip_serializing_if = "Option::is_none")]
    diff_id: Option<DiffId>,
    /// The image config after the step.
    config: ImageConfig,
    /// Per-source content digests of a COPY/ADD (for the miss explanation).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sources: BTreeMap<String, String>,
}

/// Why a cache document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// What a decoded document gives.
#[derive(Debug)]
pub enum Decoded {
    /// Records to use.
    Records(Vec<(CacheKey, StepRecord)>),
    /// A well-formed document whose keys were made by another key schema: no record can
    /// match, and the reason says so.
    OtherKeyVersion(String),
}

/// The config bytes and manifest layers for `records`, whose layer descriptors are the
/// compressed blobs the manifest will list.
pub fn encode(records: &BTreeMap<CacheKey, StepRecord>) -> (Vec<u8>, Vec<Descriptor>) {
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut entries = Vec::with_capacity(records.len());
    for (key, record) in records {
        let (layer, diff_id) = match &record.layer {
            None => (None, None),
            Some(l) => {
                let i = match layers.iter().position(|d| d.digest == l.descriptor.digest) {
                    Some(i) => i,
                    None => {
                        let mut d = l.descriptor.clone();
                        d.annotations.clear();
                        layers.push(d);
                        layers.len() - 1
                    }
                };
                (Some(i), Some(l.diff_id.clone()))
            }
        };
        entries.push(Entry {
            key: key.hex(),
            layer,
            diff_id,
            config: record.config.clone(),
            sources: record.sources.clone(),
        });
    }
    let doc = CacheConfig {
        schema_version: SCHEMA_VERSION,
        key_version: VERSION.to_string(),
        records: entries,
    };
    // Serializing plain structs, strings and maps cannot fail.
    let bytes = rbuild_store::canonical_json(&doc).unwrap_or_default();
    (bytes, layers)
}

/// The top-level key of an image config that holds inline cache records (`type=inline`).
pub const INLINE_KEY: &str = "rbuild.cache.v1";

/// The inline form of `records` for an image whose layers are `image_layers` (bottom
/// first): the same document, with layer indexes into the image's layers. Records whose
/// layer is not in the image are left out (`type=inline` is `mode=min`).
pub fn encode_inline(
    records: &BTreeMap<CacheKey, StepRecord>,
    image_layers: &[LayerRef],
) -> serde_json::Value {
    let entries = records
        .iter()
        .filter_map(|(key, record)| {
            let (layer, diff_id) = match &record.layer {
                None => (None, None),
                Some(l) => {
                    let i = image_layers.iter().position(|t| t.diff_id == l.diff_id)?;
                    (Some(i), Some(l.diff_id.clone()))
                }
            };
            Some(Entry {
                key: key.hex(),
                layer,
                diff_id,
                config: record.config.clone(),
                sources: record.sources.clone(),
            })
        })
        .collect();
    let doc = CacheConfig {
        schema_version: SCHEMA_VERSION,
        key_version: VERSION.to_string(),
        records: entries,
    };
    serde_json::to_value(&doc).unwrap_or(serde_json::Value::Null)
}

const IMAGE_CONFIG_TYPES: [&str; 2] = [
    rbuild_store::MEDIA_TYPE_OCI_CONFIG,
    rbuild_store::MEDIA_TYPE_DOCKER_CONFIG,
];

/// Decodes and checks a cache manifest and its config: the manifest is an OCI image
/// manifest whose config has [`CONFIG_MEDIA_TYPE`] and whose layers are layer blobs; every
/// record's key is a key, its layer index exists, and one layer has one diffID. Anything
/// else refuses the whole document: a half-trusted cache is worse than none. Layer digests
/// are checked when a blob is fetched and diffIDs when it is unpacked.
pub fn decode(manifest: &Manifest, config_json: &[u8]) -> Result<Decoded, Refused> {
    let refuse = |s: String| Err(Refused(s));
    let inline = IMAGE_CONFIG_TYPES.contains(&manifest.config.media_type.as_str());
    if let Some(mt) = &manifest.media_type {
        let image = mt == rbuild_store::MEDIA_TYPE_OCI_MANIFEST
            || (inline && mt == rbuild_store::MEDIA_TYPE_DOCKER_MANIFEST);
        if !image {
            return refuse(format!(
                "manifest media type {mt} is not an OCI image manifest"
            ));
        }
    }
    if manifest.config.media_type != CONFIG_MEDIA_TYPE && !inline {
        return refuse(format!(
            "config media type {} is not {CONFIG_MEDIA_TYPE} (not an rbuild cache)",
            manifest.config.media_type
        ));
    }
    for l in &manifest.layers {
        if !LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()) {
            return refuse(format!(
                "layer {} has media type {}",
                l.digest, l.media_type
            ));
        }
        if l.size == 0 {
            return refuse(format!("layer {} has size 0", l.digest));
        }
    }
    // An image's config holds inline records under INLINE_KEY, checked against its diffIDs.
    let mut image_diff_ids: Option<Vec<DiffId>> = None;
    let parsed = if inline {
        let image: ImageConfig = match serde_json::from_slice(config_json) {
            Ok(c) => c,
            Err(e) => return refuse(format!("image config does not parse: {e}")),
        };
        let Some(records) = image.extra.get(INLINE_KEY) else {
            return refuse(format!(
                "an image without inline cache records (no {INLINE_KEY} in its config): \
                 not an rbuild cache"
            ));
        };
        let mut ids = Vec::new();
        for d in &image.rootfs.diff_ids {
            match d.parse::<DiffId>() {
                Ok(id) => ids.push(id),
                Err(_) => return refuse(format!("image diffID {d:?} is not a digest")),
            }
        }
        if ids.len() != manifest.layers.len() {
            return refuse("image has more or fewer diffIDs than layers".to_string());
        }
        image_diff_ids = Some(ids);
        serde_json::from_value::<CacheConfig>(records.clone())
    } else {
        serde_json::from_slice::<CacheConfig>(config_json)
    };
    let doc = match parsed {
        Ok(d) => d,
        Err(e) => return refuse(format!("config is not a cache record list: {e}")),
    };
    if doc.schema_version != SCHEMA_VERSION {
        return refuse(format!(
            "schema version {} (this rbuild reads {SCHEMA_VERSION})",
            doc.schema_version
        ));
    }
    if doc.key_version != VERSION {
        return Ok(Decoded::OtherKeyVersion(format!(
            "its keys are {} and this rbuild's are {VERSION}",
            doc.key_version
        )));
    }
    let mut diff_of: BTreeMap<Digest, DiffId> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(doc.records.len());
    for e in doc.records {
        let Some(key) = CacheKey::from_hex(&e.key) else {
            return refuse(format!("record key {:?} is not 64 hex digits", e.key));
        };
        if !seen.insert(key) {
            return refuse(format!("record key {} appears twice", e.key));
        }
        let layer = match (e.layer, e.diff_id) {
            (None, None) => None,
            (Some(i), Some(diff_id)) => {
                let Some(descriptor) = manifest.layers.get(i) else {
                    return refuse(format!(
                        "record {} names layer {i} of {}",
                        e.key,
                        manifest.layers.len()
                    ));
                };
                if let Some(ids) = &image_diff_ids {
                    if ids[i] != diff_id {
                        return refuse(format!(
                            "record {} disagrees with layer {i}'s diffID",
                            e.key
                        ));
                    }
                }
                // One blob has one diffID, whichever index names it.
                if let Some(other) = diff_of.insert(descriptor.digest.clone(), diff_id.clone()) {
                    if other != diff_id {
                        return refuse(format!("layer {} has two diffIDs", descriptor.digest));
                    }
                }
                Some(LayerRef {
                    descriptor: descriptor.clone(),
                    diff_id,
                })
            }
            _ => return refuse(format!("record {} has a layer without a diffID", e.key)),
        };
        out.push((
            key,
            StepRecord {
                config: e.config,
                layer,
                sources: e.sources,
            },
        ));
    }
    Ok(Decoded::Records(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::cachekey::KeyEncoder;
    use rbuild_store::{MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_MANIFEST};

    fn sample() -> (Manifest, Vec<u8>) {
        let blob = Descriptor::new(MEDIA_TYPE_OCI_LAYER_GZIP, Digest::of(b"gz"), 2);
        let diff = DiffId::from(Digest::of(b"tar"));
        let mut records = BTreeMap::new();
        for (i, name) in ["a", "b"].iter().enumerate() {
            let key = KeyEncoder::new("RUN", None).str("n", name).clone().finish();
            records.insert(
                key,
                StepRecord {
                    config: ImageConfig::default(),
                    layer: (i == 0).then(|| LayerRef {
                        descriptor: blob.clone(),
                        diff_id: diff.clone(),
                    }),
                    sources: BTreeMap::new(),
                },
            );
        }
        let (config, layers) = encode(&records);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.into()),
            config: Descriptor::new(CONFIG_MEDIA_TYPE, Digest::of(&config), config.len() as u64),
            layers,
            annotations: BTreeMap::new(),
        };
        (manifest, config)
    }

    #[test]
    fn round_trip() {
        let (m, c) = sample();
        let Decoded::Records(r) = decode(&m, &c).unwrap() else {
            panic!("other key version")
        };
        assert_eq!(r.len(), 2);
        assert_eq!(r.iter().filter(|(_, s)| s.layer.is_some()).count(), 1);
        assert_eq!(m.layers.len(), 1);
    }

    #[test]
    fn inline_records_are_checked_against_the_image_diff_ids() {
        let (m, c) = sample();
        let Decoded::Records(records) = decode(&m, &c).unwrap() else {
            panic!("other key version")
        };
        let records: BTreeMap<CacheKey, StepRecord> = records.into_iter().collect();
        let layer = records.values().find_map(|r| r.layer.clone()).unwrap();
        let mut image = ImageConfig::default();
        image.rootfs.diff_ids = vec![layer.diff_id.to_string()];
        image.extra.insert(
            INLINE_KEY.into(),
            encode_inline(&records, std::slice::from_ref(&layer)),
        );
        let mut manifest = m.clone();
        manifest.config.media_type = rbuild_store::MEDIA_TYPE_OCI_CONFIG.into();
        let Decoded::Records(back) = decode(&manifest, &image.to_json()).unwrap() else {
            panic!("other key version")
        };
        assert_eq!(back.len(), 2);
        image.rootfs.diff_ids = vec![DiffId::from(Digest::of(b"other")).to_string()];
        let e = decode(&manifest, &image.to_json()).unwrap_err();
        assert!(e.0.contains("disagrees with layer 0"), "{e:?}");
        image.extra.clear();
        let e = decode(&manifest, &image.to_json()).unwrap_err();
        assert!(e.0.contains("not an rbuild cache"), "{e:?}");
    }

    #[test]
    fn one_blob_listed_twice_with_two_diff_ids_is_refused() {
        let (mut m, _) = sample();
        m.layers.push(m.layers[0].clone());
        let config = serde_json::json!({
            "schemaVersion": 1, "keyVersion": VERSION,
            "records": [
                {"key": "ab".repeat(32), "layer": 0,
                 "diffID": DiffId::from(Digest::of(b"one")), "config": {}},
                {"key": "cd".repeat(32), "layer": 1,
                 "diffID": DiffId::from(Digest::of(b"two")), "config": {}}
            ]
        });
        let e = decode(&m, config.to_string().as_bytes()).unwrap_err();
        assert!(e.0.contains("has two diffIDs"), "{e:?}");
    }

    #[test]
    fn garbage_and_inconsistent_documents_are_refused() {
        let (m, c) = sample();
        assert!(decode(&m, b"\x00garbage").is_err());
        assert!(decode(&m, b"{}").is_err());
        let mut foreign = m.clone();
        foreign.config.media_type = rbuild_store::MEDIA_TYPE_OCI_CONFIG.into();
        assert!(decode(&foreign, &c)
            .unwrap_err()
            .0
            .contains("not an rbuild cache"));
        let mut no_layers = m.clone();
        no_layers.layers.clear();
        assert!(decode(&no_layers, &c)
            .unwrap_err()
            .0
            .contains("names layer 0 of 0"));
        let bad_key =
            String::from_utf8(c.clone())
                .unwrap()
                .replacen("\"key\":\"", "\"key\":\"zz", 1);
        assert!(decode(&m, bad_key.as_bytes())
            .unwrap_err()
            .0
            .contains("not 64 hex"));
        let other = String::from_utf8(c)
            .unwrap()
            .replace(VERSION, "rbuild-cache-v1");
        assert!(matches!(
            decode(&m, other.as_bytes()),
            Ok(Decoded::OtherKeyVersion(_))
        ));
    }
}
