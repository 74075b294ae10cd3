//! Images and tags: writing configs and manifests, `index.json` entries named by
//! `org.opencontainers.image.ref.name`, resolving a name or image-ID prefix.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::fsutil::write_atomic;
use crate::model::oci::{
    canonical_json, Descriptor, ImageFormat, Index, Manifest, ANNOTATION_REF_NAME,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::{Digest, Error, Result, Store};

/// An image in the store: its manifest and config, as stored bytes and descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The tag it was found under (None when resolved by ID and untagged).
    pub name: Option<String>,
    /// The manifest descriptor (as in `index.json`).
    pub manifest: Descriptor,
    /// The manifest bytes (digest-verified).
    pub manifest_json: Vec<u8>,
    /// The config descriptor (from the manifest).
    pub config: Descriptor,
    /// The config bytes (digest-verified).
    pub config_json: Vec<u8>,
    /// The index the tag names, when it names a multi-platform image (`manifest` is then
    /// one of its entries).
    pub index: Option<Descriptor>,
}

impl Image {
    /// The image ID (the config digest).
    pub fn id(&self) -> &Digest {
        &self.config.digest
    }

    /// The parsed manifest.
    pub fn parsed_manifest(&self) -> Result<Manifest> {
        serde_json::from_slice(&self.manifest_json).map_err(|source| Error::Json {
            what: "manifest",
            path: PathBuf::from(self.manifest.digest.to_string()),
            source,
        })
    }

    /// The parsed config (a `Value`, so Docker-only fields survive).
    pub fn parsed_config(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.config_json).map_err(|source| Error::Json {
            what: "image config",
            path: PathBuf::from(self.config.digest.to_string()),
            source,
        })
    }

    /// The `rootfs.diff_ids` of the config.
    pub fn diff_ids(&self) -> Result<Vec<crate::DiffId>> {
        let config = self.parsed_config()?;
        let bad = || Error::NoDiffIds {
            manifest: self.manifest.digest.clone(),
        };
        let ids = config
            .pointer("/rootfs/diff_ids")
            .and_then(|v| v.as_array())
            .ok_or_else(bad)?;
        ids.iter()
            .map(|v| v.as_str().ok_or_else(bad)?.parse())
            .collect()
    }

    /// Bytes of all layers plus config and manifest, as stored.
    pub fn size(&self) -> Result<u64> {
        let m = self.parsed_manifest()?;
        Ok(m.layers.iter().map(|l| l.size).sum::<u64>() + self.config.size + self.manifest.size)
    }
}

impl Store {
    /// Writes `config_json` (stored as given: serialize it canonically first, e.g. with
    /// [`crate::canonical_json`]) and an OCI manifest over `layers`; returns the manifest
    /// descriptor (not tagged: call [`Store::tag`]). The manifest is pure OCI whatever the
    /// layers came from: a Docker layer media type becomes its OCI equivalent (same blob).
    pub fn put_image(&self, config_json: &[u8], layers: &[Descriptor]) -> Result<Descriptor> {
        self.put_image_annotated(config_json, layers, &BTreeMap::new())
    }

