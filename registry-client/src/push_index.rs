//! Push of a multi-platform image: each platform's image under its own digest, then the
//! index over them under the tag (an OCI index, or a Docker manifest list when every entry
//! went as Docker schema2), each entry with its platform.

use std::sync::Arc;

use rbuild_store::{
    canonical_json, Descriptor, Digest, ImageFormat, Index, LayerCompression, Reference,
};

use crate::auth::Scopes;
use crate::client::Client;
use crate::local::LocalStore;
use crate::progress::Progress;
use crate::push::{put_manifest, ManifestPut, PushedImage};
use crate::{Error, Result};

/// Pushes the store's index `index` and its images to `destination`.
pub(crate) async fn push_index<S: LocalStore>(
    client: &Client,
    store: &S,
    index: &Descriptor,
    destination: &Reference,
    compression: LayerCompression,
    format: ImageFormat,
    progress: Arc<dyn Progress>,
) -> Result<PushedImage> {
    let what = destination.to_string();
    let (s, d) = (store.clone(), index.clone());
    let images = tokio::task::spawn_blocking(move || {
        s.index_entries(&d)?
            .into_iter()
            .map(|e| Ok((e.platform.clone(), s.load_image(None, &e)?)))
            .collect::<rbuild_store::Result<Vec<_>>>()
    })
    .await
    .map_err(Error::Task)?
    .map_err(Error::store(format!("read the index of {what}")))?;
    let mut manifests = Vec::new();
    for (platform, image) in images {
        let to = ManifestPut::Digest(destination);
        let pushed = client
            .push_image_to(store, &image, to, compression, format, progress.clone())
            .await?;
        let mut entry = Descriptor::new(pushed.media_type, pushed.digest, pushed.size);
        entry.platform = platform;
        manifests.push(entry);
    }
    let docker_type = ImageFormat::Docker.manifest_media_type();
    let list_format = if manifests.iter().all(|m| m.media_type == docker_type) {
        ImageFormat::Docker
    } else {
        ImageFormat::Oci
    };
    let media_type = list_format.index_media_type();
    let remote = Index {
        schema_version: 2,
        media_type: Some(media_type.to_owned()),
        manifests,
        annotations: Default::default(),
    };
    let bytes = canonical_json(&remote).map_err(|source| Error::InvalidManifest {
        what: what.clone(),
        source,
    })?;
    let ep = client.endpoint(destination.registry())?;
    let scopes = Scopes::push(destination.repository(), std::iter::empty());
    if let Err(detail) = put_manifest(&ep, destination, &scopes, &bytes, media_type).await? {
        return Err(Error::ManifestRefused {
            reference: what,
            detail,
        });
    }
    Ok(PushedImage {
        reference: destination.clone(),
        digest: Digest::of(&bytes),
        size: bytes.len() as u64,
        media_type: media_type.to_owned(),
    })
}
