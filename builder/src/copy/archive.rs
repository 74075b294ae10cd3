//! Safe extraction of tar archives (plain, gzip, bzip2, xz, zstd; detected by content)
//! for ADD and for a build context read from stdin.
//!
//! Nothing is ever written outside the destination: names are cleaned and a name that
//! climbs out with `..` is an error (an absolute name is placed inside, as Docker does);
//! symlinks already extracted are followed only *inside* the destination, as if it were
//! the root (Docker extracts ADD archives in a chroot); a hardlink's target must be inside
//! too. Device nodes and fifos are created with `mknod` as what they are. The total size
//! unpacked is capped ([`DEFAULT_ARCHIVE_LIMIT`], 64 GiB) against decompression bombs.
//! Symlinks are resolved against what is in the destination directory itself; links in
//! lower layers below the ADD destination are not consulted.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use super::{
    apply_metadata, create_new, make_dir, make_node, remove_any, set_times, CopyError, Layers,
};
use crate::context::pathclean;
use rbuild_store::Compression;

/// The default cap on the bytes one archive may unpack to: 64 GiB.
pub const DEFAULT_ARCHIVE_LIMIT: u64 = 64 << 30;

/// Options for [`extract_archive`].
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Owner of everything extracted; `None` keeps the archive's uid/gid.
    pub chown: Option<(u32, u32)>,
    /// The most bytes of file content the archive may unpack to.
    pub limit: u64,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            chown: None,
            limit: DEFAULT_ARCHIVE_LIMIT,
        }
    }
}

/// What an extraction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Entries written.
    pub entries: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// Reads up to `n` bytes from the start of `reader` (fewer only at its end).
fn read_head(reader: &mut dyn Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    reader.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// `reader` with its compression (detected from its first bytes) undone.
fn decompressed<'r>(mut reader: Box<dyn Read + 'r>) -> std::io::Result<Box<dyn Read + 'r>> {
    let head = read_head(&mut reader, 8)?;
    let kind = Compression::detect(&head);
    let whole: Box<dyn Read + 'r> = Box::new(Cursor::new(head).chain(reader));
    Ok(match kind {
        None => whole,
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Some(Compression::Bzip2) => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
        Some(Compression::Xz) => Box::new(xz2::read::XzDecoder::new_multi_decoder(whole)),
        Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::new(whole)?),
    })
}

/// Does this 512-byte block look like a tar header (valid checksum)?
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|&b| b == 0) {
        return false;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(sum)
}

