//! The local end of every transfer: the one narrow view of the store the registry client
//! has (a blob source and sink, the images it reads and tags, the mount-sources map and the
//! compressed forms of layers), so that it never sees snapshots, cache records or paths.

use rbuild_store::{BlobStore, Descriptor, Image, LayerCompression, MountSources, Store};

type StoreResult<T> = rbuild_store::Result<T>;

/// What pull, push and the lazy transfers may do with the local store.
///
/// [`Store`] is the implementation; the trait exists so that the client's reach into the
/// store is written down in one place and cannot grow unnoticed.
pub trait LocalStore: Clone + Send + Sync + 'static {
    /// The blob source and sink: reads verify, writes are verified before they are named.
    fn blobs(&self) -> &BlobStore;
    /// The image `name_or_id` names, with its manifest and config read and verified.
    fn find_image(&self, name_or_id: &str) -> StoreResult<Option<Image>>;
    /// The image whose manifest `manifest` describes (an index: its host-platform entry).
    fn load_image(&self, name: Option<String>, manifest: &Descriptor) -> StoreResult<Image>;
    /// The image manifests an index in the store lists, each with its platform.
    fn index_entries(&self, index: &Descriptor) -> StoreResult<Vec<Descriptor>>;
    /// Points the tag `name` at `manifest`, whose blob must be present.
    fn tag(&self, name: &str, manifest: &Descriptor) -> StoreResult<()>;
    /// Which registry repositories are known to hold which blobs.
    fn mount_sources(&self) -> StoreResult<MountSources>;
    /// Merges `sources` into the recorded mount sources.
    fn save_mount_sources(&self, sources: &MountSources) -> StoreResult<()>;
    /// `layer` in `compression`, compressed now unless a form is remembered (see
    /// [`Store::compressed_layer`]).
    fn compressed_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
    ) -> StoreResult<Descriptor>;
    /// `layer` in `compression` when nothing needs compressing (see
    /// [`Store::remembered_compressed_layer`]).
    fn remembered_compressed_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
    ) -> StoreResult<Option<Descriptor>>;
    /// Compresses `layer` into a new blob, handing each output piece to `on_output` once written.
    fn compress_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
        on_output: &mut (dyn FnMut(Vec<u8>, u64) + Send),
    ) -> StoreResult<Descriptor>;
    /// Records `compressed` as the form of `layer` in `compression`.
    fn remember_compressed_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
        compressed: &Descriptor,
    ) -> StoreResult<()>;
}

impl LocalStore for Store {
    fn blobs(&self) -> &BlobStore {
        Store::blobs(self)
    }
    fn find_image(&self, name_or_id: &str) -> StoreResult<Option<Image>> {
        Store::find_image(self, name_or_id)
    }
    fn load_image(&self, name: Option<String>, manifest: &Descriptor) -> StoreResult<Image> {
        Store::load_image(self, name, manifest)
    }
    fn index_entries(&self, index: &Descriptor) -> StoreResult<Vec<Descriptor>> {
        Store::index_entries(self, index)
    }
    fn tag(&self, name: &str, manifest: &Descriptor) -> StoreResult<()> {
        Store::tag(self, name, manifest)
    }
    fn mount_sources(&self) -> StoreResult<MountSources> {
        Store::mount_sources(self)
    }
    fn save_mount_sources(&self, sources: &MountSources) -> StoreResult<()> {
        Store::save_mount_sources(self, sources)
    }
    fn compressed_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
    ) -> StoreResult<Descriptor> {
        Store::compressed_layer(self, layer, compression)
    }
    fn remembered_compressed_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
    ) -> StoreResult<Option<Descriptor>> {
        Store::remembered_compressed_layer(self, layer, compression)
    }
    fn compress_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
        on_output: &mut (dyn FnMut(Vec<u8>, u64) + Send),
    ) -> StoreResult<Descriptor> {
        Store::compress_layer(self, layer, compression, on_output)
    }
    fn remember_compressed_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
        compressed: &Descriptor,
    ) -> StoreResult<()> {
        Store::remember_compressed_layer(self, layer, compression, compressed)
    }
}
