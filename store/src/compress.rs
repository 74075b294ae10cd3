//! Compression at the edge: the gzip (parallel independent members, `gzip_member`) or zstd
//! (multithreaded) form of a layer blob at a chosen level, made once and remembered per diffID
//! and level in `cache/compressed/`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{mpsc, Mutex};

use crate::blob::BlobWriter;
use crate::fsutil::write_atomic;
use crate::gzip_member::gzip_member;
use crate::model::oci::{
    layer_compression, Descriptor, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_ZSTD,
};
use crate::{Compression, Error, Result, Store};

/// Compressed pieces queued for the thread that writes the blob.
const PIECES_QUEUED: usize = 4;
/// Uncompressed bytes per gzip member (each compressed on its own thread).
const GZIP_MEMBER: usize = 4 << 20;
/// Default gzip level: see [`LayerCompression::default_level`] for the measurement behind it.
pub const GZIP_LEVEL: u32 = GZIP_DEFAULT;
/// Default zstd level: see [`LayerCompression::default_level`].
pub const ZSTD_LEVEL: i32 = ZSTD_DEFAULT;

const GZIP_DEFAULT: u32 = 2;
const ZSTD_DEFAULT: i32 = 3;

/// How a layer is compressed when it leaves the machine: the format and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerCompression {
    compression: Compression,
    level: i32,
}

impl LayerCompression {
    /// `compression` at `level` (its default when `None`); a level the format does not
    /// accept (gzip 0..=9, zstd 1..=19) is an error naming the range.
    pub fn new(compression: Compression, level: Option<i32>) -> Result<LayerCompression> {
        if !compression.is_layer_format() {
            return Err(Error::NotLayerCompression {
                format: compression.name(),
            });
        }
        let level = level.unwrap_or_else(|| Self::default_level(compression));
        let levels = Self::levels(compression);
        if !levels.contains(&level) {
            return Err(Error::CompressionLevel {
                format: compression.name(),
                level,
                min: *levels.start(),
                max: *levels.end(),
            });
        }
        Ok(LayerCompression { compression, level })
    }

    /// The levels `compression` accepts: gzip 0 (stored) ..= 9, zstd 1 ..= 19; none for
    /// the formats layers cannot have.
    pub fn levels(compression: Compression) -> std::ops::RangeInclusive<i32> {
        match compression {
            Compression::Gzip => 0..=9,
            Compression::Zstd => 1..=19,
            // An empty range: no level is valid (`new` refuses these formats first).
            #[allow(clippy::reversed_empty_ranges)]
            Compression::Bzip2 | Compression::Xz => 1..=0,
        }
    }

    /// The default level per format, chosen by measurement with our backends (ISA-L and
    /// libdeflate for gzip, libzstd) on base64 text and layer tars (a Debian rootfs, `/usr/lib`
    /// and `/usr/share`) (`store/examples/compress_levels.rs`, figures in `bench/README.md`).
    ///
    /// gzip: 2. A member is ISA-L level 1 (~600 MiB/s per core on base64, ~420 on tars) unless
    /// libdeflate at the level makes its samples at least 3 % smaller (`gzip_member`), as it
    /// does on tars: libdeflate level 2 gives 0.386-0.389 of the tar's size at ~125 MiB/s per
    /// core, about zlib level 5's size (podman and buildah use 5, BuildKit 6; 0.377-0.395
    /// here), where ISA-L level 1 gives 0.417-0.427 and zlib-rs level 2, the compressor before,
    /// 0.406-0.417 at 93-102. Level 1 (libdeflate 1: 0.398-0.406, ~180 MiB/s per core) trades 3 %
    /// of size for 1.4x the speed; every pull pays for the size, so 2 stays. Text without
    /// repeats is ISA-L's at every level, the Huffman-coded size (0.752 on base64).
    ///
    /// zstd: 3 (libzstd's own default, as in containerd and BuildKit). Level 1 is 1.2-1.7×
    /// faster but 12 % bigger on binaries (0.390 vs 0.348); level 3 (~210 MiB/s per core on
    /// tars, 0.32-0.35) is smaller than any gzip level and faster than libdeflate's.
    pub fn default_level(compression: Compression) -> i32 {
        match compression {
            Compression::Gzip => GZIP_DEFAULT as i32,
            Compression::Zstd => ZSTD_DEFAULT,
            Compression::Bzip2 | Compression::Xz => 0,
        }
    }

    /// The format.
    pub fn compression(self) -> Compression {
        self.compression
    }

    /// The level.
    pub fn level(self) -> i32 {
        self.level
    }
}