    /// [`Store::put_image`] with `annotations` in the manifest.
    pub fn put_image_annotated(
        &self,
        config_json: &[u8],
        layers: &[Descriptor],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor> {
        let layers = layers
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l.media_type = ImageFormat::Oci.layer_media_type(&l.media_type)?.to_owned();
                Ok(l)
            })
            .collect::<Result<Vec<_>>>()?;
        let config_digest = self.blobs().put(config_json)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
            config: Descriptor::new(
                MEDIA_TYPE_OCI_CONFIG,
                config_digest,
                config_json.len() as u64,
            ),
            layers,
            annotations: annotations.clone(),
        };
        let bytes = canonical_json(&manifest).map_err(|source| Error::Json {
            what: "manifest",
            path: PathBuf::from("<new manifest>"),
            source,
        })?;
        let digest = self.blobs().put(&bytes)?;
        Ok(Descriptor::new(
            MEDIA_TYPE_OCI_MANIFEST,
            digest,
            bytes.len() as u64,
        ))
    }

    /// Points tag `name` (a full normalized reference) at `manifest` in `index.json`,
    /// replacing any previous image of that name. The manifest blob must be in the store.
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<()> {
        if !self.blobs().contains(&manifest.digest) {
            return Err(Error::BlobNotFound {
                digest: manifest.digest.to_string(),
            });
        }
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) != Some(name));
        let mut entry = manifest.clone();
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.to_owned(), name.to_owned());
        index.manifests.push(entry);
        index.manifests.sort_by(|a, b| {
            (a.annotations.get(ANNOTATION_REF_NAME), &a.digest)
                .cmp(&(b.annotations.get(ANNOTATION_REF_NAME), &b.digest))
        });
        self.write_index(&index)
    }

    /// Removes tag `name`; false when there was no such tag.
    pub fn untag(&self, name: &str) -> Result<bool> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        index
            .manifests
            .retain(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) != Some(name));
        if index.manifests.len() == before {
            return Ok(false);
        }
        self.write_index(&index)?;
        Ok(true)
    }

    /// Every tagged image (one per tag), sorted by name.
    pub fn images(&self) -> Result<Vec<Image>> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for d in &index.manifests {
            let name = d.annotations.get(ANNOTATION_REF_NAME).cloned();
            out.push(self.load_image(name, d)?);
        }
        Ok(out)
    }

    /// The one way to find a local image: by a name as the user typed it (`busybox`, tried
    /// as given and normalised to `docker.io/library/busybox:latest`), else by image-ID prefix
    /// (config digest, with or without `sha256:`), else by manifest digest.
    pub fn find_image(&self, name_or_id: &str) -> Result<Option<Image>> {
        if let Some(image) = self.find_exact(name_or_id)? {
            return Ok(Some(image));
        }
        match crate::Reference::parse(name_or_id) {
            Ok(r) if r.to_string() != name_or_id => self.find_exact(&r.to_string()),
            _ => Ok(None),
        }
    }

    /// The image tagged exactly `name_or_id`, else the one whose image ID starts with it,
    /// else the one whose manifest digest is it.
    fn find_exact(&self, name_or_id: &str) -> Result<Option<Image>> {
        let index = self.read_index()?;
        if let Some(d) = index.manifests.iter().find(|d| {
            d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(name_or_id)
        }) {
            return self.load_image(Some(name_or_id.to_owned()), d).map(Some);
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut found: Option<Image> = None;
        for d in &index.manifests {
            let image = self.load_image(None, d)?;
            let by_id = image.config.digest.hex().starts_with(prefix);
            let by_manifest = prefix.len() == 64 && d.digest.hex() == prefix;
            if by_id || by_manifest {
                match &found {
                    Some(f) if f.manifest.digest != image.manifest.digest => {
                        return Err(Error::AmbiguousImage(name_or_id.to_owned()))
                    }
                    Some(_) => {}
                    None => found = Some(image),
                }
            }
        }
        Ok(found)
    }

    /// Loads an image from a manifest descriptor (manifest and config read and verified).
    /// An index descriptor gives its host-platform entry (else its first), with `index` set.
    pub fn load_image(&self, name: Option<String>, manifest: &Descriptor) -> Result<Image> {
        if crate::image_index::is_index_media_type(&manifest.media_type) {
            let entry = self.default_entry(manifest)?;
            let mut image = self.load_manifest(name, &entry)?;
            let mut index = manifest.clone();
            index.annotations.remove(ANNOTATION_REF_NAME);
            image.index = Some(index);
            return Ok(image);
        }
        self.load_manifest(name, manifest)
    }

    /// Loads the image of one manifest descriptor.
    pub(crate) fn load_manifest(
        &self,
        name: Option<String>,
        manifest: &Descriptor,
    ) -> Result<Image> {
        let manifest_json = self.blobs().read(&manifest.digest)?;
        let parsed: Manifest =
            serde_json::from_slice(&manifest_json).map_err(|source| Error::Json {
                what: "manifest",
                path: self.blobs().path(&manifest.digest),
                source,
            })?;
        let config_json = self.blobs().read(&parsed.config.digest)?;
        let mut manifest = manifest.clone();
        manifest.annotations.remove(ANNOTATION_REF_NAME);
        Ok(Image {
            name,
            manifest,
            manifest_json,
            config: parsed.config,
            config_json,
            index: None,
        })
    }

    /// The layout's `index.json`.
    pub fn read_index(&self) -> Result<Index> {
        let path = self.root().join("index.json");
        let bytes = std::fs::read(&path).map_err(Error::io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: "index.json",
            path,
            source,
        })
    }

    /// Writes `index.json` atomically. Caller holds the store lock.
    pub(crate) fn write_index(&self, index: &Index) -> Result<()> {
        let path = self.root().join("index.json");
        let bytes = canonical_json(index).map_err(|source| Error::Json {
            what: "index.json",
            path: path.clone(),
            source,
        })?;
        write_atomic(self.scratch(), &path, &bytes)
    }
}
