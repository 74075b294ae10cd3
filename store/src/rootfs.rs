//! An image's root filesystem as one plain directory: its overlay-form snapshots merged
//! bottom-up (whiteouts delete, opaque directories hide what is below), for exports.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil::remove_any;
use crate::layer_out::is_opaque_dir;
use crate::{Error, Image, Result, Store};

impl Store {
    /// Writes `image`'s root filesystem into `dest` (created if missing; what is already
    /// there is overwritten where the image has the same path). Modes, owners, times,
    /// symlinks, hard links within a layer, devices and xattrs are kept.
    pub fn write_rootfs(&self, image: &Image, dest: &Path) -> Result<()> {
        let manifest = image.parsed_manifest()?;
        let diff_ids = image.diff_ids()?;
        let lowers = self.snapshot_chain(&manifest.layers, &diff_ids)?;
        std::fs::create_dir_all(dest).map_err(Error::io("create directory", dest))?;
        merge_lowers(&lowers, dest)
    }
}

/// Merges overlay-form layer dirs (`lowers`, top-most first) into the plain directory
/// `dest`, bottom first. Regular files are reflinked where the filesystem can.
pub(crate) fn merge_lowers(lowers: &[PathBuf], dest: &Path) -> Result<()> {
    for layer in lowers.iter().rev() {
        let mut merge = Merge {
            links: HashMap::new(),
            dirs: Vec::new(),
        };
        merge.dir(layer, dest)?;
        // Directory times last, once nothing more is written below them.
        for (src, dst) in merge.dirs.iter().rev() {
            let meta = std::fs::symlink_metadata(src).map_err(Error::io("stat", src))?;
            set_times(dst, &meta).map_err(Error::io("set times of", dst))?;
        }
    }
    Ok(())
}

/// One layer being applied: hard links seen so far (by source inode) and the directories
/// whose times are set at the end.
struct Merge {
    links: HashMap<(u64, u64), PathBuf>,
    dirs: Vec<(PathBuf, PathBuf)>,
}

impl Merge {
    /// Applies the layer directory `src` onto `dst` (a directory that exists).
    fn dir(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(Error::io("read directory", src))?
            .collect::<io::Result<_>>()
            .map_err(Error::io("read directory", src))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let from = entry.path();
            let to = dst.join(entry.file_name());
            let meta = std::fs::symlink_metadata(&from).map_err(Error::io("stat", &from))?;
            if crate::whiteout::is_whiteout(&from, &meta) {
                remove_any(&to)?;
                continue;
            }
            let existing = std::fs::symlink_metadata(&to).ok();
            if meta.is_dir() {
                let opaque = is_opaque_dir(&from);
                match existing {
                    Some(e) if e.is_dir() && !opaque => {}
                    Some(_) => {
                        remove_any(&to)?;
                        std::fs::create_dir(&to).map_err(Error::io("create directory", &to))?;
                    }
                    None => std::fs::create_dir(&to).map_err(Error::io("create directory", &to))?,
                }
                copy_attributes(&from, &to, &meta)?;
                self.dir(&from, &to)?;
                self.dirs.push((from, to));
                continue;
            }
            if existing.is_some() {
                remove_any(&to)?;
            }
            if meta.nlink() > 1 && !meta.is_dir() {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    std::fs::hard_link(first, &to).map_err(Error::io("link", &to))?;
                    continue;
                }
                self.links.insert((meta.dev(), meta.ino()), to.clone());
            }
            copy_entry(&from, &to, &meta)?;
        }
        Ok(())
    }
}

/// Copies the non-directory `from` (whose metadata is `meta`) to `to`, which must not
/// exist: a symlink, a reflinked or copied file, or a device node, with owner, mode,
/// xattrs and times.
pub(crate) fn copy_entry(from: &Path, to: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(from).map_err(Error::io("read link", from))?;
        std::os::unix::fs::symlink(&target, to).map_err(Error::io("symlink", to))?;
    } else if ft.is_file() {
        crate::fsutil::clone_or_copy(from, to).map_err(Error::io("copy to", to))?;
    } else {
        mknod(to, meta.mode(), meta.rdev()).map_err(Error::io("mknod", to))?;
    }
    copy_attributes(from, to, meta)?;
    set_times(to, meta).map_err(Error::io("set times of", to))
}

/// Owner, mode and xattrs of `from` onto `to` (times are set by the caller).
pub(crate) fn copy_attributes(from: &Path, to: &Path, meta: &std::fs::Metadata) -> Result<()> {
    match std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid())) {
        Ok(()) => {}
        // Unprivileged: the files stay the caller's, as `tar -x` does for non-root.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => return Err(Error::io("chown", to)(e)),
    }
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(Error::io("chmod", to))?;
        if let Ok(names) = xattr::list(from) {
            for name in names {
                if crate::layer_out::is_overlay_xattr(name.as_bytes()) {
                    continue;
                }
                if let Ok(Some(value)) = xattr::get(from, &name) {
                    let _ = xattr::set(to, &name, &value);
                }
            }
        }
    }
    Ok(())
}

fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `path`'s access and modification times to `meta`'s, without following a symlink.
pub(crate) fn set_times(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime() as libc::time_t,
            tv_nsec: meta.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: meta.mtime() as libc::time_t,
            tv_nsec: meta.mtime_nsec() as _,
        },
    ];
    // SAFETY: `c` is NUL-terminated and `times` holds two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
