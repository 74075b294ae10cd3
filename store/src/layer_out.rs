//! Layer tar out: a deterministic tar of an overlay upper dir (sorted walk, PAX for long
//! names, xattrs and big ids, hardlinks by (dev, ino), overlay whiteouts and opaque dirs
//! turned into `.wh.` entries, uname/gname empty, mtimes clamped to `SOURCE_DATE_EPOCH`),
//! with [`ExternalFiles`] merged in: regular files of the layer whose content is still
//! elsewhere (a COPY's sources), so a layer can be written without first copying them.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::external_files::{ExternalFile, ExternalFiles};
use crate::{Error, Result};

/// The xattr overlayfs sets on an opaque directory.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same mark where `trusted.*` cannot be written (no CAP_SYS_ADMIN): overlayfs'
/// `userxattr` form.
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// Whether the directory at `path` (not followed if a symlink) carries overlay's opaque
/// mark: in overlay form, it hides everything below it in lower layers.
pub fn is_opaque_dir(path: &Path) -> bool {
    [OPAQUE_XATTR, USER_OPAQUE_XATTR]
        .iter()
        .any(|name| matches!(xattr::get(path, name), Ok(Some(v)) if v == b"y"))
}

/// Marks the directory at `path` opaque in both forms: the `trusted.` xattr a privileged
/// overlay mount reads (skipped where it is refused: no CAP_SYS_ADMIN, a user namespace)
/// and the `user.` one an overlay mounted with `userxattr` (rootless) reads, so a snapshot
/// made by either kind of build shows the same tree to the other.
pub(crate) fn mark_opaque(path: &Path) -> io::Result<()> {
    let trusted = match xattr::set(path, OPAQUE_XATTR, b"y") {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => false,
        Err(e) => return Err(e),
    };
    match xattr::set(path, USER_OPAQUE_XATTR, b"y") {
        // A filesystem without user xattrs still has the trusted mark.
        Err(_) if trusted => Ok(()),
        other => other,
    }
}

/// Whether an xattr is overlayfs' own (never part of a layer's content).
pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}
/// The prefix of a whiteout member name in a layer tar.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The member name marking an opaque directory in a layer tar.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How a layer tar is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TarOptions {
    /// Clamp every mtime to at most this (the `SOURCE_DATE_EPOCH` value), when set.
    pub source_date_epoch: Option<u64>,
}

