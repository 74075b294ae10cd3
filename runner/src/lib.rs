//! rbuild's sandbox: runs one process in fresh namespaces over an overlayfs root,
//! with limits, and reports its exit status. Knows nothing about images.
//!
//! The runner side is [`Sandbox::run`]; the sandbox side is [`sandbox_init_main`], reached
//! by re-executing a binary whose `main` dispatches [`INIT_ARG`] to it before starting
//! any thread. The entry sequence (namespaces → mount → pivot → drop → exec) lives in
//! `init` (process choreography), `rootfs` (mounts and pivot) and `process` (drop and exec).
//!
//! ```no_run
//! use rbuild_runner::{Limits, Sandbox, SandboxSpec, Stream};
//!
//! # fn main() -> Result<(), rbuild_runner::Error> {
//! let mut spec = SandboxSpec::new(
//!     vec!["/store/snapshots/abc/fs".into()], // lowers, top-most first
//!     "/store/tmp/step1/upper".into(),        // gets the layer diff
//!     "/store/tmp/step1/work".into(),         // scratch, same filesystem as upper
//!     vec!["/bin/sh".into(), "-c".into(), "make install".into()],
//! );
//! spec.limits = Limits { memory: Some(512 << 20), ..Limits::default() };
//! let status = Sandbox::new().run(&spec, &mut |stream, line| match stream {
//!     Stream::Stdout => print!("{}", String::from_utf8_lossy(line)),
//!     Stream::Stderr => eprint!("{}", String::from_utf8_lossy(line)),
//! })?;
//! if !status.success() {
//!     eprintln!("RUN failed: {status}"); // "exit code: 2", "out of memory (limit 512MiB)"
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Isolation ([`Isolation`], picked by [`detect_isolation`]): namespaces over overlayfs
//! (the default, root with CAP_SYS_ADMIN), the same in a user namespace (rootless), over
//! overlayfs or, where [`probe_overlay_upper`] finds it refused, on a root a copying
//! snapshotter materialised ([`RootKind::Copied`]), or `chroot` into such a root (root
//! without CAP_SYS_ADMIN where a seccomp profile refuses `unshare`).
//!
//! Requirements: root, or a non-root user's command re-executed in a user namespace
//! ([`reexec_in_user_namespace`]), Linux 5.2 (`fsopen`; `lowerdir+`
//! from 6.8, with a `mount(2)` fallback before), 5.6 for `openat2` (symlinks in mount
//! targets are refused before), cgroup v1 or v2 for limits.
#![deny(missing_docs)]

mod cgroup;
mod chroot;
mod delegation;
mod error;
mod init;
mod isolation;
mod message;
mod mountpoints;
mod net;
mod process;
mod rootfs;
mod sandbox;
mod spec;
mod upper;
mod user;
mod userns;

pub use cgroup::trial_limits as trial_cgroup_limits;
pub use delegation::{delegate as delegate_cgroups, NoDelegation};
pub use error::Error;
pub use init::sandbox_init_main;
pub use isolation::{
    check as check_isolation, detect as detect_isolation, probe_overlay_upper, rootless_mapping,
    Detected, Isolation,
};
pub use process::DEFAULT_CAPABILITIES;
pub use sandbox::{Cancel, ExitStatus, Sandbox, Stream};
pub use spec::{
    default_hosts, host_resolv_conf, ExtraMount, Limits, Network, RootKind, SandboxSpec, Ulimit,
    User, DEFAULT_PATH, MAX_LOWERS, ULIMIT_NAMES,
};
pub use user::{home_dir, resolve_user};
pub use userns::{
    acts_for_non_root, id_mapping, in_rootless_namespace, reexec_in_user_namespace, IdMapping,
    IdRange, USERNS_ENV,
};

/// The hidden first argument that makes the `rbuild` binary act as the sandbox child.
pub const INIT_ARG: &str = "sandbox-init";
