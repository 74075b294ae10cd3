//! A directory on an overlayfs mount of its own, as a container's overlay root filesystem
//! is, for a store that overlayfs then refuses as an upper dir in a user namespace;
//! unmounted on drop.

use std::path::{Path, PathBuf};

/// An overlayfs mounted at a directory; its lower, upper and work dirs sit beside it.
pub struct OverlayDir {
    mountpoint: PathBuf,
    layers: [PathBuf; 3],
}

impl OverlayDir {
    /// Mounts an overlay (an empty lower) at the directory `mountpoint` (made if missing,
    /// hidden while mounted); the layers go beside it, outside it, and are removed on drop.
    pub fn mount(mountpoint: &Path) -> OverlayDir {
        let parent = mountpoint.parent().expect("a mountpoint with a parent");
        let name = mountpoint.file_name().unwrap().to_string_lossy();
        let dir = |suffix: &str| {
            let path = parent.join(format!("{name}.{suffix}"));
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        let (lower, upper, work) = (dir("lower"), dir("upper"), dir("work"));
        std::fs::create_dir_all(mountpoint).unwrap();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        super::tool(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &options,
                &mountpoint.display().to_string(),
            ],
        );
        OverlayDir {
            mountpoint: mountpoint.to_path_buf(),
            layers: [lower, upper, work],
        }
    }
}

impl Drop for OverlayDir {
    fn drop(&mut self) {
        // SAFETY: umount2 of a path we mounted, with a NUL-terminated copy of it.
        let path = std::ffi::CString::new(self.mountpoint.display().to_string()).unwrap();
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        for layer in &self.layers {
            let _ = std::fs::remove_dir_all(layer);
        }
    }
}