impl TarOptions {
    /// Options from the process environment: `SOURCE_DATE_EPOCH` when it is set to an
    /// integer (an unset or unparsable value means no clamping).
    pub fn from_env() -> TarOptions {
        TarOptions {
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// What writing a layer tar produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TarStats {
    /// Members written (not counting PAX headers).
    pub entries: u64,
    /// Sum of regular file contents.
    pub content_bytes: u64,
}

const BLOCK: usize = 512;
const USTAR_MAX_ID: u64 = 0o7777777;
const USTAR_MAX_SIZE: u64 = 0o77777777777;

/// Writes the layer tar of `dir` (an overlay upper dir) to `out`. The same tree always
/// gives the same bytes.
pub fn write_layer_tar<W: Write>(dir: &Path, out: W, options: &TarOptions) -> Result<TarStats> {
    write_layer_tar_with(dir, &ExternalFiles::new(), out, options)
}

/// [`write_layer_tar`] of `dir` with `external` files added: the bytes are those of the tar
/// of a directory holding the external files as real files with their metadata.
pub fn write_layer_tar_with<W: Write>(
    dir: &Path,
    external: &ExternalFiles,
    out: W,
    options: &TarOptions,
) -> Result<TarStats> {
    let mut w = TarWriter {
        out,
        stats: TarStats::default(),
        options: options.clone(),
    };
    // External files are merged into each directory's sorted listing.
    let mut emitted = 0usize;
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    // Depth first, each directory's entries in byte order of their names (the order of
    // walkdir's `sort_by_file_name`); an explicit stack, so deep trees cannot overflow.
    // Each open directory: its layer-relative path and the entries still to write.
    let mut stack: Vec<(PathBuf, std::vec::IntoIter<(OsString, Child)>)> = vec![(
        PathBuf::new(),
        listing(dir, Path::new(""), external)?.into_iter(),
    )];
    while let Some((parent, children)) = stack.last_mut() {
        let Some((name, child)) = children.next() else {
            stack.pop();
            continue;
        };
        let rel = parent.join(&name);
        match child {
            Child::External(file) => {
                emitted += 1;
                w.external(&rel, &file, &mut links)?;
            }
            Child::Real => {
                let path = dir.join(&rel);
                let meta = std::fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
                w.entry(&path, &rel, &meta, &mut links)?;
                if meta.is_dir() {
                    let children = listing(&path, &rel, external)?.into_iter();
                    stack.push((rel, children));
                }
            }
        }
    }
    if emitted != external.len() {
        return Err(Error::Unrepresentable {
            path: dir.to_path_buf(),
            reason: "an external file's parent is not a directory of the layer",
        });
    }
    w.out
        .write_all(&[0u8; BLOCK * 2])
        .map_err(Error::io("write layer tar", dir))?;
    w.out.flush().map_err(Error::io("write layer tar", dir))?;
    Ok(w.stats)
}

/// One entry of a directory listing: on disk, or an external file.
enum Child {
    Real,
    External(ExternalFile),
}

/// The entries of `path` (layer-relative `rel`) and the external files in it, sorted by
/// name. A name both on disk and external is an error: the writer of the layer replaces.
fn listing(path: &Path, rel: &Path, external: &ExternalFiles) -> Result<Vec<(OsString, Child)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).map_err(Error::io("read directory", path))? {
        let entry = entry.map_err(Error::io("read directory", path))?;
        out.push((entry.file_name(), Child::Real));
    }
    for (name, file) in external.children(rel) {
        out.push((name.to_os_string(), Child::External(file)));
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if let Some(pair) = out.windows(2).find(|p| p[0].0 == p[1].0) {
        return Err(Error::Unrepresentable {
            path: path.join(&pair[0].0),
            reason: "an external file shadows a file of the layer",
        });
    }
    Ok(out)
}

struct TarWriter<W> {
    out: W,
    stats: TarStats,
    options: TarOptions,
}

impl<W: Write> TarWriter<W> {
    fn entry(
        &mut self,
        path: &Path,
        rel: &Path,
        meta: &std::fs::Metadata,
        links: &mut HashMap<(u64, u64), Vec<u8>>,
    ) -> Result<()> {
        let ft = meta.file_type();
        let name = rel.as_os_str().as_bytes().to_vec();
        let mode = meta.mode() & 0o7777;
        let mtime = self.clamp(meta.mtime());

        if crate::whiteout::is_whiteout(path, meta) {
            // An overlay whiteout (either form): `.wh.<name>` in the same directory; its own mode and owner
            // mean nothing, so they are normalized.
            let wh = sibling_name(rel, WHITEOUT_PREFIX.as_bytes());
            let h = Member::new(wh, EntryType::Regular, 0o644, 0, 0, mtime);
            return self.write_member(path, h, None);
        }

        let xattrs = read_xattrs(path)?;
        let mut h = Member::new(
            name.clone(),
            EntryType::Regular,
            mode,
            meta.uid().into(),
            meta.gid().into(),
            mtime,
        );
        h.xattrs = xattrs
            .iter()
            .filter(|(k, _)| !is_overlay_xattr(k.as_bytes()))
            .cloned()
            .collect();

        if ft.is_dir() {
            h.name.push(b'/');
            h.kind = EntryType::Directory;
            self.write_member(path, h, None)?;
            if xattrs
                .iter()
                .any(|(k, v)| (k == OPAQUE_XATTR || k == USER_OPAQUE_XATTR) && v == b"y")
            {
                let mut marker = name;
                marker.push(b'/');
                marker.extend_from_slice(OPAQUE_MARKER.as_bytes());
                let m = Member::new(marker, EntryType::Regular, 0o644, 0, 0, mtime);
                self.write_member(path, m, None)?;
            }
            return Ok(());
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(Error::io("read link", path))?;
            h.kind = EntryType::Symlink;
            h.link = target.as_os_str().as_bytes().to_vec();
            return self.write_member(path, h, None);
        }
        if meta.nlink() > 1 && !ft.is_dir() {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                h.kind = EntryType::Link;
                h.link = first.clone();
                return self.write_member(path, h, None);
            }
            links.insert(key, name);
        }
        if ft.is_file() {
            h.size = meta.len();
            let file = File::open(path).map_err(Error::io("open", path))?;
            return self.write_member(path, h, Some(file));
        }
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        if ft.is_char_device() || ft.is_block_device() {
            h.kind = if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            };
            h.device = (major, minor);
            return self.write_member(path, h, None);
        }
        if ft.is_fifo() {
            h.kind = EntryType::Fifo;
            return self.write_member(path, h, None);
        }
        // Sockets have no tar form; like docker, leave them out.
        Ok(())
    }

    /// Writes an external file as a regular file member.
    fn external(
        &mut self,
        rel: &Path,
        file: &ExternalFile,
        links: &mut HashMap<(u64, u64), Vec<u8>>,
    ) -> Result<()> {
        let name = rel.as_os_str().as_bytes().to_vec();
        let mut h = Member::new(
            name.clone(),
            EntryType::Regular,
            file.mode & 0o7777,
            file.uid.into(),
            file.gid.into(),
            self.clamp(file.mtime),
        );
        let source = &file.source;
        if let Some(key) = file.link {
            if let Some(first) = links.get(&key) {
                h.kind = EntryType::Link;
                h.link = first.clone();
                return self.write_member(source, h, None);
            }
            links.insert(key, name);
        }
        h.size = file.size;
        let content = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(source)
            .map_err(Error::io("open", source))?;
        let now = content.metadata().map_err(Error::io("stat", source))?;
        if !now.is_file() || now.len() != file.size {
            return Err(Error::Unrepresentable {
                path: source.clone(),
                reason: "source file changed while the layer was written",
            });
        }
        self.write_member(source, h, Some(content))
    }

    fn clamp(&self, mtime: i64) -> u64 {
        let t = u64::try_from(mtime).unwrap_or(0);
        match self.options.source_date_epoch {
            Some(epoch) => t.min(epoch),
            None => t,
        }
    }

    fn write_member(&mut self, path: &Path, m: Member, file: Option<File>) -> Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut header = Header::new_ustar();
        header.set_entry_type(m.kind);
        header.set_mode(m.mode);
        header.set_mtime(m.mtime);
        if m.uid > USTAR_MAX_ID {
            pax.push(("uid".into(), m.uid.to_string().into_bytes()));
            header.set_uid(0);
        } else {
            header.set_uid(m.uid);
        }
        if m.gid > USTAR_MAX_ID {
            pax.push(("gid".into(), m.gid.to_string().into_bytes()));
            header.set_gid(0);
        } else {
            header.set_gid(m.gid);
        }
        if m.size > USTAR_MAX_SIZE {
            pax.push(("size".into(), m.size.to_string().into_bytes()));
        }
        header.set_size(m.size);
        let ustar = header.as_ustar_mut().ok_or(Error::Unrepresentable {
            path: path.to_path_buf(),
            reason: "internal: ustar header expected",
        })?;
        if m.name.len() <= ustar.name.len() {
            ustar.name[..m.name.len()].copy_from_slice(&m.name);
        } else {
            pax.push(("path".into(), m.name.clone()));
            let n = ustar.name.len();
            ustar.name.copy_from_slice(&m.name[..n]);
        }
        if m.link.len() <= ustar.linkname.len() {
            ustar.linkname[..m.link.len()].copy_from_slice(&m.link);
        } else {
            pax.push(("linkpath".into(), m.link.clone()));
            let n = ustar.linkname.len();
            ustar.linkname.copy_from_slice(&m.link[..n]);
        }
        let (major, minor) = m.device;
        if major > 0o7777777 || minor > 0o7777777 {
            return Err(Error::Unrepresentable {
                path: path.to_path_buf(),
                reason: "device number too large",
            });
        }
        header
            .set_device_major(major)
            .map_err(Error::io("encode header", path))?;
        header
            .set_device_minor(minor)
            .map_err(Error::io("encode header", path))?;
        for (k, v) in &m.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        header.set_cksum();

        if !pax.is_empty() {
            self.write_pax(path, &pax)?;
        }
        self.out
            .write_all(header.as_bytes())
            .map_err(Error::io("write layer tar", path))?;
        if let Some(file) = file {
            let copied =
                io::copy(&mut file.take(m.size), &mut self.out).map_err(Error::io("read", path))?;
            if copied != m.size {
                return Err(Error::Unrepresentable {
                    path: path.to_path_buf(),
                    reason: "file shrank while being read",
                });
            }
            self.pad(path, m.size)?;
            self.stats.content_bytes += m.size;
        }
        self.stats.entries += 1;
        Ok(())
    }

    fn write_pax(&mut self, path: &Path, records: &[(String, Vec<u8>)]) -> Result<()> {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3; // ' ', '=', '\n'
            let mut len = base + 1;
            while len != base + len.to_string().len() {
                len = base + len.to_string().len();
            }
            body.extend_from_slice(len.to_string().as_bytes());
            body.push(b' ');
            body.extend_from_slice(k.as_bytes());
            body.push(b'=');
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(body.len() as u64);
        let pax_name = b"././@PaxHeader";
        if let Some(ustar) = header.as_ustar_mut() {
            ustar.name[..pax_name.len()].copy_from_slice(pax_name);
        }
        header.set_cksum();
        self.out
            .write_all(header.as_bytes())
            .map_err(Error::io("write layer tar", path))?;
        self.out
            .write_all(&body)
            .map_err(Error::io("write layer tar", path))?;
        self.pad(path, body.len() as u64)
    }

    fn pad(&mut self, path: &Path, size: u64) -> Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out
                .write_all(&[0u8; BLOCK][..BLOCK - rem])
                .map_err(Error::io("write layer tar", path))?;
        }
        Ok(())
    }
}