impl Default for LayerCompression {
    /// gzip at its default level.
    fn default() -> LayerCompression {
        LayerCompression {
            compression: Compression::Gzip,
            level: Self::default_level(Compression::Gzip),
        }
    }
}

impl Store {
    /// The compressed form of `layer`: `layer` itself when it is already compressed with
    /// this format (pulled layers keep their blob, whatever its level), else a blob made once
    /// and remembered per diffID (or pulled blob) and level
    /// (`cache/compressed/<digest hex>-<gzip|zstd>-<level>`),
    /// so a second push at the same level compresses nothing.
    pub fn compressed_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
    ) -> Result<Descriptor> {
        if let Some(d) = self.remembered_compressed_layer(layer, compression)? {
            return Ok(d);
        }
        let d = self.compress_layer(layer, compression, &mut |_, _| {})?;
        self.remember_compressed_layer(layer, compression, &d)?;
        Ok(d)
    }

    /// The compressed form of `layer` when no compression is needed: `layer` itself when it
    /// already has this format, else the remembered blob of this format and level (keyed by
    /// `layer`'s digest) when its record and blob are both present. `None`:
    /// [`Store::compress_layer`] must make it.
    pub fn remembered_compressed_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
    ) -> Result<Option<Descriptor>> {
        let current = layer_compression(&layer.media_type)
            .map_err(|()| Error::UnsupportedMediaType(layer.media_type.clone()))?;
        if current == Some(compression.compression) {
            return Ok(Some(layer.clone()));
        }
        let record = self.compressed_record_path(layer, compression);
        if let Ok(bytes) = std::fs::read(&record) {
            if let Ok(d) = serde_json::from_slice::<Descriptor>(&bytes) {
                if self.blobs().size(&d.digest)? == Some(d.size) {
                    return Ok(Some(d));
                }
            }
        }
        Ok(None)
    }

    /// Compresses `layer` (read through a reader that verifies its digest) into a new blob,
    /// committed under the digest computed while writing, and returns its descriptor, without
    /// writing the per-diffID record (see [`Store::remember_compressed_layer`]).
    /// `on_output(piece, consumed)` is handed every compressed piece in order once it is
    /// written to the blob, with the number of uncompressed bytes read when that piece was
    /// made, so a caller can upload while the blob is being made (the piece is its own, no
    /// copy); it is called on the thread that writes the blob, not the caller's. A layer
    /// compressed with another format is decompressed first.
    pub fn compress_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
        on_output: &mut (dyn FnMut(Vec<u8>, u64) + Send),
    ) -> Result<Descriptor> {
        let current = layer_compression(&layer.media_type)
            .map_err(|()| Error::UnsupportedMediaType(layer.media_type.clone()))?;
        if current.is_some() {
            // Another format: decompress into a blob first, then compress that.
            let d = self.decompressed_layer(layer)?;
            return self.compress_layer(&d, compression, on_output);
        }
        let consumed = Cell::new(0u64);
        let mut input = CountingReader {
            inner: self.blobs().open_verified(&layer.digest)?,
            count: &consumed,
        };
        let blob = self.blobs().writer()?;
        let stream_error = |source| Error::LayerStream {
            layer: layer.digest.to_string(),
            source,
        };
        // This thread reads (verifying) and feeds the compressor; another writes the pieces
        // into the blob, hashes them and shows them to `on_output`, so neither chain waits
        // for the other (writing into the page cache is as costly as compressing here).
        let (media_type, blob) = std::thread::scope(|s| {
            let (tx, rx) = mpsc::sync_channel::<(Vec<u8>, u64)>(PIECES_QUEUED);
            let writer = s.spawn(move || -> io::Result<BlobWriter> {
                let mut blob = blob;
                for (piece, consumed) in rx {
                    blob.write_all(&piece)?;
                    on_output(piece, consumed);
                }
                Ok(blob)
            });
            let consumed = &consumed;
            let mut emit = move |piece: Vec<u8>| {
                tx.send((piece, consumed.get()))
                    .map_err(|_| io::Error::other("the blob writer stopped"))
            };
            let compressed = match compression.compression {
                Compression::Gzip => {
                    // The level was validated (0..=9) by LayerCompression::new.
                    let level = compression.level.clamp(0, 9) as u32;
                    gzip_members(&mut input, level, threads(), &mut emit)
                        .map(|()| MEDIA_TYPE_OCI_LAYER_GZIP)
                }
                Compression::Zstd => zstd_compress(
                    &mut input,
                    &mut PieceWriter(&mut emit),
                    compression.level,
                    threads(),
                )
                .map(|()| MEDIA_TYPE_OCI_LAYER_ZSTD),
                Compression::Bzip2 | Compression::Xz => {
                    unreachable!("LayerCompression::new admits layer formats only")
                }
            };
            // Closing the channel ends the writer.
            drop(emit);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the blob writer panicked")));
            // A writer's error explains a stopped channel better than the compressor's.
            match (compressed, written) {
                (_, Err(e)) | (Err(e), _) => Err(e),
                (Ok(media_type), Ok(blob)) => Ok((media_type, blob)),
            }
        })
        .map_err(stream_error)?;
        let size = blob.written();
        let digest = blob.commit(None)?;
        Ok(Descriptor::new(media_type, digest, size))
    }

    /// Records that `compressed` is the form of `layer` in `compression` (atomically), so the
    /// next push finds it with [`Store::remembered_compressed_layer`].
    pub fn remember_compressed_layer(
        &self,
        layer: &Descriptor,
        compression: LayerCompression,
        compressed: &Descriptor,
    ) -> Result<()> {
        let record = self.compressed_record_path(layer, compression);
        let bytes = serde_json::to_vec(compressed).map_err(|source| Error::Json {
            what: "compressed record",
            path: record.clone(),
            source,
        })?;
        write_atomic(self.scratch(), &record, &bytes)
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
            crate::model::oci::MEDIA_TYPE_OCI_LAYER,
            digest,
            size,
        ))
    }

    fn compressed_record_path(&self, layer: &Descriptor, compression: LayerCompression) -> PathBuf {
        self.root().join("cache/compressed").join(format!(
            "{}-{}-{}",
            layer.digest.hex(),
            compression.compression.name(),
            compression.level
        ))
    }
}

