//! The overlay-form whiteout of snapshots and upper dirs, in its two forms: a 0:0
//! character device, or, where the filesystem refuses one (overlayfs refuses to create a
//! 0:0 device, so a store on a container's overlay root cannot hold it), an empty regular
//! file marked with overlayfs' own xattr whiteout (`user.overlay.whiteout`, its directory
//! `user.overlay.whiteouts`), which a `userxattr` overlay (Linux 6.8+) reads as one too.

use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The xattr that makes an empty regular file a whiteout.
const XATTR: &str = "user.overlay.whiteout";
/// The xattr that tells overlayfs a directory holds xattr whiteouts.
const DIR_XATTR: &str = "user.overlay.whiteouts";

/// Whether the entry at `path`, whose metadata is `meta`, is a whiteout in either form.
pub fn is_whiteout(path: &Path, meta: &Metadata) -> bool {
    let ft = meta.file_type();
    if ft.is_char_device() {
        return meta.rdev() == 0;
    }
    ft.is_file() && meta.len() == 0 && matches!(xattr::get(path, XATTR), Ok(Some(_)))
}

/// Makes a whiteout at `path` (which must not exist): a 0:0 character device, or where
/// the filesystem refuses it, an empty file with the whiteout xattr.
pub(crate) fn make_whiteout(path: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) } == 0 {
        return Ok(());
    }
    let refused = io::Error::last_os_error();
    if refused.raw_os_error() != Some(libc::EPERM) {
        return Err(refused);
    }
    std::fs::File::create_new(path)?;
    let marked = xattr::set(path, XATTR, b"y");
    if marked.is_err() {
        let _ = std::fs::remove_file(path);
        // Neither form: the mknod's refusal is the one that explains it.
        return Err(refused);
    }
    if let Some(parent) = path.parent() {
        let _ = xattr::set(parent, DIR_XATTR, b"y");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_form_is_a_whiteout_and_a_plain_empty_file_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let device = tmp.path().join("device");
        make_whiteout(&device).unwrap();
        let meta = std::fs::symlink_metadata(&device).unwrap();
        assert!(is_whiteout(&device, &meta));

        let marked = tmp.path().join("marked");
        std::fs::write(&marked, b"").unwrap();
        xattr::set(&marked, XATTR, b"y").unwrap();
        let meta = std::fs::symlink_metadata(&marked).unwrap();
        assert!(is_whiteout(&marked, &meta));

        let plain = tmp.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        let meta = std::fs::symlink_metadata(&plain).unwrap();
        assert!(!is_whiteout(&plain, &meta));
    }
}
