//! Exporting images as archives: docker-archive (`docker save` format: `manifest.json`,
//! config, uncompressed `layer.tar`s) and oci-archive (an OCI image layout in a tar).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use serde::Serialize;

use crate::fsutil::remove_any;
use crate::model::oci::{
    canonical_json, is_nondistributable, layer_compression, Descriptor, ImageFormat, Index,
    ANNOTATION_REF_NAME,
};
use crate::{DiffId, Digest, Error, Image, Result, Store};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

impl Store {
    /// Writes `images` as a docker-archive tar (what `docker load` / `podman load` read).
    /// Each image's tag (its `name`, when it has one) goes into `RepoTags`. Compressed layers
    /// are decompressed (the archive holds `layer.tar`s named by diffID).
    pub fn save_docker_archive<W: Write>(&self, images: &[Image], out: W) -> Result<()> {
        let mut tar = tar::Builder::new(out);
        let mut written = BTreeSet::new();
        let mut entries = Vec::new();
        for image in images {
            let manifest = image.parsed_manifest()?;
            let diff_ids = image.diff_ids()?;
            if diff_ids.len() != manifest.layers.len() {
                return Err(Error::LayerCountMismatch {
                    layers: manifest.layers.len(),
                    diff_ids: diff_ids.len(),
                });
            }
            let config_name = format!("{}.json", image.config.digest.hex());
            if written.insert(config_name.clone()) {
                append(&mut tar, &config_name, &image.config_json)?;
            }
            let mut layers = Vec::new();
            for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
                let name = format!("{}/layer.tar", diff_id.hex());
                if written.insert(name.clone()) {
                    self.append_uncompressed(&mut tar, &name, layer, diff_id)?;
                }
                layers.push(name);
            }
            entries.push(DockerArchiveEntry {
                config: config_name,
                repo_tags: image
                    .name
                    .iter()
                    .filter(|n| !n.contains('@'))
                    .cloned()
                    .collect(),
                layers,
            });
        }
        let manifest = canonical_json(&entries).map_err(|source| Error::Json {
            what: "docker-archive manifest",
            path: "manifest.json".into(),
            source,
        })?;
        append(&mut tar, "manifest.json", &manifest)?;
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(Error::io("write archive", "<output>"))?;
        Ok(())
    }

    /// Writes `images` as an oci-archive tar: `oci-layout`, an `index.json` naming each image
    /// by its tag in `org.opencontainers.image.ref.name`, and every blob they use, as stored.
    /// The manifests are pure OCI: one with Docker media types (a pulled Docker image) is
    /// written converted ([`ImageFormat::convert`]: same config and layer blobs).
    pub fn save_oci_archive<W: Write>(&self, images: &[Image], out: W) -> Result<()> {
        self.save_oci_archive_annotated(images, &std::collections::BTreeMap::new(), out)
    }

    /// [`Store::save_oci_archive`] with `annotations` on the archive's `index.json`.
    pub fn save_oci_archive_annotated<W: Write>(
        &self,
        images: &[Image],
        annotations: &std::collections::BTreeMap<String, String>,
        out: W,
    ) -> Result<()> {
        let mut tar = tar::Builder::new(out);
        append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut index = Index {
            annotations: annotations.clone(),
            ..Index::default()
        };
        let mut blobs = BTreeSet::new();
        let mut converted: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
        for image in images {
            let manifest = image.parsed_manifest()?;
            let mut d = image.manifest.clone();
            match ImageFormat::Oci.convert(&manifest)? {
                Some(oci) => {
                    let bytes = canonical_json(&oci).map_err(|source| Error::Json {
                        what: "manifest",
                        path: image.manifest.digest.to_string().into(),
                        source,
                    })?;
                    d = Descriptor::new(
                        ImageFormat::Oci.manifest_media_type(),
                        Digest::of(&bytes),
                        bytes.len() as u64,
                    );
                    converted.insert(d.digest.clone(), bytes);
                }
                None => {
                    d.media_type = ImageFormat::Oci.manifest_media_type().to_owned();
                    blobs.insert(image.manifest.digest.clone());
                }
            }
            if let Some(name) = &image.name {
                d.annotations
                    .insert(ANNOTATION_REF_NAME.to_owned(), name.clone());
            }
            index.manifests.push(d);
            blobs.insert(image.config.digest.clone());
            for l in &manifest.layers {
                // A non-distributable layer the store does not hold is fetched from its urls
                // by whoever reads the archive.
                if is_nondistributable(&l.media_type) && !self.blobs().contains(&l.digest) {
                    continue;
                }
                blobs.insert(l.digest.clone());
            }
        }
        append(&mut tar, "blobs/", &[])?;
        append(&mut tar, "blobs/sha256/", &[])?;
        let mut names: BTreeSet<&Digest> = blobs.iter().collect();
        names.extend(converted.keys());
        for d in names {
            if let Some(bytes) = converted.get(d) {
                append(&mut tar, &format!("blobs/sha256/{}", d.hex()), bytes)?;
                continue;
            }
            let size = self.blobs().size(d)?.ok_or_else(|| Error::BlobNotFound {
                digest: d.to_string(),
            })?;
            let reader = self.blobs().open_verified(d)?;
            append_reader(&mut tar, &format!("blobs/sha256/{}", d.hex()), size, reader)?;
        }
        let bytes = canonical_json(&index).map_err(|source| Error::Json {
            what: "index.json",
            path: "index.json".into(),
            source,
        })?;
        append(&mut tar, "index.json", &bytes)?;
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(Error::io("write archive", "<output>"))?;
        Ok(())
    }

    fn append_uncompressed<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        name: &str,
        layer: &Descriptor,
        diff_id: &DiffId,
    ) -> Result<()> {
        // Our own layers are stored uncompressed under their diffID.
        if let Some(size) = self.blobs().size(diff_id.digest())? {
            let reader = self.blobs().open_verified(diff_id.digest())?;
            return append_reader(tar, name, size, reader);
        }
        layer_compression(&layer.media_type)
            .map_err(|()| Error::UnsupportedMediaType(layer.media_type.clone()))?;
        let tmp = self.tmp_dir()?;
        let path = tmp.path().join("layer.tar");
        let mut file = std::fs::File::create(&path).map_err(Error::io("create", &path))?;
        let raw = io::BufReader::new(self.blobs().open_verified(&layer.digest)?);
        let mut stream = crate::layer_in::decompressing(raw, layer.digest.as_str())?;
        let mut hasher = HashingWriter {
            inner: &mut file,
            hasher: <sha2::Sha256 as sha2::Digest>::new(),
        };
        let size = io::copy(&mut stream, &mut hasher).map_err(|source| Error::LayerStream {
            layer: layer.digest.to_string(),
            source,
        })?;
        let actual = DiffId::from(crate::Digest::from_hasher(hasher.hasher));
        if &actual != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("diffID of layer {}", layer.digest),
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        drop(file);
        let reader = std::fs::File::open(&path).map_err(Error::io("open", &path))?;
        append_reader(tar, name, size, reader)?;
        remove_any(&path)
    }
}

struct HashingWriter<'a, W> {
    inner: &'a mut W,
    hasher: sha2::Sha256,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn header(name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    if name.ends_with('/') {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
    } else {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
    }
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    append_reader(tar, name, bytes.len() as u64, bytes)
}

fn append_reader<W: Write, R: Read>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    reader: R,
) -> Result<()> {
    let mut h = header(name, size);
    tar.append_data(&mut h, name, reader.take(size))
        .map_err(Error::io("write archive member", name))
}
