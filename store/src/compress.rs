//! Compression at the edge: the gzip (parallel independent members) or zstd (multithreaded)
//! form of a layer blob, made once and remembered per diffID in `cache/compressed/`.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use flate2::write::GzEncoder;

use crate::fsutil::write_atomic;
use crate::oci::{
    layer_compression, Compression, Descriptor, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
};
use crate::{Error, Result, Store};

/// Uncompressed bytes per gzip member (each compressed on its own thread).
const GZIP_MEMBER: usize = 4 << 20;
/// Default gzip level (same sizes as docker/BuildKit).
pub const GZIP_LEVEL: u32 = 6;
/// Default zstd level.
pub const ZSTD_LEVEL: i32 = 3;

impl Store {
    /// The compressed form of `layer`: `layer` itself when it is already compressed with
    /// `compression` (pulled layers), else a blob made once and remembered per diffID
    /// (`cache/compressed/<diffid hex>-<gzip|zstd>`), so a second push compresses nothing.
    pub fn compressed_layer(
        &self,
        layer: &Descriptor,
        compression: Compression,
    ) -> Result<Descriptor> {
        let current = layer_compression(&layer.media_type)
            .map_err(|()| Error::UnsupportedMediaType(layer.media_type.clone()))?;
        if current == Some(compression) {
            return Ok(layer.clone());
        }
        if current.is_some() {
            // Recompressing another compression: decompress first; key by the uncompressed digest.
            let d = self.decompressed_layer(layer)?;
            return self.compressed_layer(&d, compression);
        }
        let record = self.compressed_record_path(layer, compression);
        if let Ok(bytes) = std::fs::read(&record) {
            if let Ok(d) = serde_json::from_slice::<Descriptor>(&bytes) {
                if self.blobs().size(&d.digest)? == Some(d.size) {
                    return Ok(d);
                }
            }
        }
        let mut input = self.blobs().open_verified(&layer.digest)?;
        let mut writer = self.blobs().writer()?;
        let media_type = match compression {
            Compression::Gzip => {
                gzip_parallel(&mut input, &mut writer, GZIP_LEVEL, threads()).map_err(
                    |source| Error::LayerStream {
                        layer: layer.digest.to_string(),
                        source,
                    },
                )?;
                MEDIA_TYPE_OCI_LAYER_GZIP
            }
            Compression::Zstd => {
                zstd_compress(&mut input, &mut writer, ZSTD_LEVEL, threads()).map_err(
                    |source| Error::LayerStream {
                        layer: layer.digest.to_string(),
                        source,
                    },
                )?;
                MEDIA_TYPE_OCI_LAYER_ZSTD
            }
        };
        let size = writer.written();
        let digest = writer.commit(None)?;
        let d = Descriptor::new(media_type, digest, size);
        let bytes = serde_json::to_vec(&d).map_err(|source| Error::Json {
            what: "compressed record",
            path: record.clone(),
            source,
        })?;
        write_atomic(self.scratch(), &record, &bytes)?;
        Ok(d)
    }

    /// The uncompressed form of a compressed layer blob (stored as a blob).
    fn decompressed_layer(&self, layer: &Descriptor) -> Result<Descriptor> {
        let input = io::BufReader::new(self.blobs().open_verified(&layer.digest)?);
        let mut stream = crate::layer_in::decompressing(input, layer.digest.as_str())?;
        let mut writer = self.blobs().writer()?;
        io::copy(&mut stream, &mut writer).map_err(|source| Error::LayerStream {
            layer: layer.digest.to_string(),
            source,
        })?;
        let size = writer.written();
        let digest = writer.commit(None)?;
        Ok(Descriptor::new(
            crate::oci::MEDIA_TYPE_OCI_LAYER,
            digest,
            size,
        ))
    }

    fn compressed_record_path(&self, layer: &Descriptor, compression: Compression) -> PathBuf {
        self.root().join("cache/compressed").join(format!(
            "{}-{}",
            layer.digest.hex(),
            compression.name()
        ))
    }
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// gzip `input` to `out` as independent members of `GZIP_MEMBER` bytes, `threads` at a time.
/// Deterministic: members have mtime 0 and no name, so the output does not depend on the
/// thread count.
pub fn gzip_parallel<R: Read, W: Write>(
    input: &mut R,
    out: &mut W,
    level: u32,
    threads: usize,
) -> io::Result<()> {
    let threads = threads.max(1);
    let mut wrote_any = false;
    loop {
        let mut chunks = Vec::with_capacity(threads);
        for _ in 0..threads {
            let chunk = read_chunk(input, GZIP_MEMBER)?;
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        if chunks.is_empty() {
            if !wrote_any {
                out.write_all(&gzip_member(&[], level)?)?;
            }
            return Ok(());
        }
        let done = chunks.len() < threads || chunks.last().is_some_and(|c| c.len() < GZIP_MEMBER);
        let compressed: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|c| s.spawn(move || gzip_member(c, level)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("gzip thread panicked")))
                })
                .collect()
        });
        for c in compressed {
            out.write_all(&c?)?;
            wrote_any = true;
        }
        if done {
            return Ok(());
        }
    }
}

fn gzip_member(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::new(level),
    );
    enc.write_all(data)?;
    GzEncoder::finish(enc)
}

fn read_chunk<R: Read>(input: &mut R, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    input.take(size as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// zstd `input` to `out` with `threads` workers.
pub fn zstd_compress<R: Read, W: Write>(
    input: &mut R,
    out: &mut W,
    level: i32,
    threads: usize,
) -> io::Result<()> {
    let mut enc = zstd::stream::write::Encoder::new(out, level)?;
    if threads > 1 {
        enc.multithread(threads as u32)?;
    }
    io::copy(input, &mut enc)?;
    enc.finish()?;
    Ok(())
}
