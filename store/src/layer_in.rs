//! Layer tar in: safe extraction of a (plain, gzip or zstd) layer tar into a snapshot dir
//! in overlay form, verifying the diffID of the uncompressed stream.
//!
//! Safety policy: a member path with a `..` component is refused; a leading `/` is
//! dropped (the member lands inside the snapshot); a member whose parent path goes
//! through a symlink is refused (a tar made from a directory never needs that), and so
//! is a hardlink whose target goes through a symlink or does not exist in this layer.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::fsutil::remove_any;
use crate::layer_out::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::{Compression, DiffId, Digest, Error, Result};

/// What unpacking a layer produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// The digest of the uncompressed tar stream.
    pub diff_id: DiffId,
    /// Sum of regular file sizes.
    pub content_bytes: u64,
}

/// A reader that decompresses `raw` according to its magic bytes.
pub(crate) fn decompressing<'a, R: BufRead + 'a>(
    mut raw: R,
    what: &str,
) -> Result<Box<dyn Read + 'a>> {
    let magic = raw.fill_buf().map_err(|source| Error::LayerStream {
        layer: what.to_owned(),
        source,
    })?;
    Ok(match Compression::detect(magic) {
        Some(Compression::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Some(Compression::Zstd) => Box::new(
            zstd::stream::read::Decoder::with_buffer(raw).map_err(|source| Error::LayerStream {
                layer: what.to_owned(),
                source,
            })?,
        ),
        Some(other @ (Compression::Bzip2 | Compression::Xz)) => {
            return Err(Error::NotLayerCompression {
                format: other.name(),
            })
        }
        None => Box::new(raw),
    })
}