struct Member {
    name: Vec<u8>,
    link: Vec<u8>,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    device: (u32, u32),
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Member {
    fn new(name: Vec<u8>, kind: EntryType, mode: u32, uid: u64, gid: u64, mtime: u64) -> Member {
        Member {
            name,
            link: Vec::new(),
            kind,
            mode,
            uid,
            gid,
            mtime,
            size: 0,
            device: (0, 0),
            xattrs: Vec::new(),
        }
    }
}

/// `rel` with `prefix` prepended to its file name (`a/b` -> `a/.wh.b`).
fn sibling_name(rel: &Path, prefix: &[u8]) -> Vec<u8> {
    let file = rel.file_name().unwrap_or(OsStr::new("")).as_bytes();
    let mut out = Vec::new();
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        out.extend_from_slice(parent.as_os_str().as_bytes());
        out.push(b'/');
    }
    out.extend_from_slice(prefix);
    out.extend_from_slice(file);
    out
}

/// All xattrs of `path` (not following symlinks), sorted by name. Names that are not UTF-8
/// cannot be written as PAX records and are refused.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list xattrs", path)(e)),
    };
    let mut out = Vec::new();
    for name in names {
        let Some(key) = name.to_str() else {
            return Err(Error::Unrepresentable {
                path: path.to_path_buf(),
                reason: "xattr name is not UTF-8",
            });
        };
        if let Some(value) = xattr::get(path, &name).map_err(Error::io("read xattr", path))? {
            out.push((key.to_owned(), value));
        }
    }
    out.sort();
    Ok(out)
}