/// Is the file at `path` a tar archive, plain or compressed? (What ADD unpacks.)
pub fn is_archive(path: &Path) -> Result<bool, CopyError> {
    let read_err = |source| CopyError::ArchiveRead {
        archive: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let Ok(mut reader) = decompressed(Box::new(file)) else {
        return Ok(false);
    };
    // A file that is not what its magic says is simply not an archive.
    let head = read_head(&mut reader, 512).unwrap_or_default();
    Ok(is_tar_header(&head))
}

/// Extracts the archive file at `path` into the directory `dest`.
pub(crate) fn extract_file(
    path: &Path,
    dest: &Path,
    options: &ExtractOptions,
) -> Result<ExtractStats, CopyError> {
    let file = std::fs::File::open(path).map_err(|source| CopyError::ArchiveRead {
        archive: path.to_path_buf(),
        source,
    })?;
    extract_archive(file, dest, options, path)
}

/// Extracts a tar stream (compression detected) into the existing directory `dest`.
/// `name` names the archive in errors.
pub fn extract_archive<R: Read>(
    reader: R,
    dest: &Path,
    options: &ExtractOptions,
    name: &Path,
) -> Result<ExtractStats, CopyError> {
    let read_err = |source| CopyError::ArchiveRead {
        archive: name.to_path_buf(),
        source,
    };
    let root = Layers {
        upper: dest,
        lowers: &[],
        deferred: None,
    };
    let mut archive = tar::Archive::new(decompressed(Box::new(reader)).map_err(read_err)?);
    let mut stats = ExtractStats::default();
    let mut dir_times = Vec::new();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path_bytes();
        let rel = inside_name(&String::from_utf8_lossy(&raw))?;
        if rel == "." {
            continue;
        }
        let header = entry.header().clone();
        let kind = header.entry_type();
        let owner = options.chown.unwrap_or((
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        ));
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = filetime::FileTime::from_unix_time(header.mtime().unwrap_or(0) as i64, 0);
        let parent = root.resolve(&pathclean::dir(&rel), true)?;
        root.ensure_dir(&parent, options.chown.unwrap_or((0, 0)))?;
        let base = rel.rsplit('/').next().unwrap_or(&rel);
        let real: PathBuf = match parent.as_str() {
            "." => dest.join(base),
            p => dest.join(p).join(base),
        };
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match std::fs::symlink_metadata(&real) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&real)?;
                        make_dir(&real)?;
                    }
                    Err(_) => make_dir(&real)?,
                }
                apply_metadata(&real, owner, Some(mode))?;
                dir_times.push((real, mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = header.size().unwrap_or(0);
                if stats.bytes.saturating_add(size) > options.limit {
                    return Err(CopyError::ArchiveTooLarge {
                        archive: name.to_path_buf(),
                        limit: options.limit,
                    });
                }
                remove_any(&real)?;
                let mut file = create_new(&real)?;
                let allowed = options.limit - stats.bytes;
                let written = std::io::copy(&mut (&mut entry).take(allowed + 1), &mut file)
                    .map_err(read_err)?;
                if written > allowed {
                    return Err(CopyError::ArchiveTooLarge {
                        archive: name.to_path_buf(),
                        limit: options.limit,
                    });
                }
                drop(file);
                stats.bytes += written;
                apply_metadata(&real, owner, Some(mode))?;
                set_times(&real, mtime)?;
            }
            T::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = std::ffi::OsStr::new(&*String::from_utf8_lossy(&target)).to_owned();
                remove_any(&real)?;
                std::os::unix::fs::symlink(&target, &real).map_err(|source| CopyError::Io {
                    op: "create symlink",
                    path: real.clone(),
                    source,
                })?;
                apply_metadata(&real, owner, None)?;
                set_times(&real, mtime)?;
            }
            T::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target_rel = inside_name(&String::from_utf8_lossy(&target))?;
                let target_parent = root.resolve(&pathclean::dir(&target_rel), true)?;
                let target_base = target_rel.rsplit('/').next().unwrap_or(&target_rel);
                let target_real = match target_parent.as_str() {
                    "." => dest.join(target_base),
                    p => dest.join(p).join(target_base),
                };
                if target_real == real {
                    continue;
                }
                remove_any(&real)?;
                std::fs::hard_link(&target_real, &real).map_err(|source| CopyError::Io {
                    op: "link",
                    path: real.clone(),
                    source,
                })?;
            }
            T::Char | T::Block | T::Fifo => {
                let type_bits = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                remove_any(&real)?;
                make_node(&real, type_bits | mode, libc::makedev(major, minor))?;
                apply_metadata(&real, owner, Some(mode))?;
                set_times(&real, mtime)?;
            }
            // PAX and GNU long-name records are consumed by the tar reader; anything
            // else (sockets, unknown types) is not extracted.
            _ => continue,
        }
        stats.entries += 1;
    }
    for (path, mtime) in dir_times.into_iter().rev() {
        set_times(&path, mtime)?;
    }
    Ok(stats)
}

/// Cleans an archive name into a path relative to the destination: a leading `/` is
/// dropped, `..` that climbs out of it is refused.
fn inside_name(raw: &str) -> Result<String, CopyError> {
    let cleaned = pathclean::clean(raw);
    let rel = cleaned.trim_start_matches('/');
    if rel == ".." || rel.starts_with("../") {
        return Err(CopyError::ArchiveEscape {
            entry: raw.to_string(),
        });
    }
    Ok(if rel.is_empty() {
        ".".to_string()
    } else {
        rel.to_string()
    })
}