/// Unpacks a layer stream (any compression) into `dest` (an empty directory), returning the
/// diffID of the uncompressed tar; checks it against `expected` when given.
pub fn unpack_layer<R: Read>(
    raw: R,
    dest: &Path,
    expected: Option<&DiffId>,
    what: &str,
) -> Result<Unpacked> {
    let mut buffered = BufReader::with_capacity(1 << 20, raw);
    let (diff_id, content_bytes) = {
        let stream = decompressing(&mut buffered, what)?;
        let mut hashing = HashingReader {
            inner: stream,
            hasher: Sha256::new(),
        };
        let content_bytes = apply_tar(&mut hashing, dest, what)?;
        // Hash whatever follows the end-of-archive blocks.
        io::copy(&mut hashing, &mut io::sink()).map_err(|source| Error::LayerStream {
            layer: what.to_owned(),
            source,
        })?;
        (
            DiffId::from(Digest::from_hasher(hashing.hasher)),
            content_bytes,
        )
    };
    // Drain the raw stream so a verifying reader underneath checks its digest.
    io::copy(&mut buffered, &mut io::sink()).map_err(|source| Error::LayerStream {
        layer: what.to_owned(),
        source,
    })?;
    if let Some(expected) = expected {
        if expected != &diff_id {
            return Err(Error::DigestMismatch {
                what: format!("diffID of layer {what}"),
                expected: expected.to_string(),
                actual: diff_id.to_string(),
            });
        }
    }
    Ok(Unpacked {
        diff_id,
        content_bytes,
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Applies the members of an uncompressed tar stream to `dest`. Returns content bytes.
fn apply_tar<R: Read>(stream: R, dest: &Path, what: &str) -> Result<u64> {
    let mut archive = tar::Archive::new(stream);
    let mut dirs: Vec<(PathBuf, u64)> = Vec::new();
    // Directories of this layer known to be real directories reached without a symlink: a
    // member below one needs no lstat of every ancestor and no create_dir_all. Forgotten
    // whenever a member or whiteout replaces one of them.
    let mut real_dirs: HashSet<PathBuf> = HashSet::new();
    let mut content = 0u64;
    let entries = archive.entries().map_err(|source| Error::LayerStream {
        layer: what.to_owned(),
        source,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| Error::LayerStream {
            layer: what.to_owned(),
            source,
        })?;
        let raw_name = entry.path_bytes().into_owned();
        let member = member_for_messages(&raw_name);
        let refuse = |reason| Error::UnsafeMember {
            layer: what.to_owned(),
            member: member.clone(),
            reason,
        };
        let fail = |source| Error::LayerMember {
            layer: what.to_owned(),
            member: member.clone(),
            source,
        };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        let rel = clean_member_path(&raw_name).map_err(refuse)?;
        if rel.as_os_str().is_empty() {
            // The root itself (`./`): only its metadata could apply; skip it.
            continue;
        }
        let file_name = rel
            .file_name()
            .unwrap_or(OsStr::new(""))
            .as_bytes()
            .to_vec();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = dest.join(parent_rel);
        if !real_dirs.contains(parent_rel) {
            check_no_symlinks(dest, parent_rel).map_err(refuse)?;
            std::fs::create_dir_all(&parent).map_err(fail)?;
            real_dirs.extend(parent_rel.ancestors().map(Path::to_path_buf));
        }
        let target = dest.join(&rel);
        if kind != EntryType::Directory && real_dirs.contains(rel.as_path()) {
            // A directory is about to be replaced (or hidden by a whiteout below).
            real_dirs.clear();
        }
        let pax: Vec<(Vec<u8>, Vec<u8>)> = match entry.pax_extensions().map_err(fail)? {
            Some(exts) => exts
                .map(|e| e.map(|e| (e.key_bytes().to_vec(), e.value_bytes().to_vec())))
                .collect::<io::Result<_>>()
                .map_err(fail)?,
            None => Vec::new(),
        };
        let header = entry.header();
        let mode = header.mode().map_err(fail)? & 0o7777;
        let uid = pax_id(&pax, "uid", header.uid().map_err(fail)?);
        let gid = pax_id(&pax, "gid", header.gid().map_err(fail)?);
        let mtime = header.mtime().map_err(fail)?;

        if file_name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // A whiteout removes a sibling, which may be a known directory.
            real_dirs.clear();
        }
        if apply_whiteout(&parent, &file_name, mtime).map_err(|e| match e {
            Whiteout::Refused(reason) => refuse(reason),
            Whiteout::Io(source) => fail(source),
            Whiteout::Store(e) => e,
        })? {
            continue;
        }

        match kind {
            EntryType::Directory => {
                let is_dir = std::fs::symlink_metadata(&target)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                if !is_dir {
                    remove_any(&target)?;
                    std::fs::create_dir(&target).map_err(fail)?;
                }
                real_dirs.insert(rel.clone());
                dirs.push((target.clone(), mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_any(&target)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&target)
                    .map_err(fail)?;
                content += io::copy(&mut entry, &mut f).map_err(fail)?;
                f.flush().map_err(fail)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("symlink without target"))?;
                remove_any(&target)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target).map_err(fail)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("hardlink without target"))?;
                let link_rel = clean_member_path(&link).map_err(refuse)?;
                if link_rel.as_os_str().is_empty() {
                    return Err(refuse("hardlink to the layer root"));
                }
                check_no_symlinks(dest, link_rel.parent().unwrap_or(Path::new("")))
                    .map_err(refuse)?;
                let source = dest.join(&link_rel);
                let meta = std::fs::symlink_metadata(&source)
                    .map_err(|_| refuse("hardlink target is not in this layer"))?;
                if meta.is_dir() {
                    return Err(refuse("hardlink to a directory"));
                }
                if source != target {
                    remove_any(&target)?;
                    std::fs::hard_link(&source, &target).map_err(fail)?;
                }
                continue; // metadata belongs to the target inode
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                remove_any(&target)?;
                make_device(&target, header).map_err(fail)?;
            }
            _ => return Err(refuse("unsupported member type")),
        }

        apply_member_metadata(&target, kind, mode, (uid, gid), mtime, &pax).map_err(fail)?;
    }
    // Directory mtimes last: creating their children changed them.
    for (dir, mtime) in dirs.iter().rev() {
        let t = filetime::FileTime::from_unix_time(*mtime as i64, 0);
        filetime::set_symlink_file_times(dir, t, t).map_err(Error::io("set mtime", dir))?;
    }
    Ok(content)
}

/// Creates the device node or FIFO a member describes at `target`.
fn make_device(target: &Path, header: &tar::Header) -> io::Result<()> {
    let kind = header.entry_type();
    let (major, minor) = if kind == EntryType::Fifo {
        (0, 0)
    } else {
        (
            header.device_major()?.unwrap_or(0),
            header.device_minor()?.unwrap_or(0),
        )
    };
    let fmt = match kind {
        EntryType::Char => libc::S_IFCHR,
        EntryType::Block => libc::S_IFBLK,
        _ => libc::S_IFIFO,
    };
    mknod(target, fmt, major, minor)
}

