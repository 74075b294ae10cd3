//! Fuzzes the layer tar reader (`unpack_layer`: plain, gzip or zstd tars into an empty
//! directory, under the safety policy of `store::layer_in`); none may panic, and nothing
//! may be written beside the destination.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A scratch directory of this process (on tmpfs when there is one), holding `dest` and a
/// sibling `canary` directory that must stay empty.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("rbuild-fuzz-layer-in-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("canary")).expect("create the scratch directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let dest = dir.join("dest");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir(&dest).expect("create the destination");
    let _ = rbuild_store::unpack_layer(data, &dest, None, "fuzz");
    let canary = std::fs::read_dir(dir.join("canary"))
        .expect("read the canary")
        .count();
    assert_eq!(canary, 0, "the layer wrote beside its destination");
    // Root (as fuzz/run runs) removes read-only directories too.
    std::fs::remove_dir_all(&dest).expect("remove the destination");
});