/// Counts the bytes read through it into a shared cell.
struct CountingReader<'a, R> {
    inner: R,
    count: &'a Cell<u64>,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Hands each write to a consumer of owned pieces (zstd's output to the blob writer thread).
struct PieceWriter<'a>(&'a mut dyn FnMut(Vec<u8>) -> io::Result<()>);

impl Write for PieceWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.0)(buf.to_vec())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// gzip `input` to `out` as independent members of `GZIP_MEMBER` bytes compressed on
/// `threads` worker threads, written in order as soon as each is ready. The calling thread
/// reads and writes; at most `threads + 2` members are in flight, so memory stays bounded
/// (at most 4 MiB in and ~4 MiB out per member). Deterministic: members have mtime 0 and no
/// name, and the output does not depend on the thread count.
pub fn gzip_parallel<R: Read, W: Write>(
    input: &mut R,
    out: &mut W,
    level: u32,
    threads: usize,
) -> io::Result<()> {
    gzip_members(input, level, threads, &mut |member| out.write_all(&member))
}

/// [`gzip_parallel`], handing each member to `emit` as it is ready, in order.
fn gzip_members<R: Read>(
    input: &mut R,
    level: u32,
    threads: usize,
    emit: &mut dyn FnMut(Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    type Member = io::Result<Vec<u8>>;
    let threads = threads.max(1);
    let (work_tx, work_rx) = mpsc::sync_channel::<(Vec<u8>, mpsc::SyncSender<Member>)>(threads);
    let work_rx = Mutex::new(work_rx);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let work_rx = &work_rx;
            s.spawn(move || loop {
                // A poisoned lock means another worker panicked: stop too.
                let job = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((chunk, done)) = job else { return };
                let _ = done.send(gzip_member(&chunk, level));
            });
        }
        let result = (|| {
            let mut in_flight: VecDeque<mpsc::Receiver<Member>> = VecDeque::new();
            let mut queued_any = false;
            let mut more = true;
            while more || !in_flight.is_empty() {
                if more && in_flight.len() < threads + 2 {
                    let chunk = read_chunk(input, GZIP_MEMBER)?;
                    more = chunk.len() == GZIP_MEMBER;
                    if chunk.is_empty() && (queued_any || !in_flight.is_empty()) {
                        continue;
                    }
                    let (done_tx, done_rx) = mpsc::sync_channel(1);
                    work_tx
                        .send((chunk, done_tx))
                        .map_err(|_| io::Error::other("gzip worker threads stopped"))?;
                    in_flight.push_back(done_rx);
                    queued_any = true;
                    continue;
                }
                if let Some(done) = in_flight.pop_front() {
                    let member = done
                        .recv()
                        .map_err(|_| io::Error::other("gzip worker thread panicked"))??;
                    emit(member)?;
                }
            }
            Ok(())
        })();
        // Closing the queue lets the workers return before the scope joins them.
        drop(work_tx);
        result
    })
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
