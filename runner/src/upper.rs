//! Tidying the upper dir after a step, so it holds a plain layer diff and nothing of overlayfs's own.
//!
//! Even with `index=off,redirect_dir=off,metacopy=off,xino=off` overlayfs leaves two traces:
//! - bookkeeping xattrs: `trusted.overlay.origin` on copied-up entries, `impure` and `uuid`
//!   on directories. Only the opaque mark carries layer meaning (an opaque directory), so
//!   every other `trusted.overlay.*` (and `user.overlay.*`) is removed, and a trusted
//!   opaque mark gets its `user.` twin, which rootless overlays read;
//! - whiteouts that are hard links of one shared whiteout inode in the work dir (and of
//!   each other). Each becomes a fresh, unlinked char 0:0 node, so a differ never mistakes
//!   them for hard links.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};

use crate::Error;

/// The one overlayfs xattr that is part of a layer, in its two forms (`user.` where
/// overlayfs was mounted with `userxattr`, in a user namespace).
const OPAQUE: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Tidies every entry of `upper`, the directory itself included.
pub(crate) fn tidy(upper: &Path) -> Result<(), Error> {
    let mut pending = vec![upper.to_path_buf()];
    while let Some(path) = pending.pop() {
        let failed = |source: io::Error| Error::TidyUpper {
            path: path.clone(),
            source,
        };
        let meta = fs::symlink_metadata(&path).map_err(failed)?;
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            if meta.nlink() > 1 {
                renew_whiteout(&path, meta.mode()).map_err(failed)?;
            }
            continue;
        }
        strip_overlay_xattrs(&path).map_err(failed)?;
        if kind.is_dir() {
            for entry in fs::read_dir(&path).map_err(failed)? {
                pending.push(entry.map_err(failed)?.path());
            }
        }
    }
    Ok(())
}

fn strip_overlay_xattrs(path: &PathBuf) -> io::Result<()> {
    for name in xattr::list(path)? {
        let Some(text) = name.to_str() else {
            continue;
        };
        let overlay = text.starts_with("trusted.overlay.") || text.starts_with("user.overlay.");
        if overlay && !OPAQUE.contains(&text) {
            xattr::remove(path, &name)?;
        }
        // The store's snapshots carry both opaque marks (a rootless overlay reads only the
        // user one); where user xattrs are not supported the trusted mark stands alone.
        if text == OPAQUE[0] {
            let _ = xattr::set(path, OPAQUE[1], b"y");
        }
    }
    Ok(())
}

fn renew_whiteout(path: &Path, mode: u32) -> io::Result<()> {
    fs::remove_file(path)?;
    nix::sys::stat::mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(mode & 0o7777),
        0,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))
}