/// Why a whiteout member could not be applied.
enum Whiteout {
    Refused(&'static str),
    Io(io::Error),
    Store(Error),
}

/// Applies `file_name` in `parent` when it is a whiteout: the opaque marker sets overlay's
/// opaque xattr on `parent`, `.wh.NAME` replaces NAME with a 0:0 character device (overlay
/// form). Returns whether it was one.
fn apply_whiteout(parent: &Path, file_name: &[u8], mtime: u64) -> Result<bool, Whiteout> {
    if file_name == OPAQUE_MARKER.as_bytes() {
        crate::layer_out::mark_opaque(parent).map_err(Whiteout::Io)?;
        return Ok(true);
    }
    let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else {
        return Ok(false);
    };
    if hidden.is_empty() || hidden == b"." || hidden == b".." {
        return Err(Whiteout::Refused("whiteout of nothing"));
    }
    let victim = parent.join(OsStr::from_bytes(hidden));
    remove_any(&victim).map_err(Whiteout::Store)?;
    crate::whiteout::make_whiteout(&victim).map_err(Whiteout::Io)?;
    let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
    filetime::set_symlink_file_times(&victim, t, t).map_err(Whiteout::Io)?;
    Ok(true)
}

/// Owner, mode (not for symlinks), xattrs from PAX records (never overlay's own) and mtime
/// (directories get theirs after their children) of a member just created at `target`.
fn apply_member_metadata(
    target: &Path,
    kind: EntryType,
    mode: u32,
    (uid, gid): (u32, u32),
    mtime: u64,
    pax: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<()> {
    std::os::unix::fs::lchown(target, Some(uid), Some(gid))?;
    if kind != EntryType::Symlink {
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))?;
    }
    for (key, value) in pax {
        let Some(name) = key.strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        if crate::layer_out::is_overlay_xattr(name) {
            continue; // only our own whiteout conversion may set overlay xattrs
        }
        match xattr::set(target, OsStr::from_bytes(name), value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    if kind != EntryType::Directory {
        let t = filetime::FileTime::from_unix_time(mtime as i64, 0);
        filetime::set_symlink_file_times(target, t, t)?;
    }
    Ok(())
}

/// The uid/gid of an entry, preferring a PAX record (ids too large for ustar).
fn pax_id(pax: &[(Vec<u8>, Vec<u8>)], key: &str, header_value: u64) -> u32 {
    let value = pax
        .iter()
        .rev()
        .find(|(k, _)| k == key.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(header_value);
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// The longest member path accepted (Linux `PATH_MAX`).
const MAX_MEMBER_PATH: usize = 4096;

/// A member name for error messages, cut at 256 bytes so a hostile name cannot flood them.
fn member_for_messages(raw: &[u8]) -> String {
    if raw.len() <= 256 {
        return String::from_utf8_lossy(raw).into_owned();
    }
    format!(
        "{}... ({} bytes)",
        String::from_utf8_lossy(&raw[..256]),
        raw.len()
    )
}

/// A member name as a relative path with no `.`/`..`: `..` anywhere is refused, a leading
/// `/` or `./` is dropped.
fn clean_member_path(raw: &[u8]) -> std::result::Result<PathBuf, &'static str> {
    if raw.len() > MAX_MEMBER_PATH {
        return Err("path longer than 4096 bytes");
    }
    if raw.contains(&0) {
        return Err("NUL in path");
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`"),
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return Err("path prefix"),
        }
    }
    Ok(out)
}

/// Refuses when any existing component of `rel` under `root` is a symlink (or not a dir).
fn check_no_symlinks(root: &Path, rel: &Path) -> std::result::Result<(), &'static str> {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err("path goes through a symlink"),
            Ok(_) => {}
            Err(_) => return Ok(()), // the rest does not exist yet: created as plain dirs
        }
    }
    Ok(())
}

fn mknod(path: &Path, fmt: libc::mode_t, major: u32, minor: u32) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call.
    let r = unsafe { libc::mknod(c.as_ptr(), fmt | 0o600, dev) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
