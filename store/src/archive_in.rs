//! Importing images from archives (`rbuild load`): a docker-archive (`manifest.json`,
//! configs, layer tars) or an oci-archive (an OCI image layout in a tar) into the store;
//! and one image of an OCI layout directory (`--build-context NAME=oci-layout://DIR`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::model::oci::{
    Descriptor, Index, Manifest, ANNOTATION_REF_NAME, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
};
use crate::{Compression, Digest, Error, Image, Result, Store};

/// containerd's (and docker's) annotation for an image's full name in an OCI layout.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl Store {
    /// Reads a docker-archive or oci-archive tar from `reader` (`what` names it in errors),
    /// puts every image it holds into the store and tags it with its names. Returns the
    /// images, one per name (`name: None` for an image that came with none).
    pub fn load_archive<R: Read>(&self, reader: R, what: &Path) -> Result<Vec<Image>> {
        let tmp = self.tmp_dir()?;
        let dir = tmp.path().join("archive");
        std::fs::create_dir(&dir).map_err(Error::io("create directory", &dir))?;
        // `unpack` keeps every member inside `dir` (`..` and absolute paths refused).
        tar::Archive::new(reader)
            .unpack(&dir)
            .map_err(Error::io("extract archive", what))?;
        if dir.join("manifest.json").is_file() {
            self.load_docker_archive(&dir, what)
        } else if dir.join("index.json").is_file() {
            self.load_oci_layout(&dir, what)
        } else {
            Err(bad(
                what,
                "neither a docker-archive (manifest.json) nor an oci-archive (index.json)",
            ))
        }
    }

    fn load_docker_archive(&self, dir: &Path, what: &Path) -> Result<Vec<Image>> {
        let path = member(dir, "manifest.json", what)?;
        let bytes = std::fs::read(&path).map_err(Error::io("read", &path))?;
        let entries: Vec<DockerArchiveEntry> =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                what: "docker-archive manifest.json",
                path: what.join("manifest.json"),
                source,
            })?;
        let mut loaded = Vec::new();
        for entry in entries {
            let config_path = member(dir, &entry.config, what)?;
            let config_json =
                std::fs::read(&config_path).map_err(Error::io("read", &config_path))?;
            let config: serde_json::Value =
                serde_json::from_slice(&config_json).map_err(|source| Error::Json {
                    what: "image config",
                    path: what.join(&entry.config),
                    source,
                })?;
            let diff_ids: Vec<&str> = config
                .pointer("/rootfs/diff_ids")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            if diff_ids.len() != entry.layers.len() {
                return Err(Error::LayerCountMismatch {
                    layers: entry.layers.len(),
                    diff_ids: diff_ids.len(),
                });
            }
            let mut layers = Vec::new();
            for (name, diff_id) in entry.layers.iter().zip(&diff_ids) {
                layers.push(self.ingest_layer(&member(dir, name, what)?, diff_id)?);
            }
            let manifest = self.put_image(&config_json, &layers)?;
            let names = entry.repo_tags.unwrap_or_default();
            loaded.extend(self.tag_loaded(&manifest, names.iter().map(String::as_str))?);
        }
        Ok(loaded)
    }

    /// A layer tar from an archive, as a blob: stored as it is (uncompressed: its digest
    /// must be `diff_id`; compressed: checked when it is unpacked).
    fn ingest_layer(&self, path: &Path, diff_id: &str) -> Result<Descriptor> {
        let file = std::fs::File::open(path).map_err(Error::io("open", path))?;
        let mut reader = BufReader::new(file);
        let magic = reader.fill_buf().map_err(Error::io("read", path))?;
        let media_type = match Compression::detect(magic) {
            None => MEDIA_TYPE_OCI_LAYER,
            Some(Compression::Gzip) => MEDIA_TYPE_OCI_LAYER_GZIP,
            Some(Compression::Zstd) => MEDIA_TYPE_OCI_LAYER_ZSTD,
            Some(other @ (Compression::Bzip2 | Compression::Xz)) => {
                return Err(Error::NotLayerCompression {
                    format: other.name(),
                })
            }
        };
        let expected = match media_type {
            MEDIA_TYPE_OCI_LAYER => Some(diff_id.parse::<Digest>()?),
            _ => None,
        };
        let digest = self.blobs().ingest(reader, expected.as_ref())?;
        let size = self.blobs().size(&digest)?.unwrap_or(0);
        Ok(Descriptor::new(media_type, digest, size))
    }

    fn load_oci_layout(&self, dir: &Path, what: &Path) -> Result<Vec<Image>> {
        let path = member(dir, "index.json", what)?;
        let bytes = std::fs::read(&path).map_err(Error::io("read", &path))?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: "index.json",
            path: what.join("index.json"),
            source,
        })?;
        let mut loaded = Vec::new();
        for d in &index.manifests {
            self.ingest_layout_manifest(dir, d, what)?;
            let mut entry = d.clone();
            let name = entry
                .annotations
                .remove(ANNOTATION_CONTAINERD_NAME)
                .or_else(|| {
                    // A full name; a bare tag (`v1`, the OCI convention) names no repository.
                    entry
                        .annotations
                        .get(ANNOTATION_REF_NAME)
                        .filter(|n| n.contains('/') || n.contains(':'))
                        .cloned()
                });
            entry.annotations.remove(ANNOTATION_REF_NAME);
            loaded.extend(self.tag_loaded(&entry, name.as_deref())?);
        }
        Ok(loaded)
    }

    /// One image of the OCI image layout directory `dir` (`--build-context
    /// NAME=oci-layout://DIR:TAG`): the manifest `index.json` names `tag` (its
    /// `org.opencontainers.image.ref.name`) or the one of digest `digest`. Its blobs are
    /// copied into the store, verified; the image is not tagged.
    pub fn load_layout_image(
        &self,
        dir: &Path,
        tag: Option<&str>,
        digest: Option<&Digest>,
    ) -> Result<Image> {
        let path = member(dir, "index.json", dir)?;
        let bytes = std::fs::read(&path).map_err(Error::io("read", &path))?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: "index.json",
            path: path.clone(),
            source,
        })?;
        let found = index.manifests.iter().find(|d| match (digest, tag) {
            (Some(want), _) => &d.digest == want,
            (None, Some(t)) => {
                d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(t)
            }
            (None, None) => true,
        });
        let Some(d) = found else {
            let wanted = match (digest, tag) {
                (Some(d), _) => d.to_string(),
                (None, t) => format!("tag {}", t.unwrap_or("(any)")),
            };
            return Err(bad(dir, &format!("index.json names no manifest {wanted}")));
        };
        self.ingest_layout_manifest(dir, d, dir)?;
        let mut entry = d.clone();
        entry.annotations.clear();
        self.load_image(None, &entry)
    }

    /// The manifest `d` of an OCI layout in `dir`, its config and its layers into the store.
    fn ingest_layout_manifest(&self, dir: &Path, d: &Descriptor, what: &Path) -> Result<()> {
        if d.media_type == MEDIA_TYPE_OCI_INDEX || d.media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST {
            return Err(bad(
                what,
                &format!("{} is a multi-platform index (not supported)", d.digest),
            ));
        }
        self.ingest_member_blob(dir, &d.digest, what)?;
        let manifest: Manifest =
            serde_json::from_slice(&self.blobs().read(&d.digest)?).map_err(|source| {
                Error::Json {
                    what: "manifest",
                    path: what.join(format!("blobs/sha256/{}", d.digest.hex())),
                    source,
                }
            })?;
        self.ingest_member_blob(dir, &manifest.config.digest, what)?;
        for layer in &manifest.layers {
            self.ingest_member_blob(dir, &layer.digest, what)?;
        }
        Ok(())
    }

    /// `blobs/sha256/<hex>` of an unpacked layout into the store, verified.
    fn ingest_member_blob(&self, dir: &Path, digest: &Digest, what: &Path) -> Result<()> {
        if self.blobs().contains(digest) {
            return Ok(());
        }
        let path = member(dir, &format!("blobs/sha256/{}", digest.hex()), what)?;
        let file = std::fs::File::open(&path).map_err(Error::io("open", &path))?;
        self.blobs().ingest(file, Some(digest))?;
        Ok(())
    }

    /// Tags `manifest` with each name (normalized); one image per name, or one untagged.
    fn tag_loaded<'a>(
        &self,
        manifest: &Descriptor,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Image>> {
        let mut out = Vec::new();
        for name in names {
            let full = crate::Reference::parse(name)?.to_string();
            self.tag(&full, manifest)?;
            out.push(self.load_image(Some(full), manifest)?);
        }
        if out.is_empty() {
            out.push(self.load_image(None, manifest)?);
        }
        Ok(out)
    }
}

fn bad(what: &Path, reason: &str) -> Error {
    Error::BadArchive {
        path: what.to_path_buf(),
        reason: reason.to_owned(),
    }
}

/// The path of archive member `name` under `dir`: relative, no `..`, a regular file that
/// is no symlink (an archive cannot make the store read a file outside it).
fn member(dir: &Path, name: &str, what: &Path) -> Result<PathBuf> {
    let rel = Path::new(name);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad(
            what,
            &format!("member {name:?} is not a relative path"),
        ));
    }
    let mut path = dir.to_path_buf();
    for c in rel.components() {
        path.push(c);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|_| bad(what, &format!("member {name:?} is missing")))?;
        if meta.file_type().is_symlink() {
            return Err(bad(
                what,
                &format!("member {name:?} goes through a symlink"),
            ));
        }
    }
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(bad(what, &format!("member {name:?} is not a file")));
    }
    Ok(path)
}
