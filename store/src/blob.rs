//! Content-addressed blobs in `blobs/sha256/<hex>`: verified streaming ingest through the
//! scratch dir, verified reads.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::fsutil::{remove_any, sync_dir, tempfile_in};
use crate::{Digest, Error, Result};

/// The blob half of the store (an OCI layout's `blobs/sha256`).
#[derive(Clone, Debug)]
pub struct BlobStore {
    dir: PathBuf,
    scratch: Arc<PathBuf>,
}

impl BlobStore {
    pub(crate) fn new(dir: PathBuf, scratch: Arc<PathBuf>) -> BlobStore {
        BlobStore { dir, scratch }
    }

    /// Whether the blob is present.
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// The blob's size, or None when absent.
    pub fn size(&self, d: &Digest) -> Result<Option<u64>> {
        let path = self.path(d);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path)(e)),
        }
    }

    /// Where the blob lives (it may not exist). Streaming readers should verify the digest
    /// of what they read (see [`BlobStore::open_verified`]).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.hex())
    }

    /// The whole blob, verified against its digest (for manifests and configs).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let path = self.path(d);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound {
                    digest: d.to_string(),
                })
            }
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        let actual = Digest::of(&bytes);
        if &actual != d {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", path.display()),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// A reader over the blob that fails with `InvalidData` at the end if the content does not
    /// hash to `d` (a truncated or corrupted blob never reads as good to the end).
    pub fn open_verified(&self, d: &Digest) -> Result<VerifiedReader> {
        let path = self.path(d);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound {
                    digest: d.to_string(),
                })
            }
            Err(e) => return Err(Error::io("open", path)(e)),
        };
        Ok(VerifiedReader {
            inner: file,
            hasher: Sha256::new(),
            expected: d.clone(),
            done: false,
        })
    }

    /// Stores a small blob, returning its digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if self.contains(&d) {
            return Ok(d);
        }
        let mut w = self.writer()?;
        w.write_all(bytes)
            .map_err(Error::io("write", w.path.clone()))?;
        w.commit(Some(&d))
    }

    /// Streams `reader` into a blob, verified against `expected` when given.
    pub fn ingest<R: Read>(&self, mut reader: R, expected: Option<&Digest>) -> Result<Digest> {
        let mut w = self.writer()?;
        io::copy(&mut reader, &mut w).map_err(Error::io("ingest into", w.path.clone()))?;
        w.commit(expected)
    }

    /// A streaming writer whose content becomes a blob on [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter> {
        let (path, file) = tempfile_in(&self.scratch)?;
        Ok(BlobWriter {
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            path,
            dir: self.dir.clone(),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Every blob digest present (names that are not digests are skipped).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(Error::io("read directory", &self.dir))? {
            let entry = entry.map_err(Error::io("read directory", &self.dir))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-hashes a blob: `Ok(None)` when good, `Ok(Some(actual))` when the content differs.
    pub fn verify(&self, d: &Digest) -> Result<Option<Digest>> {
        let path = self.path(d);
        let mut f = File::open(&path).map_err(Error::io("open", &path))?;
        let mut hasher = Sha256::new();
        io::copy(&mut f, &mut HashWriter(&mut hasher)).map_err(Error::io("read", &path))?;
        let actual = Digest::from_hasher(hasher);
        Ok((&actual != d).then_some(actual))
    }

    /// Deletes a blob (gc only).
    pub(crate) fn remove(&self, d: &Digest) -> Result<()> {
        remove_any(&self.path(d))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blob being ingested: hashes while writing; nothing is stored until `commit`.
/// Dropping it uncommitted removes the temp file.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<io::BufWriter<File>>,
    path: PathBuf,
    dir: PathBuf,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest of what has been written so far.
    pub fn digest_so_far(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// Verifies the content against `expected` (when given), fsyncs, renames it into
    /// `blobs/sha256/<hex>` and fsyncs the directory. On a mismatch nothing is stored.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<Digest> {
        let actual = Digest::from_hasher(self.hasher.clone());
        if let Some(expected) = expected {
            if expected != &actual {
                return Err(Error::DigestMismatch {
                    what: "ingested blob".to_owned(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        // `file` is only None after commit or drop, both of which consume the writer.
        let buf = self
            .file
            .take()
            .ok_or_else(|| Error::io("write", &self.path)(io::Error::other("writer closed")))?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io("write", &self.path)(e.into_error()))?;
        let dest = self.dir.join(actual.hex());
        if dest.is_file() {
            // Someone stored the same content first; ours is a duplicate.
            drop(file);
            let _ = std::fs::remove_file(&self.path);
            return Ok(actual);
        }
        file.sync_all().map_err(Error::io("fsync", &self.path))?;
        drop(file);
        std::fs::rename(&self.path, &dest).map_err(Error::io("rename into place", &dest))?;
        sync_dir(&self.dir)?;
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A blob reader that checks the digest when it reaches the end.
#[derive(Debug)]
pub struct VerifiedReader {
    inner: File,
    hasher: Sha256,
    expected: Digest,
    done: bool,
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let actual = Digest::from_hasher(self.hasher.clone());
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("blob {} hashes to {actual}", self.expected),
                ));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
