//! Multi-platform images in the store: an OCI index over per-platform manifests, and the
//! one way to pick a platform's image out of a tag that names an index.

use std::path::PathBuf;

use crate::error::MissingPlatform;
use crate::model::oci::MEDIA_TYPE_OCI_INDEX;
use crate::model::oci::{canonical_json, Descriptor, Index, MEDIA_TYPE_DOCKER_MANIFEST_LIST};
use crate::{Error, Image, Platform, Result, Store};

/// Whether `media_type` is an index (OCI) or a manifest list (Docker).
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST
}

impl Store {
    /// Writes an OCI index over `entries` (manifests in the store, each with its
    /// `platform`); returns its descriptor (not tagged: call [`Store::tag`]).
    pub fn put_index(&self, entries: &[Descriptor]) -> Result<Descriptor> {
        for e in entries {
            if e.platform.is_none() {
                return Err(Error::IndexEntryWithoutPlatform {
                    manifest: e.digest.clone(),
                });
            }
        }
        let index = Index {
            manifests: entries.to_vec(),
            ..Index::default()
        };
        let bytes = canonical_json(&index).map_err(|source| Error::Json {
            what: "index",
            path: PathBuf::from("<new index>"),
            source,
        })?;
        let digest = self.blobs().put(&bytes)?;
        Ok(Descriptor::new(
            MEDIA_TYPE_OCI_INDEX,
            digest,
            bytes.len() as u64,
        ))
    }

    /// The index `descriptor` names (read and verified).
    pub fn read_image_index(&self, descriptor: &Descriptor) -> Result<Index> {
        let bytes = self.blobs().read(&descriptor.digest)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: "index",
            path: self.blobs().path(&descriptor.digest),
            source,
        })
    }

    /// The image manifests of the index `descriptor` names, each with its platform
    /// (entries without one, or for `unknown/unknown` attestations, are left out).
    pub fn index_entries(&self, descriptor: &Descriptor) -> Result<Vec<Descriptor>> {
        Ok(self
            .read_image_index(descriptor)?
            .manifests
            .into_iter()
            .filter(|d| d.platform.as_ref().is_some_and(|p| !p.is_unknown()))
            .filter(|d| !is_index_media_type(&d.media_type))
            .collect())
    }

    /// [`Store::find_image`] for one platform: a tag naming an index gives the entry for
    /// `platform`, or [`Error::NoPlatform`] listing what the index has. A single image is
    /// returned as it is (the caller compares its config's platform).
    pub fn find_image_for(&self, name_or_id: &str, platform: &Platform) -> Result<Option<Image>> {
        let Some(image) = self.find_image(name_or_id)? else {
            return Ok(None);
        };
        let Some(index) = image.index.clone() else {
            return Ok(Some(image));
        };
        let entries = self.index_entries(&index)?;
        let chosen = entries
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .ok_or_else(|| {
                Error::NoPlatform(Box::new(MissingPlatform {
                    reference: name_or_id.to_owned(),
                    platform: platform.to_string(),
                    available: platform_list(&entries),
                }))
            })?;
        let mut found = self.load_manifest(image.name.clone(), chosen)?;
        found.index = Some(index);
        Ok(Some(found))
    }

    /// The entry `load_image` gives for an index: the host's platform, else the first.
    pub(crate) fn default_entry(&self, index: &Descriptor) -> Result<Descriptor> {
        let entries = self.index_entries(index)?;
        let host = Platform::host();
        entries
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| host.matches(p)))
            .or_else(|| entries.first())
            .cloned()
            .ok_or_else(|| Error::EmptyIndex {
                index: index.digest.clone(),
            })
    }
}

/// `linux/amd64, linux/arm64`: the platforms of index entries, as error messages list them.
pub fn platform_list(entries: &[Descriptor]) -> String {
    let names: Vec<String> = entries
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| p.normalized().to_string())
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
