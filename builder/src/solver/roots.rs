//! Whether a build's RUN steps run over overlayfs or on copied roots: chroot always copies;
//! rootless copies where overlayfs refuses an upper dir on the store's filesystem (a
//! container's own overlay root), found by one probe per build.

use rbuild_runner::Isolation;
use rbuild_store::Store;

/// Why `isolation`'s RUN steps cannot use overlayfs over `store`, probed once: `None` when
/// they can (or when the mode never mounts overlayfs in a user namespace). A probe that
/// cannot even start (no scratch dir) says nothing: the build then fails on its own error.
pub fn overlay_refused(store: &Store, isolation: Isolation) -> Option<std::io::Error> {
    if isolation != Isolation::Rootless {
        return None;
    }
    let scratch = store.tmp_dir().ok()?;
    rbuild_runner::probe_overlay_upper(scratch.path(), true).err()
}
